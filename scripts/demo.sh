#!/usr/bin/env bash
# The 30-second demo (make demo): a throwaway Postgres loaded with the blog
# workload, `flusso-pg follow` writing NDJSON, a few changes made with psql, and
# the lines they cause shown as they come. Everything lives in a temporary
# folder that is removed on exit (KEEP=1 keeps it).
#
# Server binaries are found where the tests find them: $FLUSSO_PG_BIN,
# .cache/pg/$FLUSSO_PG_VERSION/bin (make pg PG=17), pg_config --bindir,
# /usr/lib/postgresql/*/bin (newest first), .cache/pg/*/bin. psql comes from
# the same folder or from PATH. As root, the server runs as the postgres user.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [ -t 1 ]; then bold=$'\033[1m' cyan=$'\033[36m' plain=$'\033[0m'; else bold="" cyan="" plain=""; fi
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$plain"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

has_server() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]; }

newest_first() {
  local d
  for d in "$@"; do [ -d "$d" ] && echo "$(basename "$(dirname "$d")") $d"; done | sort -nr | cut -d' ' -f2-
}

find_bin() {
  if [ -n "${FLUSSO_PG_BIN:-}" ]; then
    has_server "$FLUSSO_PG_BIN" || die "FLUSSO_PG_BIN=$FLUSSO_PG_BIN holds no initdb, pg_ctl and postgres"
    echo "$FLUSSO_PG_BIN"; return
  fi
  if [ -n "${FLUSSO_PG_VERSION:-}" ]; then
    has_server "$root/.cache/pg/$FLUSSO_PG_VERSION/bin" || die "FLUSSO_PG_VERSION=$FLUSSO_PG_VERSION but .cache/pg/$FLUSSO_PG_VERSION is missing: run make pg PG=$FLUSSO_PG_VERSION"
    echo "$root/.cache/pg/$FLUSSO_PG_VERSION/bin"; return
  fi
  local d
  if command -v pg_config >/dev/null && d=$(pg_config --bindir 2>/dev/null) && has_server "$d"; then
    echo "$d"; return
  fi
  # Newest major first: system packages, then the .cache/pg servers.
  for d in $(newest_first /usr/lib/postgresql/*/bin) $(newest_first "$root"/.cache/pg/*/bin); do
    if has_server "$d"; then echo "$d"; return; fi
  done
  die "no PostgreSQL server binaries found: apt-get install -y postgresql, or make pg PG=17, or set FLUSSO_PG_BIN"
}

bin=$(find_bin)
if [ -x "$bin/psql" ]; then psql_bin=$bin/psql
elif command -v psql >/dev/null; then psql_bin=$(command -v psql)
else die "psql is needed: apt-get install -y postgresql-client"
fi
[ -x /usr/local/go/bin/go ] && PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go is needed to build flusso-pg (https://go.dev/dl/)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/flusso-demo.XXXXXX")
chmod 755 "$tmp"
follow_pid="" tail_pid="" started=""

# Postgres refuses to run as root: run the server as the postgres user then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to run the server as (useradd -r postgres)"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null || true
  if [ -n "$follow_pid" ] && kill -0 "$follow_pid" 2>/dev/null; then
    kill -TERM "$follow_pid" 2>/dev/null || true
    wait "$follow_pid" 2>/dev/null || true
  fi
  [ -n "$started" ] && as_pg "$bin/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1 || true
  if [ "${KEEP:-}" = 1 ]; then
    echo "demo: kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port: nothing answers on it.
port=""
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || die "no free port found"

say "starting a throwaway PostgreSQL ($("$bin/postgres" --version)) on port $port"
[ "$(id -u)" -eq 0 ] && chown postgres: "$tmp"
as_pg "$bin/initdb" -D "$tmp/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$tmp/initdb.log" 2>&1 ||
  { cat "$tmp/initdb.log" >&2; die "initdb failed"; }
cat >>"$tmp/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$tmp'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
EOF
as_pg "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/postgres.log" -w -t 60 start >/dev/null ||
  { cat "$tmp/postgres.log" >&2; die "the server did not start"; }
started=1

dsn="postgres://postgres@127.0.0.1:$port/blog?sslmode=disable"
sql() { "$psql_bin" "$dsn" -X -q -v ON_ERROR_STOP=1 "$@"; }

say "loading the blog workload: 50 authors, 200 posts, 1000 comments, tags"
"$psql_bin" "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" -X -q -c 'CREATE DATABASE blog'
sql -v authors=50 -v posts=200 -v comments=1000 -f workloads/blog/schema.sql

say "building flusso-pg"
go build -o "$tmp/flusso-pg" \
  -ldflags "-X main.version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)" ./cmd/flusso-pg

# The blog workload's config, pointed at this server, with its state here.
sed "s#^  dsn: .*#  dsn: $dsn#" workloads/blog/flusso.yaml >"$tmp/flusso.yaml"
printf 'state:\n  dir: %s/state\n' "$tmp" >>"$tmp/flusso.yaml"
say "the index (workloads/blog/flusso.yaml)"
sed -n '/^indexes:/,$p' workloads/blog/flusso.yaml

# Lines are long: shorten the "body" strings and cut a line at 600 characters.
pretty() { sed -u -E -e 's/("body" ?: ?"[^"]{16})[^"]+"/\1..."/g' -e 's/^(.{600}).+$/\1 .../'; }

out=$tmp/out.ndjson
: >"$out"
say "flusso-pg follow --config flusso.yaml   (stdout: NDJSON, stderr: $tmp/follow.log)"
"$tmp/flusso-pg" follow --config "$tmp/flusso.yaml" >"$out" 2>"$tmp/follow.log" &
follow_pid=$!

failed() {
  echo "--- follow's log:" >&2
  tail -n 30 "$tmp/follow.log" >&2
  die "$1"
}

# The backfill writes one line per post (200) before the stream starts.
for _ in $(seq 120); do
  [ "$(wc -l <"$out")" -ge 200 ] && break
  kill -0 "$follow_pid" 2>/dev/null || failed "follow stopped during the backfill"
  sleep 0.5
done
lines=$(wc -l <"$out")
[ "$lines" -ge 200 ] || failed "the backfill wrote $lines of 200 lines in 60s"
say "backfill: $lines lines, one per post; the first three:"
head -n 3 "$out" | pretty

say "now following; each change below prints the lines it causes"
tail -n 0 --pid="$follow_pid" -f "$out" | pretty &
tail_pid=$!
sleep 1

change() {
  printf '\n%s  %s%s\n' "$cyan" "$1" "$plain"
  sql -c "$1"
  sleep 1.5
}
change "UPDATE posts SET title = 'Hello, flusso' WHERE id = 1"
change "INSERT INTO comments (id, post_id, user_id, body, score) VALUES (5001, 1, 7, 'first!', 12)"
change "UPDATE comments SET post_id = 2 WHERE id = 5001   -- moves the comment: posts 1 and 2"
change "UPDATE tags SET name = 'postgres' WHERE id = 3   -- every post tagged tag3"
change "DELETE FROM posts WHERE id = 3"
sleep 2

kill -0 "$follow_pid" 2>/dev/null || failed "follow stopped while streaming"
say "stopping follow with SIGTERM (it finishes the transaction in hand, flushes, confirms, exits 0)"
kill -TERM "$follow_pid"
code=0
wait "$follow_pid" || code=$?
follow_pid=""
kill "$tail_pid" 2>/dev/null || true
tail_pid=""
[ "$code" -eq 0 ] || failed "follow exited with code $code"

total=$(wc -l <"$out")
say "done: $total lines ($lines from the backfill, $((total - lines)) from the stream), follow exited 0"
