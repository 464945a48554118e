#!/usr/bin/env bash
# `make bench`: every side-by-side comparison in one run, each against its
# peer measured in the same run, then the Go benchmarks of the hot paths.
# Sizes come from the environment (defaults are the issues' sizes):
#   POSTS=200000 COMMENTS=1000000 AUTHORS=5000  backfill
#   UPDATES=200000                              streaming
#   RATE=1000                                   latency
#   RUNS=3                                      repeats (the median is reported)
#   SWEEP=100000                                rows for the throughput plot (0 skips it)
#   FANOUT="100000 1000000"                     posts on one renamed tag (0 skips it)
#   DRAIN=40000 DRAIN_REV=9ebb57f               a backlog drained, against that build
#   WIDTH=<CPUs>                                the documents stream's capture.build_workers
#                                               and its parallel COPY peer's connections
#   PLOT_DIR=docs/img                           where each plot's CSV and PNG are written
#                                               (gnuplot-nox; without it the plots are skipped)
# The outputs (stdout, JetStream R1, R3) are compared by BenchmarkOutput.
# Prints one line per comparison (flusso-pg, peer, ratio flusso-pg/peer);
# exits non-zero when a run failed, never because a ratio is low.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
POSTS=${POSTS:-200000} COMMENTS=${COMMENTS:-1000000} AUTHORS=${AUTHORS:-5000}
UPDATES=${UPDATES:-200000} RATE=${RATE:-1000} RUNS=${RUNS:-3} SWEEP=${SWEEP:-100000}
FANOUT=${FANOUT:-100000 1000000}
mkdir -p "$here/results"
failed=0
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(go version | cut -d' ' -f3)"
echo "== backfill ($POSTS posts, $COMMENTS comments)"
bash "$here/backfill.sh" "$POSTS" "$COMMENTS" "$AUTHORS" "$RUNS" | tee "$here/results/backfill.txt" || failed=1
echo "== streaming ($UPDATES updates, latency at $RATE commits/s)"
bash "$here/stream.sh" "$UPDATES" "$RUNS" "$RATE" | tee "$here/results/stream.txt" || failed=1
if [ "$SWEEP" != 0 ]; then
  echo "== throughput by transaction size and batch size ($SWEEP rows)"
  bash "$here/sweep.sh" "$SWEEP" | tee "$here/results/sweep.txt" || failed=1
fi
if [ "$FANOUT" != 0 ]; then
  echo "== fan-out: one tag on every post renamed ($FANOUT posts), against one COPY and as many COPYs at once as follow's build workers"
  # shellcheck disable=SC2086 # the sizes are words
  bash "$here/fanout.sh" $FANOUT | tee "$here/results/fanout.txt" || failed=1
fi
echo "== compact lines: bytes per line and CPU against the build before them (${COMPACT_REV:-3bee2a5})"
bash "$here/compact.sh" "${COMPACT_REV:-3bee2a5}" 30000 150000 "$RUNS" | tee "$here/results/compact.txt" || failed=1
echo "== a backlog drained: this build against ${DRAIN_REV:-9ebb57f} (before the write stage and the backlog groups)"
bash "$here/drain.sh" "${DRAIN_REV:-9ebb57f}" "${DRAIN:-40000}" "$RUNS" | tee "$here/results/drain.txt" || failed=1
echo "== outputs side by side: stdout, JetStream R1 and R3 (docs/s, batch-to-confirmable p50/p99)"
(cd "$here/.." && go test -run '^$' -bench BenchmarkOutput -benchtime 300x -count "$RUNS" ./internal/jetstream/ 2>&1) \
  | tee "$here/results/jetstream.txt" | grep -E '^(Benchmark|ok|FAIL|---)' || failed=1
grep -q '^FAIL' "$here/results/jetstream.txt" && failed=1
echo "== Go benchmarks (benchstat-comparable: bench/results/go.txt)"
(cd "$here/.." && go test -run '^$' -bench . -benchmem -count "$RUNS" \
  ./internal/output/ ./internal/wal/ ./internal/build/ 2>&1) | tee "$here/results/go.txt" | grep -E '^(Benchmark|ok|FAIL|---)' || failed=1
grep -q '^FAIL' "$here/results/go.txt" && failed=1
exit $failed
