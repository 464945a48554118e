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

# lsn_now DB: the server's current WAL position.
lsn_now() { psql -Atq -d "$1" -c "SELECT pg_current_wal_lsn()"; }

# slot_reached DB SLOT LSN: t once the slot's confirmed position is at LSN or past it.
slot_reached() {
  psql -Atq -d "$1" -c "SELECT confirmed_flush_lsn >= '$3'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$2'"
}

# wait_slot DB SLOT LSN TIMEOUT_S: waits until the slot is confirmed at LSN
# (fails after the timeout).
wait_slot() {
  local end=$(($(date +%s) + $4))
  until [ "$(slot_reached "$1" "$2" "$3")" = t ]; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.02
  done
}

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

# ---------------------------------------------------------------- plots
# Each plot is a CSV (the raw series) and a PNG drawn from it by gnuplot
# (Debian's gnuplot-nox), both in PLOT_DIR (default docs/img). Without
# gnuplot the CSVs are still written and the plots are skipped with a message.
PLOT_DIR=${PLOT_DIR:-$BENCH_ROOT/docs/img}

plot_need() {
  command -v gnuplot >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq gnuplot-nox >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq gnuplot-nox >/dev/null 2>&1; } || true
  fi
  command -v gnuplot >/dev/null && return 0
  echo "plot: no gnuplot (apt-get install gnuplot-nox): plots skipped, the CSVs are in $PLOT_DIR" >&2
  return 1
}

# plot_csv NAME: the path of PLOT_DIR/NAME.csv (PLOT_DIR created).
plot_csv() { mkdir -p "$PLOT_DIR" && echo "$PLOT_DIR/$1.csv"; }

# plot_bars CSV PNG TITLE [YLABEL]: a clustered bar chart, each bar labelled
# with its value. The CSV's first row names the series (its first column is the
# groups' label), each further row is a group:
#   documents,flusso-pg,one COPY,2 COPYs at once
#   100000,36370,31054,49877
plot_bars() {
  local csv=$1 png=$2 title=$3 ylabel=${4:-} n fmt=${PLOT_FMT:-%.0f}
  plot_need || return 0
  n=$(head -1 "$csv" | awk -F, '{print NF - 1}')
  gnuplot <<GP || { echo "plot: gnuplot failed on $png" >&2; return 0; }
set terminal png size 900,540 noenhanced
set output "$png"
set datafile separator ","
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside bottom center horizontal
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set grid ytics
set title "$title"
set ylabel "$ylabel"
plot for [i=2:$((n + 1))] "$csv" using i:xtic(1) title columnhead(i), \
     for [i=2:$((n + 1))] "$csv" using (\$0 + (i - 2 - ($n - 1) / 2.0) / ($n + 1.0)):i:(sprintf("$fmt", column(i))) every ::1 with labels offset 0,0.7 notitle
GP
  echo "plot: ${png#"$BENCH_ROOT"/}" >&2
}

# plot_latency CSV PNG TITLE: the histogram stream.sh writes (bucket_ms, then
# one column per tool, % of its measured commits), steps on a log x axis.
plot_latency() {
  plot_need || return 0
  gnuplot <<GP || { echo "plot: gnuplot failed on $2" >&2; return 0; }
set terminal png size 900,540 noenhanced
set output "$2"
set datafile separator ","
set logscale x
set xlabel "commit returned -> line read, ms (log scale); the first bucket also holds lines read before COMMIT returned"
set ylabel "% of the measured commits (10 buckets a decade)"
set title "$3"
set grid
set key top right
plot "$1" using 1:2 with steps lw 2 title columnhead(2), "" using 1:3 with steps lw 2 title columnhead(3)
GP
  echo "plot: ${2#"$BENCH_ROOT"/}" >&2
}

# rss_sample PID T0_NS OUT: appends "seconds,MiB" lines to OUT, the VmRSS of
# PID every ~100 ms, seconds counted from T0_NS (a now_ns), until OUT.stop
# exists or PID is gone. Run it in the background; stop it with rss_stop.
rss_sample() {
  local pid=$1 t0us=$(($2 / 1000)) out=$3 k v _ us
  while [ ! -e "$out.stop" ] && [ -r "/proc/$pid/status" ]; do
    while read -r k v _; do
      if [ "$k" = VmRSS: ]; then
        us=$((${EPOCHREALTIME/./} - t0us))
        printf '%d.%03d,%d.%d\n' $((us / 1000000)) $((us / 1000 % 1000)) $((v / 1024)) $((v % 1024 * 10 / 1024)) >>"$out"
        break
      fi
    done <"/proc/$pid/status" 2>/dev/null || true
    sleep 0.1
  done
}

# rss_stop SAMPLER_PID OUT: stops an rss_sample and waits for it.
rss_stop() {
  touch "$2.stop"
  wait "$1" 2>/dev/null || true
  rm -f "$2.stop"
}
