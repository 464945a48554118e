#!/usr/bin/env bash
# Streaming benchmarks, side by side in one run (issue: follow, benchmarks):
#   rows:      flusso-pg follow on a root-only index vs pg_recvlogical + wal2json
#              (format-version 2) draining the same N committed single-row updates,
#              each timed from its start until its slot confirms the end of the
#              backlog (both with a 1 s status interval; flusso-pg's time includes
#              its start-up: catalog, publication check, slot);
#   documents: flusso-pg follow on the blog posts index turning N comment
#              updates into documents vs one COPY of the reference query over
#              the affected posts, and vs as many COPYs at once as follow
#              builds chunks at once (capture.build_workers, default the
#              CPUs; WIDTH= overrides it for both), each over every width-th
#              affected post; plot: docs/img/stream-documents.csv/.png;
#   latency:   commit-to-line p50/p95/p99 at a steady rate, both tools; the
#              histogram of every measured commit's latency, both tools:
#              docs/img/latency.csv/.png;
#   idle:      flusso-pg's CPU while idle, and the slot's retained WAL 30 s
#              after the last write.
# Usage: bench/stream.sh [UPDATES=200000] [RUNS=3] [RATE=1000]
# ONLY=rows|documents|latency|idle runs one part. With latency:
#   BEFORE=<git rev or binary> also measures that flusso-pg, right after;
#   TRACE=1 runs flusso-pg once more at log level debug and prints each
#   stage's p50/p99 in µs over the measured groups (docs/benchmarks.md);
#   TRACE_BEFORE=<binary> the same for an older build that logs the stages.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
N=${1:-200000}
RUNS=${2:-3}
RATE=${3:-1000}
bench_need
work=$(mktemp -d /tmp/flusso-bench-stream.XXXXXX)
chmod 755 "$work"
trap 'bench_cleanup "$work"' EXIT
pg_start "$work/pg"
FLUSSO="$work/flusso-pg"
build_flusso "$FLUSSO"
failed=0


part() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

# ---------------------------------------------------------------- rows
if part rows; then
createdb rows
psql -q -d rows -c "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
  INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(0, 100000) g; ANALYZE items;"
cat >"$work/rows.yaml" <<YAML
source: {dsn: "$(dsn rows)", slot: flusso_rows, publication: flusso_rows}
state: {dir: $work/state-rows}
capture: {status_interval: 1s}
indexes:
  - {name: items, table: public.items}
YAML
cat >"$work/update.sql" <<'SQL'
\set id random(1, 100000)
UPDATE items SET v = v + 1 WHERE id = :id;
SQL
rows_flusso=(); rows_peer=()
for run in $(seq "$RUNS"); do
  # flusso-pg: first start creates slot + backfill; stop; write N commits; time the drain.
  rm -rf "$work/state-rows"; psql -q -d rows -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('flusso_rows','w2j_rows')" >/dev/null
  "$FLUSSO" follow --config "$work/rows.yaml" --log-level warn --output /dev/null >/dev/null & pid=$!
  sleep 0.5; wait_slot rows flusso_rows "$(lsn_now rows)" 120 || { echo "rows: flusso-pg did not start"; failed=1; }
  stop_proc $pid
  psql -q -d rows -c "SELECT pg_create_logical_replication_slot('w2j_rows', 'wal2json')" >/dev/null
  pgbench -n -c 4 -j 2 -t $((N / 4)) -f "$work/update.sql" rows >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log"; exit 1; }
  end=$(lsn_now rows)
  t0=$(now_ns)
  /usr/bin/time -v -o "$work/rows-flusso.time" "$FLUSSO" follow --config "$work/rows.yaml" --log-level warn >"$work/rows-flusso.out" & pid=$!
  wait_slot rows flusso_rows "$end" 600 || { echo "rows: flusso-pg did not drain"; failed=1; }
  t1=$(now_ns); stop_proc $pid
  rows_flusso+=("$(awk -v n="$N" -v d=$((t1 - t0)) 'BEGIN{print n / (d / 1e9)}')")
  # The peer is timed the same way: until its slot confirms the end, with the
  # same 1 s status interval and an fsync of its output file at least as often.
  t0=$(now_ns)
  /usr/bin/time -v -o "$work/rows-peer.time" pg_recvlogical -d "$(dsn rows)" --slot w2j_rows --start \
    -o format-version=2 -s 1 -F 1 -f "$work/rows-peer.out" & pid=$!
  wait_slot rows w2j_rows "$end" 600 || { echo "rows: pg_recvlogical did not drain"; failed=1; }
  t1=$(now_ns); stop_proc $pid
  rows_peer+=("$(awk -v n="$N" -v d=$((t1 - t0)) 'BEGIN{print n / (d / 1e9)}')")
  echo "  run $run: flusso-pg ${rows_flusso[-1]} rows/s (peak RSS $(peak_rss_kb "$work/rows-flusso.time") kB, $(wc -l <"$work/rows-flusso.out") lines), pg_recvlogical+wal2json ${rows_peer[-1]} rows/s (peak RSS $(peak_rss_kb "$work/rows-peer.time") kB)"
done
report "stream rows ($N single-row updates)" "$(printf '%s\n' "${rows_flusso[@]}" | median)" "$(printf '%s\n' "${rows_peer[@]}" | median)" "changes/s"
fi

# ---------------------------------------------------------------- documents
if part documents; then
blog_load blog 20000 100000 1000
sed -e "s#postgres://postgres@127.0.0.1:5432/blog?sslmode=disable#$(dsn blog)#" "$BENCH_ROOT/workloads/blog/flusso.yaml" >"$work/blog.yaml"
printf 'state: {dir: %s}\ncapture: {status_interval: 1s}\n' "$work/state-blog" >>"$work/blog.yaml"
# The same-width peer's width: follow's capture.build_workers (0, the
# default, is the number of CPUs, at most 64).
width=${WIDTH:-$(n=$(nproc); echo $((n < 64 ? n : 64)))}
[ -z "${WIDTH:-}" ] || sed -i "s/^capture: {status_interval: 1s}\$/capture: {status_interval: 1s, build_workers: $WIDTH}/" "$work/blog.yaml"
cat >"$work/comment.sql" <<'SQL'
\set id random(1, 100000)
UPDATE comments SET score = score + 1 WHERE id = :id;
SQL
docs_flusso=(); docs_peer=(); docs_par=()
docs_csv=$(plot_csv stream-documents)
echo "run,flusso-pg,one COPY,$width COPYs at once" >"$docs_csv"
for run in $(seq "$RUNS"); do
  rm -rf "$work/state-blog"; psql -q -d blog -c "SELECT pg_drop_replication_slot('flusso_blog') FROM pg_replication_slots WHERE slot_name = 'flusso_blog'" >/dev/null
  # The backfill, done (/readyz) before the backlog is written, so the timed
  # run writes only the documents the updates touch.
  addr=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$FLUSSO" follow --config "$work/blog.yaml" --log-level warn --listen "$addr" --output /dev/null >/dev/null & pid=$!
  deadline=$(( $(date +%s) + 600 ))
  until curl -fs "http://$addr/readyz" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "documents: flusso-pg's backfill did not finish"; failed=1; break; }
    sleep 0.1
  done
  wait_slot blog flusso_blog "$(lsn_now blog)" 300 || { echo "documents: flusso-pg did not start"; failed=1; }
  stop_proc $pid
  psql -q -d blog -c "CREATE TABLE IF NOT EXISTS touched (post_id bigint); TRUNCATE touched" >/dev/null
  pgbench -n -c 4 -j 2 -t $((N / 4)) -f "$work/comment.sql" blog >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log"; exit 1; }
  end=$(lsn_now blog)
  t0=$(now_ns)
  /usr/bin/time -v -o "$work/docs-flusso.time" "$FLUSSO" follow --config "$work/blog.yaml" --log-level warn >"$work/docs-flusso.out" & pid=$!
  wait_slot blog flusso_blog "$end" 900 || { echo "documents: flusso-pg did not drain"; failed=1; }
  t1=$(now_ns); stop_proc $pid
  lines=$(wc -l <"$work/docs-flusso.out")
  docs_flusso+=("$(awk -v n="$lines" -v d=$((t1 - t0)) 'BEGIN{print n / (d / 1e9)}')")
  # The peer: COPY of the reference query over the same affected posts.
  grep -o '"id":"[0-9]*"' "$work/docs-flusso.out" | tr -dc '0-9\n' | sort -u >"$work/affected"
  psql -q -d blog -c "TRUNCATE touched" -c "\\copy touched FROM '$work/affected'" >/dev/null
  ref=$(sed -e 's/--.*$//' "$BENCH_ROOT/workloads/blog/reference.sql" | tr '\n' ' ')
  t0=$(now_ns)
  psql -q -d blog -c "COPY ($ref WHERE p.id IN (SELECT post_id FROM touched)) TO STDOUT" >"$work/docs-peer.out"
  t1=$(now_ns)
  docs_peer+=("$(awk -v n="$(wc -l <"$work/docs-peer.out")" -v d=$((t1 - t0)) 'BEGIN{print n / (d / 1e9)}')")
  # The same-width peer: width COPYs at once, each over every width-th touched post.
  pids=()
  t0=$(now_ns)
  for i in $(seq 0 $((width - 1))); do
    psql -q -d blog -c "COPY ($ref WHERE p.id IN (SELECT post_id FROM touched WHERE post_id % $width = $i)) TO STDOUT" | wc -l >"$work/pcopy$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  t1=$(now_ns)
  pcopied=$(cat "$work"/pcopy* | awk '{n += $1} END {print n}')
  rm -f "$work"/pcopy*
  docs_par+=("$(awk -v n="$pcopied" -v d=$((t1 - t0)) 'BEGIN{print n / (d / 1e9)}')")
  echo "  run $run: flusso-pg $lines documents at ${docs_flusso[-1]}/s (peak RSS $(peak_rss_kb "$work/docs-flusso.time") kB), COPY $(wc -l <"$work/docs-peer.out") documents at ${docs_peer[-1]}/s, $width COPYs at once $pcopied documents at ${docs_par[-1]}/s"
  printf 'run %d,%.0f,%.0f,%.0f\n' "$run" "${docs_flusso[-1]}" "${docs_peer[-1]}" "${docs_par[-1]}" >>"$docs_csv"
done
med_f=$(printf '%s\n' "${docs_flusso[@]}" | median) med_p=$(printf '%s\n' "${docs_peer[@]}" | median) med_w=$(printf '%s\n' "${docs_par[@]}" | median)
report "stream documents ($N comment updates)" "$med_f" "$med_p" "docs/s"
report "stream documents vs $width COPYs at once" "$med_f" "$med_w" "docs/s"
printf 'median,%.0f,%.0f,%.0f\n' "$med_f" "$med_p" "$med_w" >>"$docs_csv"
plot_bars "$docs_csv" "$PLOT_DIR/stream-documents.png" "documents stream: $N comment updates -> posts documents/s ($(date -u +%F))" "documents per second"
fi

# ---------------------------------------------------------------- latency
if part latency || part idle; then
createdb lat
psql -q -d lat -c "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);
  INSERT INTO items SELECT g, 0 FROM generate_series(0, 400000) g; ANALYZE items;"
cat >"$work/lat.yaml" <<YAML
source: {dsn: "$(dsn lat)", slot: flusso_lat, publication: flusso_lat}
state: {dir: $work/state-lat}
capture: {status_interval: 1s}
indexes:
  - {name: items, table: public.items}
YAML
fi
if part latency; then
(cd "$BENCH_ROOT" && go build -o "$work/latency" ./bench/latency)
echo "latency at $RATE commits/s (synchronous_commit on):"
"$work/latency" -dsn "$(dsn lat)" -rate "$RATE" -duration 20s -first 1 -samples "$work/lat-flusso.ms" \
  -cmd "$FLUSSO follow --config $work/lat.yaml --log-level warn" | sed 's/^/  flusso-pg: /' || failed=1
if [ -n "${BEFORE:-}" ]; then
  # An older flusso-pg (a commit, or a built binary), same server, right after.
  before="$BEFORE"
  if [ ! -x "$before" ]; then
    before="$work/flusso-before"
    mkdir -p "$work/before-src"
    git -C "$BENCH_ROOT" archive "$BEFORE" | tar -x -C "$work/before-src"
    (cd "$work/before-src" && go build -o "$before" ./cmd/flusso-pg)
  fi
  rm -rf "$work/state-lat"; psql -q -d lat -c "SELECT pg_drop_replication_slot('flusso_lat')" >/dev/null
  "$work/latency" -dsn "$(dsn lat)" -rate "$RATE" -duration 20s -first 100001 \
    -cmd "$before follow --config $work/lat.yaml --log-level warn" | sed "s/^/  flusso-pg ${BEFORE##*/}: /" || failed=1
fi
if [ -n "${TRACE:-}" ]; then
  # The same at log level debug: every group's stage durations (the "group
  # written" line), their medians and p99 in microseconds. Logging costs a
  # little of its own, so the ratios are those of the runs above.
  rm -rf "$work/state-lat"; psql -q -d lat -c "SELECT pg_drop_replication_slot('flusso_lat')" >/dev/null
  "$work/latency" -dsn "$(dsn lat)" -rate "$RATE" -duration 20s -first 300001 \
    -cmd "$FLUSSO follow --config $work/lat.yaml --log-level debug --log-format json 2>$work/trace.log" | sed 's/^/  flusso-pg traced: /' || failed=1
  trace_stages "$work/trace.log" | sed 's/^/  /'
  if [ -n "${TRACE_BEFORE:-}" ]; then # an older binary that logs the same stages
    rm -rf "$work/state-lat"; psql -q -d lat -c "SELECT pg_drop_replication_slot('flusso_lat')" >/dev/null
    "$work/latency" -dsn "$(dsn lat)" -rate "$RATE" -duration 20s -first 300001 \
      -cmd "$TRACE_BEFORE follow --config $work/lat.yaml --log-level debug --log-format json 2>$work/trace-before.log" | sed "s/^/  flusso-pg ${TRACE_BEFORE##*/} traced: /" || failed=1
    trace_stages "$work/trace-before.log" | sed 's/^/  /'
  fi
fi
psql -q -d lat -c "SELECT pg_create_logical_replication_slot('w2j_lat', 'wal2json')" >/dev/null
"$work/latency" -dsn "$(dsn lat)" -rate "$RATE" -duration 20s -first 200001 -samples "$work/lat-w2j.ms" \
  -cmd "pg_recvlogical -d '$(dsn lat)' --slot w2j_lat --start -o format-version=2 -s 1 -f -" | sed 's/^/  pg_recvlogical+wal2json: /' || failed=1
# The histogram of both: 10 buckets a decade from 0.01 ms (a bucket is named
# by its lower bound; 0 ms, a line before the client saw its COMMIT return,
# counts in the first), the share of each tool's measured commits in each.
if [ -s "$work/lat-flusso.ms" ] && [ -s "$work/lat-w2j.ms" ]; then
  lat_csv=$(plot_csv latency)
  awk 'FNR == 1 {f++} {b = ($1 > 0.01 ? int(10 * log($1 / 0.01) / log(10)) : 0); c[f, b]++; n[f]++; if (b > m) m = b}
    END {print "bucket_ms,flusso-pg,pg_recvlogical+wal2json"
         for (b = 0; b <= m; b++) printf "%.4g,%.3f,%.3f\n", 0.01 * 10 ^ (b / 10), 100 * c[1, b] / n[1], 100 * c[2, b] / n[2]}' \
    "$work/lat-flusso.ms" "$work/lat-w2j.ms" >"$lat_csv"
  pct() { awk -v p="$2" '{a[NR] = $1} END {i = int(p * NR) + 1; if (i > NR) i = NR; printf "%.2f", a[i]}' "$1"; } # the samples are sorted
  plot_latency "$lat_csv" "$PLOT_DIR/latency.png" "commit-to-line at $RATE commits/s, $(date -u +%F): flusso-pg p50 $(pct "$work/lat-flusso.ms" 0.5) p99 $(pct "$work/lat-flusso.ms" 0.99) ms, wal2json p50 $(pct "$work/lat-w2j.ms" 0.5) p99 $(pct "$work/lat-w2j.ms" 0.99) ms"
fi

fi

# ---------------------------------------------------------------- idle
if part idle; then
"$FLUSSO" follow --config "$work/lat.yaml" --log-level warn --output /dev/null >/dev/null & pid=$!
sleep 3
psql -q -d lat -c "UPDATE items SET v = v + 1 WHERE id < 1000" >/dev/null
psql -q -d lat -c "CHECKPOINT" >/dev/null
sleep 2
ticks0=$(awk '{print $14 + $15}' /proc/$pid/stat)
sleep 30
ticks1=$(awk '{print $14 + $15}' /proc/$pid/stat)
retained=$(psql -Atq -d lat -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots WHERE slot_name = 'flusso_lat'")
stop_proc $pid
hz=$(getconf CLK_TCK)
awk -v t=$((ticks1 - ticks0)) -v hz="$hz" -v r="$retained" 'BEGIN { printf "idle: flusso-pg CPU %.2f%% over 30 s; slot retains %.0f bytes of WAL 30 s after the last write\n", 100 * t / hz / 30, r }'
fi

exit $failed
