#!/usr/bin/env bash
# A fan-out, side by side in one run (issue 23): POSTS blog posts all carry
# one tag; `UPDATE tags SET name = ...` on that one row rebuilds every post.
#   flusso-pg: a running `follow` (backfill done, restarted so its peak RSS
#              is the fan-out's), timed from the commit until its "fan-out
#              written" log line (every document handed to the output; then
#              checked on flusso_documents_total, not timed; the slot's confirmation
#              comes with the next status update, up to 1 s later, and is
#              checked, not timed); time to first line; peak RSS (VmHWM of
#              /proc/<pid>/status) before, after the rename and after a
#              second rename (memory given back or not);
#   peers:     one COPY of the reference query over the same posts, right
#              after, on the same server; then as many COPYs at once as
#              follow builds chunks at once (capture.build_workers: WORKERS
#              or the CPUs), each over every width-th post.
# Usage: bench/fanout.sh [POSTS...=100000] (RUNS=1 repeats each size;
# BEFORE=<git rev> also measures that revision's flusso-pg, right after each
# run, on the same data; WORKERS="1 2" measures this build with each
# capture.build_workers, one after the other in the same run)
# Prints, per size, docs/s of both, the ratio, first line and the RSS figures.
# Plots (bench/lib.sh, PLOT_DIR=docs/img): fanout-runs.csv, every run's
# figures; fanout.csv/.png, docs/s of flusso-pg, one COPY and the same-width
# COPYs by size (median of the runs); fanout-first-line.csv/.png; and
# fanout-rss.csv/.png, follow's VmRSS every ~100 ms from the commit until it
# has written every document (run 1 of each size, the default build_workers).
# PLOT_ONLY=1 draws the plots again from those CSVs, measuring nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SIZES=("${@:-100000}")
RUNS=${RUNS:-1}
# plots: the medians of the runs by size (this build, default build_workers
# unless WORKERS names others: then each label is a group of its own), from
# the CSVs; PLOT_ONLY=1 draws them again from PLOT_DIR's CSVs without measuring.
plots() {
  local runs_csv rss_csv bars first width group
  runs_csv=$(plot_csv fanout-runs) rss_csv=$(plot_csv fanout-rss)
  bars=$(plot_csv fanout) first=$(plot_csv fanout-first-line)
  width=$(awk -F, 'NR == 2 {print $6}' "$runs_csv")
  echo "documents,flusso-pg,one COPY,$width COPYs at once" >"$bars"
  echo "documents,first line (s)" >"$first"
  # group: the size, and the label when it is not the default (WORKERS); BEFORE's rows are left out.
  groups() { awk -F, -v before="flusso-pg ${BEFORE:-}" 'NR > 1 && (before == "flusso-pg " || $3 != before) {
    g = ($3 == "flusso-pg" ? $1 : $1 " " substr($3, 11)); print g "," $0 }' "$runs_csv"; }
  groups | cut -d, -f1 | awk '!seen[$0]++' |
    while read -r group; do
      pick() { groups | awk -F, -v g="$group" -v c="$(($1 + 1))" '$1 == g {print $c}' | median; }
      echo "$group,$(pick 4),$(pick 5),$(pick 7)" >>"$bars"
      echo "$group,$(pick 8)" >>"$first"
    done
  plot_bars "$bars" "$PLOT_DIR/fanout.png" "fan-out: one renamed tag on every post, documents/s (median of $(awk -F, 'NR > 1 {print $2}' "$runs_csv" | sort -u | wc -l) run(s), $(awk -F, 'NR == 2 {print $NF}' "$runs_csv"))" "documents per second"
  PLOT_FMT=%.2f plot_bars "$first" "$PLOT_DIR/fanout-first-line.png" "fan-out: first line after the commit (median of $(awk -F, 'NR > 1 {print $2}' "$runs_csv" | sort -u | wc -l) run(s))" "seconds"
  if plot_need; then
    gnuplot <<GP || echo "plot: gnuplot failed on fanout-rss.png" >&2
set terminal png size 900,540 noenhanced
set output "$PLOT_DIR/fanout-rss.png"
set datafile separator ","
set title "fan-out: RSS of follow from the commit until every document is written ($(awk -F, 'NR == 2 {print $NF}' "$runs_csv"))"
set xlabel "seconds after the commit (log scale)"
set ylabel "VmRSS (MiB)"
set yrange [0:72]
set grid
set key bottom right
set logscale x
set xrange [0.05:*]
plot for [n in "$(awk -F, 'NR > 1 {print $1}' "$rss_csv" | uniq | tr '\n' ' ')"] "$rss_csv" using (\$1 == n + 0 ? \$3 : 1/0):4 every ::1 with lines lw 2 title n . " documents", \
     64 with lines dt 2 lc rgb "gray40" title "64 MiB (the goal at 1M)"
GP
    echo "plot: ${PLOT_DIR#"$BENCH_ROOT"/}/fanout-rss.png" >&2
  fi
}
if [ -n "${PLOT_ONLY:-}" ]; then plots; exit 0; fi
bench_need
work=$(mktemp -d /tmp/flusso-bench-fanout.XXXXXX)
chmod 755 "$work"
trap 'bench_cleanup "$work"' EXIT
pg_start "$work/pg"
FLUSSO="$work/flusso-pg"
build_flusso "$FLUSSO"
bins=(this)
if [ -n "${BEFORE:-}" ]; then
  mkdir -p "$work/src"
  git -C "$BENCH_ROOT" archive "$BEFORE" | tar -x -C "$work/src"
  (cd "$work/src" && go build -o "$work/flusso-before" ./cmd/flusso-pg)
  bins+=(before)
fi
failed=0

hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ready() { # ADDR TIMEOUT_S
  local end=$(($(date +%s) + $2))
  until curl -fs "http://$1/readyz" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.1
  done
}
# written ADDR: upserts written by the running follow (it did no backfill).
written() { curl -fs "http://$1/metrics" | awk '/^flusso_documents_total\{index="posts",op="upsert"\}/ {print $2}'; }
wait_written() { # ADDR N TIMEOUT_S
  local end=$(($(date +%s) + $3))
  until awk -v w="$(written "$1")" -v n="$2" 'BEGIN {exit !(w + 0 >= n)}'; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.05
  done
}
# logged LOG N TIMEOUT_S: the log holds N "fan-out written" lines.
logged() {
  local end=$(($(date +%s) + $3))
  until [ "$(grep -c 'fan-out written' "$1")" -ge "$2" ]; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.05
  done
}
# log_ns LOG N: the time of the Nth "fan-out written" line, in ns (ms precision).
log_ns() { date -d "$(grep 'fan-out written' "$1" | sed -n "$2p" | cut -f1)" +%s%N; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ref=$(sed -e 's/--.*$//' "$BENCH_ROOT/workloads/blog/reference.sql" | tr '\n' ' ')
runs_csv=$(plot_csv fanout-runs)
rss_csv=$(plot_csv fanout-rss)
echo "documents,run,label,flusso_docs_s,one_copy_docs_s,parallel_copies,parallel_copy_docs_s,first_line_s,idle_peak_rss_mib,peak_rss_mib,second_peak_rss_mib,date" >"$runs_csv"
echo "documents,run,seconds,rss_mib" >"$rss_csv"

for posts in "${SIZES[@]}"; do
  db=fan$posts
  blog_load "$db" "$posts" "$posts" 1000
  psql -q -d "$db" -c "INSERT INTO tags VALUES (1000, 'everywhere'); INSERT INTO post_tags SELECT id, 1000 FROM posts; ANALYZE post_tags"
  sed -e "s#postgres://postgres@127.0.0.1:5432/blog?sslmode=disable#$(dsn "$db")#" "$BENCH_ROOT/workloads/blog/flusso.yaml" >"$work/$db.yaml"
  printf 'state: {dir: %s}\ncapture: {status_interval: 1s}\n' "$work/state-$db" >>"$work/$db.yaml"
  # The backfill, once; then every run on a freshly started follow.
  addr=127.0.0.1:$(port)
  "$FLUSSO" follow --config "$work/$db.yaml" --log-level warn --listen "$addr" --output /dev/null >/dev/null &
  pid=$!
  ready "$addr" 1800 || { echo "fanout: the backfill of $posts posts did not finish"; failed=1; }
  stop_proc $pid
  for run in $(seq "$RUNS"); do
  for which in "${bins[@]}"; do
  for w in ${WORKERS:-default}; do
    first_w=${WORKERS:-default}
    [ "$which" = before ] && [ "$w" != "${first_w%% *}" ] && [ "$w" != default ] && continue
    bin=$FLUSSO label=flusso-pg conf=$work/$db.yaml
    [ "$which" = before ] && bin=$work/flusso-before label="flusso-pg $BEFORE"
    if [ "$w" != default ] && [ "$which" = this ]; then
      label="flusso-pg build_workers $w" conf=$work/$db-w$w.yaml
      sed -e "s/^capture: {status_interval: 1s}\$/capture: {status_interval: 1s, build_workers: $w}/" "$work/$db.yaml" >"$conf"
    fi
    addr=127.0.0.1:$(port)
    out=$work/$db-$run.out
    : >"$out"
    "$bin" follow --config "$conf" --listen "$addr" >>"$out" 2>"$work/$db-$run.log" &
    pid=$!
    ready "$addr" 120 || { echo "fanout: follow did not become ready"; failed=1; }
    sleep 1
    idle=$(hwm_kb $pid)
    base=$(written "$addr")
    t0=$(now_ns)
    # VmRSS every ~100 ms from the commit until every document is written.
    rss_sample $pid "$t0" "$work/rss" & sampler=$!
    psql -q -d "$db" -c "UPDATE tags SET name = 'renamed $run $which $w' WHERE id = 1000"
    end=$(lsn_now "$db")
    until [ -s "$out" ]; do sleep 0.01; done
    t1=$(now_ns)
    # The end: the "fan-out written" log line's time (its lines are handed
    # to the output then), not a poll of /metrics, which would take the
    # CPU of follow and of curl from the builds being timed.
    logged "$work/$db-$run.log" 1 1800 || { echo "fanout: follow did not log the fan-out written"; failed=1; }
    t2=$(log_ns "$work/$db-$run.log" 1)
    wait_written "$addr" $((base + posts)) 60 || { echo "fanout: follow did not write the $posts documents"; failed=1; }
    rss_stop $sampler "$work/rss"
    if [ "$label" = flusso-pg ] && [ "$run" = 1 ]; then
      sed -e "s/^/$posts,$run,/" "$work/rss" >>"$rss_csv"
    fi
    rm -f "$work/rss"
    wait_slot "$db" flusso_blog "$end" 60 || { echo "fanout: follow did not confirm the rename"; failed=1; }
    lines=$(wc -l <"$out")
    after=$(hwm_kb $pid)
    held=$(rss_kb $pid)
    psql -q -d "$db" -c "UPDATE tags SET name = 'renamed again $run $which $w' WHERE id = 1000"
    wait_written "$addr" $((base + 2 * posts)) 1800 || { echo "fanout: follow did not write the second rename"; failed=1; }
    wait_slot "$db" flusso_blog "$(lsn_now "$db")" 60 || { echo "fanout: follow did not confirm the second rename"; failed=1; }
    second=$(hwm_kb $pid)
    stop_proc $pid
    flusso=$(awk -v n="$lines" -v d=$((t2 - t0)) 'BEGIN {print n / (d / 1e9)}')
    c0=$(now_ns)
    copied=$(psql -q -d "$db" -c "COPY ($ref WHERE p.id IN (SELECT post_id FROM post_tags WHERE tag_id = 1000)) TO STDOUT" | wc -l)
    c1=$(now_ns)
    peer=$(awk -v n="$copied" -v d=$((c1 - c0)) 'BEGIN {print n / (d / 1e9)}')
    # The same-width peer: as many COPYs at once as follow builds chunks at
    # once (capture.build_workers, default the CPUs), each over every
    # width-th post.
    width=$([ "$w" != default ] && echo "$w" || nproc)
    pids=()
    p0=$(now_ns)
    for i in $(seq 0 $((width - 1))); do
      psql -q -d "$db" -c "COPY ($ref WHERE p.id IN (SELECT post_id FROM post_tags WHERE tag_id = 1000) AND p.id % $width = $i) TO STDOUT" | wc -l >"$work/pcopy$i" &
      pids+=($!)
    done
    wait "${pids[@]}"
    p1=$(now_ns)
    pcopied=$(cat "$work"/pcopy* | awk '{n += $1} END {print n}')
    rm -f "$work"/pcopy*
    ppeer=$(awk -v n="$pcopied" -v d=$((p1 - p0)) 'BEGIN {print n / (d / 1e9)}')
    awk -v p="$posts" -v r="$run" -v label="$label" -v l="$lines" -v f="$flusso" -v c="$copied" -v k="$peer" -v first=$((t1 - t0)) \
      -v i="$idle" -v a="$after" -v h="$held" -v s="$second" -v w="$width" -v pc="$pcopied" -v pk="$ppeer" 'BEGIN {
      printf "fan-out %d posts, run %d: %s %d lines at %.0f docs/s, one COPY %d at %.0f docs/s, ratio %.2f; %d COPYs at once %d at %.0f docs/s, ratio %.2f; first line %.2f s after the commit; peak RSS %.0f MiB idle, %.0f MiB after the rename (RSS %.0f MiB then), %.0f MiB after a second\n",
        p, r, label, l, f, c, k, (k > 0 ? f / k : 0), w, pc, pk, (pk > 0 ? f / pk : 0), first / 1e9, i / 1024, a / 1024, h / 1024, s / 1024 }'
    awk -v p="$posts" -v r="$run" -v label="$label" -v f="$flusso" -v k="$peer" -v w="$width" -v pk="$ppeer" -v first=$((t1 - t0)) \
      -v i="$idle" -v a="$after" -v s="$second" -v d="$(date -u +%F)" 'BEGIN {
      printf "%d,%d,%s,%.0f,%.0f,%d,%.0f,%.3f,%.1f,%.1f,%.1f,%s\n", p, r, label, f, k, w, pk, first / 1e9, i / 1024, a / 1024, s / 1024, d }' >>"$runs_csv"
    grep -h 'fan-out written' "$work/$db-$run.log" | sed 's/^/  /' | head -2 || true
  done
  done
  done
  # The slot is the server's, not the database's: drop it with the database.
  # (its walsender may take a moment to go after follow stops)
  for _ in $(seq 40); do
    psql -q -d "$db" -c "SELECT pg_drop_replication_slot('flusso_blog')" >/dev/null 2>&1 && break
    sleep 0.25
  done
  dropdb "$db"
done
plots
exit $failed
