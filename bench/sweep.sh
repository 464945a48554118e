#!/usr/bin/env bash
# Throughput of `flusso-pg follow` against transaction size and batch size:
# drains TOTAL updated rows, written in transactions of T rows each, with
# capture.batch_size B, on a root-only index; writes sweep.csv and plots it
# to sweep.png (gnuplot, from Debian's packages) in PLOT_DIR (default docs/img,
# bench/lib.sh).
# Usage: bench/sweep.sh [TOTAL=100000]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
TOTAL=${1:-100000}
bench_need
work=$(mktemp -d /tmp/flusso-bench-sweep.XXXXXX)
chmod 755 "$work"
trap 'bench_cleanup "$work"' EXIT
pg_start "$work/pg"
FLUSSO="$work/flusso-pg"
build_flusso "$FLUSSO"
createdb sweep
psql -q -d sweep -c "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
  INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(0, 200000) g; ANALYZE items;"
csv=$(plot_csv sweep)
echo "txn_rows,batch_size,rows_per_s" >"$csv"
failed=0
for B in 50 200 1000; do
  for T in 1 10 100 1000 10000; do
    # two pgbench clients: TOTAL below 2 x T leaves no transaction to write
    [ $((TOTAL / T / 2)) -ge 1 ] || { echo "sweep T=$T B=$B: skipped, TOTAL $TOTAL < 2 x $T" >&2; continue; }
    rm -rf "$work/state"
    psql -q -d sweep -c "SELECT pg_drop_replication_slot('flusso_sweep') FROM pg_replication_slots WHERE slot_name = 'flusso_sweep'" >/dev/null
    cat >"$work/sweep.yaml" <<YAML
source: {dsn: "$(dsn sweep)", slot: flusso_sweep, publication: flusso_sweep}
state: {dir: $work/state}
capture: {batch_size: $B, status_interval: 1s}
indexes:
  - {name: items, table: public.items}
YAML
    "$FLUSSO" follow --config "$work/sweep.yaml" --log-level warn --output /dev/null >/dev/null & pid=$!
    until [ "$(psql -Atq -d sweep -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'flusso_sweep' AND confirmed_flush_lsn IS NOT NULL")" = 1 ]; do sleep 0.2; done
    sleep 1; stop_proc $pid
    printf '\\set s random(1, %d)\nUPDATE items SET v = v + 1 WHERE id BETWEEN :s AND :s + %d;\n' $((200000 - T)) $((T - 1)) >"$work/u.sql"
    pgbench -n -c 2 -j 2 -t $((TOTAL / T / 2)) -f "$work/u.sql" sweep >/dev/null 2>&1
    end=$(psql -Atq -d sweep -c "SELECT pg_current_wal_lsn()")
    t0=$(now_ns)
    "$FLUSSO" follow --config "$work/sweep.yaml" --log-level warn --output /dev/null >/dev/null & pid=$!
    deadline=$(( $(date +%s) + 600 ))
    until [ "$(psql -Atq -d sweep -c "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'flusso_sweep'")" = t ]; do
      [ "$(date +%s)" -lt "$deadline" ] || { echo "sweep T=$T B=$B: did not drain"; failed=1; break; }
      sleep 0.05
    done
    t1=$(now_ns); stop_proc $pid
    rate=$(awk -v n="$TOTAL" -v d=$((t1 - t0)) 'BEGIN{printf "%.0f", n / (d / 1e9)}')
    echo "$T,$B,$rate" >>"$csv"
    echo "txn_rows=$T batch_size=$B rows/s=$rate"
  done
done
if plot_need; then
  gnuplot <<GP
set terminal png size 900,540 noenhanced
set output "$PLOT_DIR/sweep.png"
set datafile separator ","
set logscale x
set xlabel "rows per transaction"
set ylabel "changed rows per second"
set title "flusso-pg follow, root-only index: throughput by transaction size and batch size"
set key left top
plot for [b in "50 200 1000"] "$csv" using (\$2 == b+0 ? \$1 : 1/0):3 with linespoints title "batch_size ".b
GP
  echo "plot: ${PLOT_DIR#"$BENCH_ROOT"/}/sweep.png" >&2
fi
exit $failed
