#!/usr/bin/env bash
# Key map benchmark (issue 14), side by side in one run: the blog with
# comments (and posts) at REPLICA IDENTITY FULL against the same at DEFAULT,
# where the key map in state.dir resolves comments' deletes and moves.
#   wal:       WAL bytes the server writes per single-row UPDATE and per
#              single-row DELETE of comments (one transaction each, commit
#              record included: the same in both modes);
#   documents: flusso-pg follow on the blog posts index draining N comment
#              updates (a backlog, timed from its start until its slot
#              confirms the end), documents/s, in both modes; DEFAULT goes
#              through the key map (one batch per transaction, synced off the
#              pipeline's path before each confirm).
# Usage: [WORKLOAD=score|move] bench/keymap.sh [POSTS=20000] [COMMENTS=100000] [UPDATES=20000] [RUNS=3]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
POSTS=${1:-20000}
COMMENTS=${2:-100000}
N=${3:-20000}
RUNS=${4:-3}
command -v pgbench >/dev/null && command -v /usr/bin/time >/dev/null || { echo "bench: needs pgbench and /usr/bin/time" >&2; exit 1; }
work=$(mktemp -d /tmp/flusso-bench-keymap.XXXXXX)
chmod 755 "$work"
trap 'bench_cleanup "$work"' EXIT
pg_start "$work/pg"
FLUSSO="$work/flusso-pg"
build_flusso "$FLUSSO"
failed=0

wal_since() { psql -Atq -d "$1" -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$2')"; }

for mode in full default; do
  blog_load "blog_$mode" "$POSTS" "$COMMENTS" 1000
  if [ "$mode" = default ]; then
    psql -q -d blog_default -c "ALTER TABLE comments REPLICA IDENTITY DEFAULT; ALTER TABLE posts REPLICA IDENTITY DEFAULT"
  fi
  sed -e "s#postgres://postgres@127.0.0.1:5432/blog?sslmode=disable#$(dsn "blog_$mode")#" \
      -e "s#slot: flusso_blog#slot: flusso_$mode#" "$BENCH_ROOT/workloads/blog/flusso.yaml" >"$work/$mode.yaml"
  printf 'state: {dir: %s}\ncapture: {status_interval: 1s}\n' "$work/state-$mode" >>"$work/$mode.yaml"
done
# WORKLOAD=move: each update moves the comment to another post, so the key
# map writes on every transaction (a score update leaves its entry as it was).
if [ "${WORKLOAD:-score}" = move ]; then
  cat >"$work/update.sql" <<SQL
\\set id random(1, $COMMENTS)
UPDATE comments SET post_id = 1 + post_id % $POSTS WHERE id = :id;
SQL
else
  cat >"$work/update.sql" <<SQL
\\set id random(1, $COMMENTS)
UPDATE comments SET score = score + 1 WHERE id = :id;
SQL
fi

# ---------------------------------------------------------------- documents/s
declare -A docs txps
for run in $(seq "$RUNS"); do
  for mode in full default; do
    db="blog_$mode"; slot="flusso_$mode"
    rm -rf "$work/state-$mode"
    psql -q -d "$db" -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
    "$FLUSSO" follow --config "$work/$mode.yaml" --log-level warn --output /dev/null >/dev/null & pid=$!
    sleep 0.5; wait_slot "$db" "$slot" "$(lsn_now "$db")" 300 || { echo "documents $mode: flusso-pg did not start"; failed=1; }
    stop_proc $pid
    pgbench -n -c 4 -j 2 -t $((N / 4)) -f "$work/update.sql" "$db" >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log"; exit 1; }
    end=$(lsn_now "$db")
    t0=$(now_ns)
    /usr/bin/time -v -o "$work/docs-$mode.time" "$FLUSSO" follow --config "$work/$mode.yaml" --log-level warn >"$work/docs-$mode.out" & pid=$!
    wait_slot "$db" "$slot" "$end" 900 || { echo "documents $mode: flusso-pg did not drain"; failed=1; }
    t1=$(now_ns); stop_proc $pid
    lines=$(wc -l <"$work/docs-$mode.out")
    rate=$(awk -v n="$lines" -v d=$((t1 - t0)) 'BEGIN{print n / (d / 1e9)}')
    docs[$mode]+="$rate "
    # The same N transactions drained in both modes (the lines differ: how
    # many updates of one post share a group varies run by run).
    tx=$(awk -v n="$N" -v d=$((t1 - t0)) 'BEGIN{print n / (d / 1e9)}')
    txps[$mode]+="$tx "
    echo "  run $run $mode: $N transactions drained at $tx/s, $lines documents at $rate/s (peak RSS $(peak_rss_kb "$work/docs-$mode.time") kB)"
  done
done
full=$(printf '%s\n' ${docs[full]} | median); default=$(printf '%s\n' ${docs[default]} | median)
awk -v f="$full" -v d="$default" -v n="$N" 'BEGIN { printf "documents/s, %d comment updates: FULL %.0f, DEFAULT + key map %.0f, ratio %.2f\n", n, f, d, d / f }'
full=$(printf '%s\n' ${txps[full]} | median); default=$(printf '%s\n' ${txps[default]} | median)
awk -v f="$full" -v d="$default" -v n="$N" 'BEGIN { printf "transactions drained/s, %d comment updates: FULL %.0f, DEFAULT + key map %.0f, ratio %.2f\n", n, f, d, d / f }'

# ---------------------------------------------------------------- WAL bytes
# Without a slot reading (none left): only the server's writes are measured;
# no CHECKPOINT first, so the pages touched above are not logged again in full
# (full-page writes would dominate, the same in both modes).
for mode in full default; do
  db="blog_$mode"
  psql -q -d "$db" -c "SELECT pg_drop_replication_slot('flusso_$mode') FROM pg_replication_slots WHERE slot_name = 'flusso_$mode'" >/dev/null
  start=$(lsn_now "$db")
  pgbench -n -c 1 -t "$N" -f "$work/update.sql" "$db" >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log"; exit 1; }
  upd=$(( $(wal_since "$db" "$start") / N ))
  # Every DELETE deletes a row (a transaction that deletes nothing writes no WAL).
  cat >"$work/delete.sql" <<'SQL'
DELETE FROM comments WHERE id = (SELECT min(id) FROM comments);
SQL
  start=$(lsn_now "$db")
  pgbench -n -c 1 -t "$N" -f "$work/delete.sql" "$db" >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log"; exit 1; }
  del=$(( $(wal_since "$db" "$start") / N ))
  echo "WAL bytes per transaction, $mode identity: UPDATE of a comment $upd, DELETE of a comment $del"
done
exit $failed
