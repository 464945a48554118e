package snapshot

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// TestBlogMatchesReference backfills the blog workload with several workers
// and small batches: the fold equals workloads/blog/reference.sql, every key
// is written once, and every line carries the snapshot's LSN.
func TestBlogMatchesReference(t *testing.T) {
	db, plan := loadBlog(t, "40", "2000", "9000")
	// A post without author, comments or tags.
	db.Exec(t, `INSERT INTO posts VALUES (100000, NULL, 'lonely', NULL, NULL, 0); ANALYZE posts`)
	want := blogReference(t, db.Pool)

	path := filepath.Join(t.TempDir(), "out.ndjson")
	r := &run{cfg: Config{Workers: 3, BatchSize: 37}}
	if err := r.do(t, ctxT(t), db, plan, path); err != nil {
		t.Fatal(err)
	}
	if r.imported != 1 {
		t.Fatalf("imported called %d times, want 1", r.imported)
	}
	lines := readLines(t, path)
	if len(lines) != len(want) {
		t.Errorf("%d lines, want %d", len(lines), len(want))
	}
	eachKeyOnce(t, lines)
	sameDocs(t, fold(t, lines, "posts"), want)
	lsn, err := pglogrepl.ParseLSN(lines[0].LSN)
	if err != nil || lsn == 0 {
		t.Fatalf("lsn %q: %v", lines[0].LSN, err)
	}
	for _, l := range lines {
		if l.LSN != lines[0].LSN || l.Op != "upsert" || l.Index != "posts" {
			t.Fatalf("line %+v: want an upsert of posts at %s", l, lines[0].LSN)
		}
	}
}

// TestEmptyTable writes nothing, calls imported once, and records the
// index as done.
func TestEmptyTable(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE items (id int PRIMARY KEY, name text)`)
	plan := compile(t, db.Pool, parseConfig(t, "indexes:\n  - name: items\n    table: items\n"))
	path := filepath.Join(t.TempDir(), "out.ndjson")
	store := state.New(t.TempDir(), "s")
	for _, st := range []*state.Store{nil, store} {
		r := &run{cfg: Config{Workers: 4}, store: st}
		if err := r.do(t, ctxT(t), db, plan, path); err != nil {
			t.Fatal(err)
		}
		if r.imported != 1 {
			t.Fatalf("imported called %d times", r.imported)
		}
	}
	if n := len(readLines(t, path)); n != 0 {
		t.Fatalf("%d lines from an empty table", n)
	}
	var rec record
	if ok, err := store.Load(state.BackfillRecord, &rec); err != nil || !ok || !rec.Indexes["items"].Done {
		t.Fatalf("record %+v (found %v, %v): want items done", rec, ok, err)
	}
}

// TestCompositeAndTextKeys backfills a composite (text, int) key and a text
// key with awkward values, with many workers and ranges: each key once,
// fold equals the table.
func TestCompositeAndTextKeys(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `
CREATE TABLE accounts (tenant text, id int, name text, PRIMARY KEY (tenant, id));
INSERT INTO accounts SELECT (ARRAY['a', 'B', 'é', 'a b', 'x:y', ''])[1 + g % 6], g, 'n' || g FROM generate_series(1, 6000) g;
CREATE TABLE words (w text PRIMARY KEY, n int);
INSERT INTO words SELECT md5(g::text) || (ARRAY['', ' ', 'ü', '"', '\'])[1 + g % 5], g FROM generate_series(1, 3000) g;
ANALYZE;`)
	plan := compile(t, db.Pool, parseConfig(t, `indexes:
  - name: accounts
    table: accounts
  - name: words
    table: words
`))
	for _, ix := range plan.Indexes {
		est, err := estimateRows(ctxT(t), db.Pool, ix)
		if err != nil {
			t.Fatal(err)
		}
		if n := rangeCount(est, 4, 23); n < 8 {
			t.Fatalf("index %s: %d ranges: the test wants several", ix.Name(), n)
		}
	}
	path := filepath.Join(t.TempDir(), "out.ndjson")
	r := &run{cfg: Config{Workers: 4, BatchSize: 23}}
	if err := r.do(t, ctxT(t), db, plan, path); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	eachKeyOnce(t, lines)
	sameDocs(t, fold(t, lines, "accounts"), queryDocs(t, db.Pool,
		`SELECT json_build_object('tenant', tenant, 'id', id) AS key, json_build_object('tenant', tenant, 'id', id, 'name', name) AS doc FROM accounts`))
	sameDocs(t, fold(t, lines, "words"), queryDocs(t, db.Pool,
		`SELECT json_build_object('w', w) AS key, json_build_object('w', w, 'n', n) AS doc FROM words`))
	for _, l := range lines {
		if l.Index == "accounts" {
			var want string
			if err := db.Pool.QueryRow(ctxT(t), `SELECT replace(replace(k->>'tenant', '\', '\\'), ':', '\:') || ':' || replace(replace(k->>'id', '\', '\\'), ':', '\:') FROM (SELECT $1::json AS k) s`, string(l.Key)).Scan(&want); err != nil {
				t.Fatal(err)
			}
			if l.ID != want {
				t.Fatalf("id %q, want %q", l.ID, want)
			}
		}
	}
}

// TestRangesChainAndCover checks both ways of cutting ranges (exact
// quantiles and a block sample): the ranges chain, their boundaries
// increase, and together they hold every row exactly once.
func TestRangesChainAndCover(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE t (a int, b text, PRIMARY KEY (a, b));
INSERT INTO t SELECT g / 3, 'k' || (g % 3) FROM generate_series(1, 30000) g;`)
	db.Exec(t, `ANALYZE t`)
	plan := compile(t, db.Pool, parseConfig(t, "indexes:\n  - name: t\n    table: t\n"))
	ix := plan.Indexes[0]
	est, err := estimateRows(ctxT(t), db.Pool, ix)
	if err != nil || est != 30000 {
		t.Fatalf("estimate %d, %v", est, err)
	}
	for _, tc := range []struct {
		name  string
		exact int64
	}{{"exact", exactLimit}, {"sample", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := planRanges(ctxT(t), db.Pool, ix, est, 8, tc.exact)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) < 6 || len(rs) > 8 || !validRanges(rs, 2) {
				t.Fatalf("%d ranges, valid %v: %+v", len(rs), validRanges(rs, 2), rs)
			}
			total := 0
			for i, r := range rs {
				var n int
				cond := "true"
				var args []any
				if r.After != nil {
					cond += " AND (a, b) > ($1::int, $2::text)"
					args = append(args, r.After[0], r.After[1])
				}
				if r.UpTo != nil {
					cond += fmt.Sprintf(" AND (a, b) <= ($%d::int, $%d::text)", len(args)+1, len(args)+2)
					args = append(args, r.UpTo[0], r.UpTo[1])
				}
				if err := db.Pool.QueryRow(ctxT(t), "SELECT count(*) FROM t WHERE "+cond, args...).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					t.Errorf("range %d %+v is empty", i, r)
				}
				if tc.name == "exact" && i < len(rs)-1 && n != 3750 {
					t.Errorf("range %d holds %d rows, want 3750", i, n)
				}
				total += n
			}
			if total != 30000 {
				t.Fatalf("ranges hold %d rows, want 30000", total)
			}
		})
	}
}

// TestImportedCalledOnFailure: a snapshot that cannot be imported fails the
// run, and imported is still called exactly once.
func TestImportedCalledOnFailure(t *testing.T) {
	db, plan := loadBlog(t, "5", "50", "100")
	r := &run{cfg: Config{Workers: 2}, snap: Snapshot{Name: "00000003-0000001B-1", LSN: 1}}
	err := r.do(t, ctxT(t), db, plan, filepath.Join(t.TempDir(), "out.ndjson"))
	if err == nil {
		t.Fatal("a bad snapshot name was accepted")
	}
	if r.imported != 1 {
		t.Fatalf("imported called %d times, want 1", r.imported)
	}
	r = &run{cfg: Config{Indexes: []string{"nope"}}}
	if err := r.do(t, ctxT(t), db, plan, filepath.Join(t.TempDir(), "out.ndjson")); !errors.Is(err, ErrUnknownIndex) || r.imported != 1 {
		t.Fatalf("unknown index: %v (imported %d)", err, r.imported)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = &run{cfg: Config{Workers: 2}}
	if err := r.do(t, ctx, db, plan, filepath.Join(t.TempDir(), "out.ndjson")); !errors.Is(err, context.Canceled) || r.imported != 1 {
		t.Fatalf("cancelled: %v (imported %d)", err, r.imported)
	}
}

// TestEstimateRows: the estimate follows the table's pages since the last
// ANALYZE, and a table analyzed while empty (or never) is counted.
func TestEstimateRows(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE e (id int PRIMARY KEY, pad text); ANALYZE e;
INSERT INTO e SELECT g, repeat('x', 50) FROM generate_series(1, 5000) g;`)
	plan := compile(t, db.Pool, parseConfig(t, "indexes:\n  - name: e\n    table: e\n"))
	ix := plan.Indexes[0]
	check := func(step string, lo, hi int64) {
		t.Helper()
		n, err := estimateRows(ctxT(t), db.Pool, ix)
		if err != nil {
			t.Fatal(err)
		}
		if n < lo || n > hi {
			t.Fatalf("%s: estimate %d, want %d..%d", step, n, lo, hi)
		}
	}
	check("analyzed while empty", 5000, 5000)
	db.Exec(t, `ANALYZE e`)
	check("analyzed", 5000, 5000)
	db.Exec(t, `INSERT INTO e SELECT g, repeat('x', 50) FROM generate_series(5001, 10000) g`)
	check("grown since", 9000, 11000)
	db.Exec(t, `TRUNCATE e`)
	check("emptied", 0, 0)
}

// TestRangeCount: a few ranges per worker, more for big tables, and never
// fewer than four batches a range.
func TestRangeCount(t *testing.T) {
	for _, tc := range []struct {
		estimate       int64
		workers, batch int
		want           int
	}{
		{0, 4, 500, 1},
		{1000, 4, 500, 1},
		{200_000, 2, 500, 8},
		{200_000, 8, 500, 32},
		{200_000, 8, 10_000, 5},
		{50_000_000, 2, 500, 50},
		{5_000_000_000, 2, 500, 1024},
	} {
		if got := rangeCount(tc.estimate, tc.workers, tc.batch); got != tc.want {
			t.Errorf("rangeCount(%d, %d, %d) = %d, want %d", tc.estimate, tc.workers, tc.batch, got, tc.want)
		}
	}
}
