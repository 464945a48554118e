# Shared helpers for the benchmark scripts: a throwaway PostgreSQL cluster,
# the blog workload, timing and peak memory. Source it; do not run it.
# The cluster uses the system PostgreSQL (the peers' plugins, wal2json, are
# installed for it from the distribution's packages).

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${FLUSSO_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
PGMAJOR=$(basename "$(dirname "$PGBIN")")

bench_need() {
  # Installs what the benchmarks compare with, from Debian's packages.
  local missing=()
  [ -x "$PGBIN/postgres" ] || missing+=(postgresql)
  [ -f "/usr/lib/postgresql/$PGMAJOR/lib/wal2json.so" ] || missing+=("postgresql-$PGMAJOR-wal2json")
  command -v /usr/bin/time >/dev/null || missing+=(time)
  command -v pgbench >/dev/null || missing+=(postgresql-client)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "bench: missing ${missing[*]}: install them (apt-get install ${missing[*]})" >&2
      return 1
    fi
  fi
}

# pg_start DIR: a cluster in DIR on a free port; sets PGPORT, PGHOST, PGUSER, DSN_BASE.
pg_start() {
  local dir=$1
  mkdir -p "$dir"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
shared_buffers = 512MB
work_mem = 32MB
synchronous_commit = on
max_wal_size = 4GB
checkpoint_timeout = 30min
log_min_messages = warning
CONF
  "${as[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start >/dev/null
  export PGHOST=127.0.0.1 PGPORT PGUSER=postgres
  BENCH_PGDIR=$dir
  BENCH_AS=("${as[@]}")
}

pg_stop() {
  [ -n "${BENCH_PGDIR:-}" ] && "${BENCH_AS[@]}" "$PGBIN/pg_ctl" -D "$BENCH_PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}

# blog_load DB POSTS COMMENTS AUTHORS [IDENTITY]
# IDENTITY (default full) is the replica identity of comments and posts: the
# figures in docs/benchmarks.md were measured at FULL; keymap.sh compares FULL
# with DEFAULT (the schema's own, resolved through the key map).
blog_load() {
  createdb "$1"
  psql -q -d "$1" -v authors="$4" -v posts="$2" -v comments="$3" -f "$BENCH_ROOT/workloads/blog/schema.sql" >/dev/null
  psql -q -d "$1" -c "ALTER TABLE comments REPLICA IDENTITY ${5:-full}; ALTER TABLE posts REPLICA IDENTITY ${5:-full}" >/dev/null
}

dsn() { echo "postgres://postgres@127.0.0.1:$PGPORT/$1?sslmode=disable"; }

build_flusso() {
  (cd "$BENCH_ROOT" && go build -o "$1" ./cmd/flusso-pg)
}

# now_ns: a monotonic-enough wall clock in nanoseconds.
now_ns() { date +%s%N; }

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# peak_rss_kb FILE: the "Maximum resident set size" that /usr/bin/time -v wrote to FILE.
peak_rss_kb() { awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$1"; }

# report NAME FLUSSO_RATE PEER_RATE UNIT
report() {
  awk -v n="$1" -v f="$2" -v p="$3" -v u="$4" 'BEGIN { printf "%-44s flusso-pg %10.0f %s   peer %10.0f %s   ratio %.2f\n", n, f, u, p, u, (p > 0 ? f / p : 0) }'
}

# stop_proc PID: SIGTERM to a process started in the background, or to the
# children of /usr/bin/time when PID is time (so it still writes its report).
stop_proc() {
  if ! pkill -TERM -P "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}

# bench_cleanup WORKDIR: stop every process started from WORKDIR, the cluster, and remove it.
bench_cleanup() {
  pkill -TERM -f "$1/" 2>/dev/null || true
  sleep 0.5
  pg_stop
  rm -rf "$1"
}

# trace_stages LOG: medians and p99 (µs) of the stage durations of the
# "group written" debug lines of a JSON log (internal/follow/trace.go),
# the last 20,000 groups (the measured part of a latency run).
trace_stages() {
  grep '"group written"' "$1" | tail -20000 | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
keys = ["to_read", "hold", "handoff", "invisible", "visible", "resolve", "build", "flush", "confirm", "took"]
def us(v):
    return v * 1e6 if isinstance(v, (int, float)) else float("nan")
print("stage (us, %d groups): " % len(rows) + "  ".join(
    "%s p50 %.0f p99 %.0f" % (k, sorted(us(r.get(k, 0)) for r in rows)[len(rows) // 2],
                              sorted(us(r.get(k, 0)) for r in rows)[min(len(rows) - 1, len(rows) * 99 // 100)])
    for k in keys))
print("visibility retries: %d groups" % sum(1 for r in rows if r.get("visibility_retries", 0) > 0))
'
}
