#!/usr/bin/env bash
# A backlog drained, side by side in one run (issue 15 item 1): N comment
# updates (4 pgbench clients) made while follow is stopped; then follow is
# started and timed until the slot confirms the end of the backlog (status
# interval 100 ms), for this tree's flusso-pg and the one built from REV,
# alternating, RUNS times, with three readers of the output:
#   file:  --output FILE (fsynced after every group);
#   slow:  a reader that takes 2 ms per 500 lines (an indexer's bulk request);
#   null:  --output /dev/null.
# Prints seconds per run and the lines written (file), then the medians and
# the ratio this/REV (below 1: this build is faster).
# Usage: bench/drain.sh [REV=9ebb57f] [N=40000] [RUNS=3]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
REV=${1:-9ebb57f}
N=${2:-40000}
RUNS=${3:-3}
bench_need
work=$(mktemp -d /tmp/flusso-bench-drain.XXXXXX)
chmod 755 "$work"
trap 'bench_cleanup "$work"' EXIT
pg_start "$work/pg"
build_flusso "$work/this"
mkdir "$work/src"
git -C "$BENCH_ROOT" archive "$REV" | tar -x -C "$work/src"
(cd "$work/src" && go build -o "$work/before" ./cmd/flusso-pg)

blog_load blog 20000 100000 1000
sed -e "s#postgres://postgres@127.0.0.1:5432/blog?sslmode=disable#$(dsn blog)#" "$BENCH_ROOT/workloads/blog/flusso.yaml" >"$work/blog.yaml"
printf 'state: {dir: %s}\ncapture: {status_interval: 100ms}\n' "$work/state" >>"$work/blog.yaml"
cat >"$work/comment.sql" <<'SQL'
\set id random(1, 100000)
UPDATE comments SET score = score + 1 WHERE id = :id;
SQL
cat >"$work/slow.py" <<'PY'
import sys, time
n = 0
for line in sys.stdin.buffer:
    n += 1
    if n % 500 == 0:
        time.sleep(0.002)
PY
# The backfill, once.
"$work/this" follow --config "$work/blog.yaml" --log-level warn --output /dev/null >/dev/null &
pid=$!
sleep 0.5
wait_slot blog flusso_blog "$(lsn_now blog)" 600 || { echo "drain: the backfill did not finish"; exit 1; }
stop_proc $pid
failed=0
for run in $(seq "$RUNS"); do
  for mode in file slow null; do
    for bin in before this; do
      pgbench -n -c 4 -j 2 -t $((N / 4)) -f "$work/comment.sql" blog >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log"; exit 1; }
      end=$(lsn_now blog)
      rm -f "$work/out.ndjson"
      t0=$(now_ns)
      case $mode in
        file) "$work/$bin" follow --config "$work/blog.yaml" --log-level warn --output "$work/out.ndjson" >/dev/null & pid=$! ;;
        null) "$work/$bin" follow --config "$work/blog.yaml" --log-level warn --output /dev/null >/dev/null & pid=$! ;;
        slow)
          "$work/$bin" follow --config "$work/blog.yaml" --log-level warn | python3 "$work/slow.py" &
          sleep 0.05
          pid=$(pgrep -n -f "$work/$bin follow") ;;
      esac
      wait_slot blog flusso_blog "$end" 900 || { echo "drain: $bin did not drain the backlog"; failed=1; }
      t1=$(now_ns)
      stop_proc $pid
      wait 2>/dev/null || true
      lines=""
      [ $mode = file ] && lines=$(wc -l <"$work/out.ndjson")
      s=$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.2f", d / 1e9}')
      echo "$mode $bin $s $lines" >>"$work/runs"
      echo "  run $run, $mode, $bin: $s s${lines:+, $lines lines}"
    done
  done
done
for mode in file slow null; do
  b=$(awk -v m=$mode '$1 == m && $2 == "before" {print $3}' "$work/runs" | median)
  t=$(awk -v m=$mode '$1 == m && $2 == "this" {print $3}' "$work/runs" | median)
  awk -v m=$mode -v b="$b" -v t="$t" -v r="$REV" 'BEGIN {printf "drain %s: %.2f s, %s %.2f s, ratio %.2f\n", m, t, r, b, t / b}'
done
exit $failed
