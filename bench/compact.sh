#!/usr/bin/env bash
# Compact lines, side by side in one run (issue 15): the backfill of the blog
# workload by this tree's flusso-pg and by the one built from REV (before the
# lines were compacted), alternating, RUNS times each: bytes per line and
# seconds (wall, and the process's own CPU, steadier on a shared machine),
# and a check that both outputs decode to the same documents.
# Plot (bench/lib.sh, PLOT_DIR=docs/img): compact.csv/.png, bytes per line.
# Usage: bench/compact.sh [REV=3bee2a5] [POSTS=50000] [COMMENTS=250000] [RUNS=3]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
REV=${1:-3bee2a5}
POSTS=${2:-50000}
COMMENTS=${3:-250000}
RUNS=${4:-3}

work=$(mktemp -d /tmp/flusso-bench-compact.XXXXXX)
chmod 755 "$work"
trap 'pg_stop; rm -rf "$work"' EXIT
pg_start "$work/pg"
build_flusso "$work/new"
mkdir "$work/src"
git -C "$BENCH_ROOT" archive "$REV" | tar -x -C "$work/src"
(cd "$work/src" && go build -o "$work/old" ./cmd/flusso-pg)

blog_load blog "$POSTS" "$COMMENTS" 2000
psql -q -d blog -c "VACUUM ANALYZE" >/dev/null
blog=$(cat "$BENCH_ROOT/workloads/blog/flusso.yaml")
cat >"$work/flusso.yaml" <<YAML
source: {dsn: "$(dsn blog)"}
log: {level: warn}
indexes:${blog#*$'\n'indexes:}
YAML

for run in $(seq "$RUNS"); do
  for b in old new; do
    t0=$(now_ns)
    /usr/bin/time -f "%U %S" -o "$work/$b.cpu" "$work/$b" backfill --config "$work/flusso.yaml" --workers 1 --output "$work/$b.ndjson" 2>"$work/$b.err"
    t1=$(now_ns)
    echo "$b $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') $(awk '{ print $1 + $2 }' "$work/$b.cpu")" >>"$work/times"
    [ "$run" = "$RUNS" ] || rm "$work/$b.ndjson"
  done
done
csv=$(plot_csv compact)
echo "build,bytes per line" >"$csv"
for b in old new; do
  awk -v b="$([ $b = old ] && echo "before ($REV)" || echo "compact (this tree)")" -v c="$(wc -c <"$work/$b.ndjson")" -v l="$(wc -l <"$work/$b.ndjson")" \
    'BEGIN { printf "%s,%.1f\n", b, c / l }' >>"$csv"
done
plot_bars "$csv" "$PLOT_DIR/compact.png" "bytes per line, blog backfill ($POSTS posts, $COMMENTS comments), before and after compaction ($(date -u +%F))" "bytes per line"
python3 - "$work" <<'PY'
import json, statistics, sys
w = sys.argv[1]
t = {"old": [], "new": []}
cpu = {"old": [], "new": []}
for line in open(w + "/times"):
    b, s, c = line.split()
    t[b].append(float(s))
    cpu[b].append(float(c))
docs, size = {}, {}
for b in ("old", "new"):
    lines = open(w + "/" + b + ".ndjson", "rb").read().splitlines()
    size[b] = sum(len(l) + 1 for l in lines) / len(lines)
    docs[b] = {json.loads(l)["id"]: json.loads(l).get("doc") for l in lines}
same = docs["old"] == docs["new"]
print(f"lines: {len(docs['new'])}, same documents: {same}")
print(f"bytes per line: before {size['old']:.0f}, compact {size['new']:.0f} ({size['new'] / size['old']:.3f}x)")
mo, mn = statistics.median(t["old"]), statistics.median(t["new"])
print(f"backfill seconds, median of {len(t['new'])}: before {mo:.3f}, compact {mn:.3f} ({mn / mo:.3f}x); runs before {t['old']}, compact {t['new']}")
co, cn = statistics.median(cpu["old"]), statistics.median(cpu["new"])
print(f"flusso-pg CPU seconds (user+sys), median: before {co:.3f}, compact {cn:.3f} ({cn / co:.3f}x); runs before {cpu['old']}, compact {cpu['new']}")
sys.exit(0 if same else 1)
PY
