package follow_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// items is a one-table index whose documents a config change can drop.
func itemsConfig(t *testing.T, db *pgtest.DB, dir, where string) string {
	t.Helper()
	w := ""
	if where != "" {
		w = fmt.Sprintf("\n    where: %q", where)
	}
	yaml := fmt.Sprintf(`source: {dsn: %q, slot: %s, publication: pub_%s}
state: {dir: %s}
backfill: {workers: 2, batch_size: 7}
indexes:
  - name: items
    table: public.items%s
`, db.DSN, db.Name, db.Name, filepath.Join(dir, "state"), w)
	path := filepath.Join(dir, "flusso.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ids returns the sorted ids of rows of items matching cond.
func ids(t *testing.T, db *pgtest.DB, cond string) []string {
	t.Helper()
	rows, err := db.Pool.Query(t.Context(), "SELECT id::text FROM items WHERE "+cond+" ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func foldIDs(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for id := range fold(t, out) {
		got = append(got, id)
	}
	sort.Strings(got)
	return got
}

// rebuildLines returns the rebuild_start and rebuild_done lines of out, in order.
func rebuildLines(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for _, text := range wholeLines(t, out) {
		var l struct{ Op string }
		if err := json.Unmarshal(text, &l); err != nil {
			t.Fatalf("%s: a line is not JSON: %v", out, err)
		}
		if strings.HasPrefix(l.Op, "rebuild_") {
			got = append(got, l.Op)
		}
	}
	return got
}

func waitIDs(t *testing.T, db *pgtest.DB, out, cond string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, want := foldIDs(t, out), ids(t, db, cond)
		if strings.Join(got, ",") == strings.Join(want, ",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fold holds %d documents %v, want %d %v", len(got), got, len(want), want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Every backfill of an index is a rebuild: the first, the one after the
// index's config changed (here a where that drops documents: without
// rebuild_done they would stay in the fold for ever), and the one after
// --resync (rows deleted while the slot was gone); the fold with
// rebuild_done semantics equals the database after each.
func TestFollowBackfillsAreRebuilds(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE items (id int PRIMARY KEY, keep bool NOT NULL, note text);
		INSERT INTO items SELECT g, g % 3 <> 0, 'item ' || g FROM generate_series(1, 60) g`)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")

	cfg := itemsConfig(t, db, dir, "")
	p := start(t, out, "follow", "--config", cfg)
	waitIDs(t, db, out, "true")
	if got := rebuildLines(t, out); strings.Join(got, ",") != "rebuild_start,rebuild_done" {
		t.Fatalf("first backfill: rebuild lines %v, want one start and one done", got)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)

	// A config change that drops the documents of a third of the rows.
	cfg = itemsConfig(t, db, dir, "keep")
	p = start(t, out, "follow", "--config", cfg)
	waitIDs(t, db, out, "keep")
	db.Exec(t, "UPDATE items SET note = 'after' WHERE id = 1")
	waitFor(t, 30*time.Second, func() bool { return countLines(t, out, `"after"`) > 0 })
	if got := rebuildLines(t, out); len(got) != 4 {
		t.Fatalf("after a config change: rebuild lines %v, want a second start and done", got)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)

	// Rows deleted while nothing follows, then --resync: the slot that saw
	// no delete is gone, and the rebuild drops them.
	db.Exec(t, "DELETE FROM items WHERE id BETWEEN 10 AND 20")
	p = start(t, out, "follow", "--config", cfg, "--resync")
	waitIDs(t, db, out, "keep")
	if got := rebuildLines(t, out); len(got) != 6 {
		t.Fatalf("after --resync: rebuild lines %v, want a third start and done", got)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)

	// A plain restart backfills nothing: no rebuild lines.
	p = start(t, out, "follow", "--config", cfg)
	db.Exec(t, "UPDATE items SET note = 'restart' WHERE id = 2")
	waitFor(t, 30*time.Second, func() bool { return countLines(t, out, `"restart"`) > 0 })
	if got := rebuildLines(t, out); len(got) != 6 {
		t.Fatalf("after a plain restart: rebuild lines %v, want none new", got)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A backfill interrupted and resumed continues its rebuild: one
// rebuild_start, one rebuild_done, and the fold equals the database.
func TestFollowResumedBackfillContinuesItsRebuild(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE items (id int PRIMARY KEY, keep bool NOT NULL, note text);
		INSERT INTO items SELECT g, true, repeat('x', 200) FROM generate_series(1, 30000) g`)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	cfg := itemsConfig(t, db, dir, "")
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), "workers: 2, batch_size: 7", "workers: 1, batch_size: 5", 1)), 0o644)
	p := start(t, out, "follow", "--config", cfg)
	waitFor(t, 60*time.Second, func() bool { return countLines(t, out) > 2000 })
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if n := countLines(t, out); n >= 30000 {
		t.Fatalf("the backfill finished (%d lines) before the stop: the test resumes nothing", n)
	}
	p = start(t, out, "follow", "--config", cfg)
	waitIDs(t, db, out, "true")
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	if got := rebuildLines(t, out); strings.Join(got, ",") != "rebuild_start,rebuild_done" {
		t.Fatalf("a resumed backfill: rebuild lines %v, want one start and one done", got)
	}
}

// A TRUNCATE of a table the index reads (not its root) rebuilds the index:
// every document again, between a rebuild_start and a rebuild_done at the
// truncate's LSN; the fold equals the database.
func TestFollowTruncateOfAChildIsARebuild(t *testing.T) {
	db := blog(t, 5, 40, 80)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)
	before := countLines(t, out)
	db.Exec(t, "TRUNCATE post_tags")
	waitFold(t, db, out, 30*time.Second)
	waitFor(t, 30*time.Second, func() bool { return len(rebuildLines(t, out)) == 4 })
	lines := readLines(t, out)[before:]
	var ops []string
	for _, l := range lines {
		var v struct{ Op, LSN string }
		json.Unmarshal([]byte(l), &v)
		ops = append(ops, v.Op+"@"+v.LSN)
	}
	if len(ops) != 42 || !strings.HasPrefix(ops[0], "rebuild_start@") || !strings.HasPrefix(ops[41], "rebuild_done@") {
		t.Fatalf("after TRUNCATE post_tags: %d lines %v, want rebuild_start, 40 upserts, rebuild_done", len(ops), ops)
	}
	lsn := strings.TrimPrefix(ops[0], "rebuild_start@")
	for _, o := range ops {
		if !strings.HasSuffix(o, "@"+lsn) {
			t.Fatalf("line %s: every line of the rebuild carries the truncate's LSN %s", o, lsn)
		}
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}
