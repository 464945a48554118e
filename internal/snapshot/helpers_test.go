package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testLog(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

func workload(t testing.TB, name string) string {
	return filepath.Join(pgtest.RepoRoot(t), "workloads", "blog", name)
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// parseConfig reads an indexes: section (the source part is filled in).
func parseConfig(t testing.TB, indexes string) *config.Config {
	t.Helper()
	y := "source:\n  dsn: postgres://x@localhost/x\n  slot: s\n  publication: p\n" + indexes
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, y)
	}
	return cfg
}

func compile(t testing.TB, pool *pgxpool.Pool, cfg *config.Config) *build.Plan {
	t.Helper()
	p, problems, err := build.Compile(ctxT(t), pool, cfg)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	if p == nil {
		var b bytes.Buffer
		build.WriteProblems(&b, problems)
		t.Fatalf("compile: problems:\n%s", b.String())
	}
	return p
}

// loadBlog loads the blog workload at the given sizes and compiles its config.
func loadBlog(t testing.TB, authors, posts, comments string) (*pgtest.DB, *build.Plan) {
	t.Helper()
	db := pgtest.NewDB(t)
	db.LoadFile(t, workload(t, "schema.sql"), map[string]string{"authors": authors, "posts": posts, "comments": comments})
	cfg, err := config.Parse([]byte(readFile(t, workload(t, "flusso.yaml"))))
	if err != nil {
		t.Fatal(err)
	}
	return db, compile(t, db.Pool, cfg)
}

// canonical re-encodes a JSON text with sorted keys and numbers kept as
// written, so two documents compare equal when their JSON values are equal.
func canonical(t testing.TB, s []byte) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("bad JSON %q: %v", s, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// queryDocs runs a query giving (key json, doc json) rows: canonical key -> canonical doc.
func queryDocs(t testing.TB, q build.Querier, sql string) map[string]string {
	t.Helper()
	rows, err := q.Query(ctxT(t), "SELECT key::text, doc::text FROM ("+sql+") AS r")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, d string
		if err := rows.Scan(&k, &d); err != nil {
			t.Fatal(err)
		}
		out[canonical(t, []byte(k))] = canonical(t, []byte(d))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func blogReference(t testing.TB, q build.Querier) map[string]string {
	return queryDocs(t, q, readFile(t, workload(t, "reference.sql")))
}

// line is one decoded output line.
type line struct {
	Index string          `json:"index"`
	Op    string          `json:"op"`
	Key   json.RawMessage `json:"key"`
	ID    string          `json:"id"`
	LSN   string          `json:"lsn"`
	Doc   json.RawMessage `json:"doc"`
}

// readLines decodes every line of the file at path; every line must be
// whole JSON.
func readLines(t testing.TB, path string) []line {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d is not JSON: %v: %q", len(out)+1, err, sc.Text())
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fold applies lines of one index in order: last line per key wins, delete
// removes.
func fold(t testing.TB, lines []line, index string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range lines {
		if l.Index != index {
			continue
		}
		k := canonical(t, l.Key)
		switch l.Op {
		case output.OpUpsert:
			out[k] = canonical(t, l.Doc)
		case output.OpDelete:
			delete(out, k)
		default:
			t.Fatalf("unexpected op %q", l.Op)
		}
	}
	return out
}

// sameDocs reports the differences between got and want (at most a few).
func sameDocs(t testing.TB, got, want map[string]string) {
	t.Helper()
	bad := 0
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("key %s: missing", k)
			bad++
		case g != w:
			t.Errorf("key %s:\n got  %s\n want %s", k, g, w)
			bad++
		}
		if bad > 5 {
			t.Fatalf("... and more (%d documents, %d expected)", len(got), len(want))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("key %s: not in the reference", k)
			bad++
			if bad > 5 {
				t.FailNow()
			}
		}
	}
}

// run is one backfill into the file at path.
type run struct {
	cfg      Config
	store    *state.Store
	snap     Snapshot
	imported int
}

func (r *run) do(t testing.TB, ctx context.Context, db *pgtest.DB, plan *build.Plan, path string) error {
	t.Helper()
	w, err := output.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b := New(r.cfg, plan, db.Pool, w, r.store, testLog(t))
	return b.Run(ctx, r.snap, func() { r.imported++ })
}

// countPerKey fails when a key appears more than once.
func eachKeyOnce(t testing.TB, lines []line) {
	t.Helper()
	seen := map[string]bool{}
	for _, l := range lines {
		k := l.Index + "\x00" + canonical(t, l.Key)
		if seen[k] {
			t.Fatalf("key %s of index %s written twice", l.Key, l.Index)
		}
		seen[k] = true
	}
}
