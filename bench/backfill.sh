#!/usr/bin/env bash
# Backfill benchmark, side by side in one run (issue 5):
#   peer:      psql -c "COPY (<reference query>) TO STDOUT" >/dev/null, the
#              single-query limit for building the blog documents, with the
#              server's defaults and with jit=off (the setting flusso-pg's
#              document connections use, build.RuntimeParams);
#   flusso-pg: flusso-pg backfill --workers 1 and --workers 2 --output /dev/null, the
#              same documents from one exported snapshot;
#   same-width peer: as many COPYs at once as the backfill's workers (2),
#              each over every second post (p.id % 2), with the server's
#              defaults and with jit=off, right after the backfills.
# Plot (bench/lib.sh, PLOT_DIR=docs/img): backfill.csv/.png, docs/s by number
# of connections (medians).
# Each is run RUNS times; the median is reported, with flusso-pg's peak RSS
# (/usr/bin/time -v). It starts its own throwaway PostgreSQL (bench/lib.sh)
# and exits non-zero only when a run fails.
# Usage: bench/backfill.sh [POSTS=200000] [COMMENTS=1000000] [AUTHORS=5000] [RUNS=3]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
POSTS=${1:-200000}
COMMENTS=${2:-1000000}
AUTHORS=${3:-5000}
RUNS=${4:-3}

if ! [ -x "$PGBIN/postgres" ] || ! command -v psql >/dev/null || ! [ -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq postgresql postgresql-client time >/dev/null
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  else
    echo "bench: needs PostgreSQL, psql and /usr/bin/time: apt-get install postgresql postgresql-client time" >&2
    exit 1
  fi
fi

work=$(mktemp -d /tmp/flusso-bench-backfill.XXXXXX)
chmod 755 "$work"
trap 'pg_stop; rm -rf "$work"' EXIT
pg_start "$work/pg"
FLUSSO="$work/flusso-pg"
build_flusso "$FLUSSO"

echo "loading the blog workload: $POSTS posts, $COMMENTS comments, $AUTHORS authors" >&2
blog_load blog "$POSTS" "$COMMENTS" "$AUTHORS"
psql -q -d blog -c "VACUUM ANALYZE" >/dev/null
blog=$(cat "$BENCH_ROOT/workloads/blog/flusso.yaml")
cat >"$work/flusso.yaml" <<YAML
source: {dsn: "$(dsn blog)"}
log: {level: info}
indexes:${blog#*$'\n'indexes:}
YAML
reference=$(grep -v '^--' "$BENCH_ROOT/workloads/blog/reference.sql")
failed=0

# time_run NAME CMD...: runs CMD under /usr/bin/time -v with stdout to
# /dev/null; prints "seconds rss_kb"; stderr is kept in $work/NAME.err.
time_run() {
  local name=$1; shift
  local t0 t1
  t0=$(now_ns)
  if ! /usr/bin/time -v -o "$work/$name.time" "$@" >/dev/null 2>"$work/$name.err"; then
    echo "bench: $name failed:" >&2
    tail -5 "$work/$name.err" >&2
    failed=1
    echo "0 0"
    return
  fi
  t1=$(now_ns)
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') $(peak_rss_kb "$work/$name.time")"
}

# Warm the cache once so no run pays for the first read of the tables.
psql -Atq -d blog -c "COPY ($reference) TO STDOUT" >/dev/null

# pcopy W: W COPYs of the reference query at once, each over every W-th post;
# prints the seconds until the last one ends.
pcopy() {
  local w=$1 i t0 t1 pids=()
  t0=$(now_ns)
  for i in $(seq 0 $((w - 1))); do
    psql -Atq -d blog -c "COPY ($reference WHERE p.id % $w = $i) TO STDOUT" | wc -l >"$work/pcopy$i" &
    pids+=($!)
  done
  wait "${pids[@]}" || { echo "bench: a parallel COPY failed" >&2; : >"$work/pcopy-failed"; }
  t1=$(now_ns)
  if [ "$(cat "$work"/pcopy[0-9]* | awk '{n += $1} END {print n}')" != "$POSTS" ]; then
    echo "bench: $w COPYs at once did not write $POSTS documents" >&2
    : >"$work/pcopy-failed"
  fi
  rm -f "$work"/pcopy[0-9]*
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
}

peer_s=(); nojit_s=(); w1_s=(); w2_s=(); w1_rss=(); w2_rss=(); peer_rss=(); par_s=(); parnojit_s=()
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq "$RUNS"); do
  read -r s rss < <(time_run "copy-$run" psql -Atq -d blog -c "COPY ($reference) TO STDOUT")
  peer_s+=("$s"); peer_rss+=("$rss")
  read -r s rss < <(PGOPTIONS="-c jit=off" time_run "copy-nojit-$run" psql -Atq -d blog -c "COPY ($reference) TO STDOUT")
  nojit_s+=("$s")
  for w in 1 2; do
    read -r s rss < <(time_run "flusso-w$w-$run" "$FLUSSO" backfill --config "$work/flusso.yaml" --workers "$w" --output /dev/null)
    if [ "$s" != 0 ] && ! grep -q "\"documents\": $POSTS," "$work/flusso-w$w-$run.err"; then
      echo "bench: flusso-pg --workers $w (run $run) did not report $POSTS documents:" >&2
      grep "backfill done" "$work/flusso-w$w-$run.err" >&2 || tail -3 "$work/flusso-w$w-$run.err" >&2
      failed=1
    fi
    if [ "$w" = 1 ]; then w1_s+=("$s"); w1_rss+=("$rss"); else w2_s+=("$s"); w2_rss+=("$rss"); fi
  done
  par_s+=("$(pcopy 2)")
  parnojit_s+=("$(PGOPTIONS="-c jit=off" pcopy 2)")
  echo "run $run: copy ${peer_s[-1]} s, copy jit=off ${nojit_s[-1]} s, flusso-pg w1 ${w1_s[-1]} s, w2 ${w2_s[-1]} s, 2 COPYs at once ${par_s[-1]} s, jit=off ${parnojit_s[-1]} s" >&2
done

med() { printf '%s\n' "$@" | median; }
# best: the fastest run, the figure least disturbed by other load on a shared machine.
best() { printf '%s\n' "$@" | sort -g | head -1; }
ratio() { awk -v f="$1" -v p="$2" 'BEGIN { printf "%.2f", (f > 0 ? p / f : 0) }'; }
peer=$(med "${peer_s[@]}")
rate() { awk -v n="$POSTS" -v s="$1" 'BEGIN { print (s > 0 ? n / s : 0) }'; }
mib() { awk -v k="$(printf '%s\n' "$@" | sort -g | tail -1)" 'BEGIN { printf "%.0f", k / 1024 }'; }
nojit=$(med "${nojit_s[@]}")
w1=$(med "${w1_s[@]}")
w2=$(med "${w2_s[@]}")
echo "blog: $POSTS posts, $COMMENTS comments, $AUTHORS authors; median of $RUNS runs; $(nproc) CPUs; PostgreSQL $PGMAJOR; load average $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
report "backfill --workers 1 vs COPY (reference)" "$(rate "$w1")" "$(rate "$peer")" "docs/s" | tr -d '\n'
echo "   peak RSS flusso-pg $(mib "${w1_rss[@]}") MiB, psql $(mib "${peer_rss[@]}") MiB"
report "backfill --workers 2 vs COPY (reference)" "$(rate "$w2")" "$(rate "$peer")" "docs/s" | tr -d '\n'
echo "   peak RSS flusso-pg $(mib "${w2_rss[@]}") MiB"
report "backfill --workers 1 vs COPY (reference, jit=off)" "$(rate "$w1")" "$(rate "$nojit")" "docs/s"
report "backfill --workers 2 vs COPY (reference, jit=off)" "$(rate "$w2")" "$(rate "$nojit")" "docs/s"
par=$(med "${par_s[@]}")
parnojit=$(med "${parnojit_s[@]}")
report "backfill --workers 2 vs 2 COPYs at once" "$(rate "$w2")" "$(rate "$par")" "docs/s"
report "backfill --workers 2 vs 2 COPYs at once, jit=off" "$(rate "$w2")" "$(rate "$parnojit")" "docs/s"
csv=$(plot_csv backfill)
{
  echo "connections,COPY,COPY jit=off,flusso-pg backfill"
  echo "1 (one COPY / --workers 1),$(rate "$peer"),$(rate "$nojit"),$(rate "$w1")"
  echo "2 (2 COPYs at once / --workers 2),$(rate "$par"),$(rate "$parnojit"),$(rate "$w2")"
} | awk -F, -v OFS=, 'NR > 1 {for (i = 2; i <= NF; i++) $i = sprintf("%.0f", $i)} {print}' >"$csv"
plot_bars "$csv" "$PLOT_DIR/backfill.png" "backfill: $POSTS posts, $COMMENTS comments, documents/s (median of $RUNS, $(date -u +%F))" "documents per second"
echo "best of $RUNS (fastest run of each): copy $(best "${peer_s[@]}") s, copy jit=off $(best "${nojit_s[@]}") s," \
  "flusso-pg w1 $(best "${w1_s[@]}") s (ratio $(ratio "$(best "${w1_s[@]}")" "$(best "${peer_s[@]}")")), w2 $(best "${w2_s[@]}") s (ratio $(ratio "$(best "${w2_s[@]}")" "$(best "${peer_s[@]}")"))"
[ -e "$work/pcopy-failed" ] && failed=1
exit $failed
