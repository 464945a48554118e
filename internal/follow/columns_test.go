package follow_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// columnsReference: posts with every column (its columns left to the
// default), its comments with the two listed.
const columnsReference = `
SELECT p.id::text, (to_jsonb(p) || jsonb_build_object('comments',
  coalesce((SELECT jsonb_agg(jsonb_build_object('id', c.id, 'body', c.body) ORDER BY c.id) FROM comments c WHERE c.post_id = p.id), '[]')))::text
FROM posts p`

// columnsConfig: posts with its columns left to the default and its
// comments with two listed.
func columnsConfig(t *testing.T, db *pgtest.DB, dir, provision string) string {
	t.Helper()
	yaml := fmt.Sprintf(`source: {dsn: %q, slot: %s, publication: pub_%s, provision: %s}
state: {dir: %s}
capture: {status_interval: 200ms}
indexes:
  - name: posts
    table: public.posts
    relations:
      - {name: comments, table: public.comments, kind: has_many, join: {id: post_id}, columns: [id, body]}
`, db.DSN, db.Name, db.Name, provision, filepath.Join(dir, "state"))
	cfg := filepath.Join(dir, "flusso.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

const columnsSchema = `CREATE TABLE posts (id int PRIMARY KEY, title text);
	INSERT INTO posts SELECT g, 'p' || g FROM generate_series(1, 8) g;
	CREATE TABLE comments (id int PRIMARY KEY, post_id int, body text);
	ALTER TABLE comments REPLICA IDENTITY FULL;
	INSERT INTO comments SELECT g, g % 8 + 1, 'c' || g FROM generate_series(1, 20) g;
	CREATE TABLE other (id int PRIMARY KEY)`

func waitColumnsFold(t *testing.T, db *pgtest.DB, out, step string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		want := map[string]any{}
		rows, err := db.Pool.Query(t.Context(), columnsReference)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, doc string
			rows.Scan(&id, &doc)
			want[id] = decode(t, []byte(doc))
		}
		rows.Close()
		got := fold(t, out)
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the fold differs from the document query:\n%s", step, diff(got, want))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A column added to (or dropped from) a table whose columns are left to
// the default changes every document: the plan is compiled again and the
// index rebuilt inline, every document in the new shape. A column of a
// table whose columns are listed, or of a table no index reads, comes and
// goes with no rebuild and no stop. A column added while flusso-pg is
// stopped backfills the index again at the next start.
func TestFollowDefaultColumnsThatChangeRebuild(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, columnsSchema)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	cfg := columnsConfig(t, db, dir, "auto")
	p := start(t, out, "follow", "--config", cfg)
	waitColumnsFold(t, db, out, "the backfill")

	steps := []struct {
		name, sql string
		rebuild   bool
	}{
		{"a column added to the default list", "ALTER TABLE posts ADD COLUMN extra text DEFAULT 'dflt'", true},
		{"a column added to a listed table", "ALTER TABLE comments ADD COLUMN score int DEFAULT 7", false},
		{"a column added elsewhere", "ALTER TABLE other ADD COLUMN x int", false},
		{"a column dropped from a listed table", "ALTER TABLE comments DROP COLUMN score", false},
		{"a column dropped from the default list", "ALTER TABLE posts DROP COLUMN extra", true},
	}
	for i, s := range steps {
		n := len(readLines(t, out))
		db.Exec(t, s.sql)
		// Changes right after the DDL, before flusso-pg looks at the catalog.
		db.Exec(t, fmt.Sprintf("UPDATE posts SET title = 'step %d' WHERE id = 1; INSERT INTO comments VALUES (%d, 2, 'new')", i, 100+i))
		waitColumnsFold(t, db, out, s.name)
		if s.rebuild {
			waitFor(t, 20*time.Second, func() bool {
				ops := opsSince(t, out, n)
				return len(ops) == 2 && ops[1] == "posts:rebuild_done"
			})
		} else {
			time.Sleep(1500 * time.Millisecond) // more than one look at the catalog
			if ops := opsSince(t, out, n); len(ops) != 0 {
				t.Fatalf("after %s: lines %v, want no rebuild", s.name, ops)
			}
		}
	}

	// Added while stopped: the next start backfills the index again; a
	// plain restart after it backfills nothing.
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	db.Exec(t, "ALTER TABLE posts ADD COLUMN later int DEFAULT 3")
	n := len(readLines(t, out))
	p = start(t, out, "follow", "--config", cfg)
	waitColumnsFold(t, db, out, "a column added while stopped")
	if ops := opsSince(t, out, n); !reflect.DeepEqual(ops, []string{"posts:rebuild_start", "posts:rebuild_done"}) {
		t.Fatalf("after a column added while stopped: lines %v, want one rebuild", ops)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	n = len(readLines(t, out))
	p = start(t, out, "follow", "--config", cfg)
	db.Exec(t, "UPDATE posts SET title = 'restart' WHERE id = 2")
	waitColumnsFold(t, db, out, "a plain restart")
	if ops := opsSince(t, out, n); len(ops) != 0 {
		t.Fatalf("after a plain restart: lines %v, want none", ops)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A table someone removed from the publication: under provision auto it is
// added back, and the index that reads it is rebuilt inline (the changes
// made meanwhile never arrived): the fold equals the document query and
// the stream goes on. Under provision off the clear stop names the fix.
func TestFollowTableBackInThePublication(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, columnsSchema)
	// The default identity: deletes and moves of comments are resolved
	// through the key map, which must learn the rows written while out.
	db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	cfg := columnsConfig(t, db, dir, "auto")
	p := start(t, out, "follow", "--config", cfg)
	waitColumnsFold(t, db, out, "the backfill")
	n := len(readLines(t, out))
	pub := "pub_" + db.Name
	db.Exec(t, "ALTER PUBLICATION "+pub+" DROP TABLE comments")
	db.Exec(t, "DELETE FROM comments WHERE id <= 5; INSERT INTO comments VALUES (200, 3, 'while out')")
	waitColumnsFold(t, db, out, "the table back in the publication")
	if ops := opsSince(t, out, n); !reflect.DeepEqual(ops, []string{"posts:rebuild_start", "posts:rebuild_done"}) {
		t.Fatalf("lines %v, want one rebuild of posts", ops)
	}
	var back bool
	db.Pool.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'comments')", pub).Scan(&back)
	if !back {
		t.Fatal("comments is not back in the publication")
	}
	db.Exec(t, "INSERT INTO comments VALUES (201, 4, 'after')")
	waitColumnsFold(t, db, out, "a change after it")
	// The row inserted while out is in the key map again: its move and its
	// delete find the post it was under.
	db.Exec(t, "UPDATE comments SET post_id = 5 WHERE id = 200")
	waitColumnsFold(t, db, out, "a move of a row inserted while out")
	db.Exec(t, "DELETE FROM comments WHERE id = 200")
	waitColumnsFold(t, db, out, "a delete of a row inserted while out")
	p.stop(t, syscall.SIGTERM, 10*time.Second)

	cfg = columnsConfig(t, db, dir, "off")
	p = start(t, out, "follow", "--config", cfg)
	db.Exec(t, "UPDATE posts SET title = 'x' WHERE id = 1")
	waitColumnsFold(t, db, out, "a restart")
	db.Exec(t, "ALTER PUBLICATION "+pub+" DROP TABLE comments")
	select {
	case err := <-p.done:
		p.done <- err // the cleanup waits for it too
	case <-time.After(20 * time.Second):
		t.Fatal("provision off: follow did not stop when comments left the publication")
	}
	if code := p.cmd.ProcessState.ExitCode(); code == 0 {
		t.Fatal("provision off: exit code 0")
	}
	for _, want := range []string{"no longer publishes table public.comments", "ALTER PUBLICATION " + pub + " ADD TABLE public.comments"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Fatalf("provision off: stderr lacks %q:\n%s", want, tailString(p.stderr.String(), 2000))
		}
	}
}

// A table dropped from the publication while flusso-pg is stopped: under
// provision auto the next start adds it back and rebuilds the index that
// reads it (its changes meanwhile never reached the slot's stream).
func TestFollowTableBackInThePublicationAtStart(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, columnsSchema)
	db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	cfg := columnsConfig(t, db, dir, "auto")
	p := start(t, out, "follow", "--config", cfg)
	waitColumnsFold(t, db, out, "the backfill")
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	db.Exec(t, "ALTER PUBLICATION pub_"+db.Name+" DROP TABLE comments")
	db.Exec(t, "DELETE FROM comments WHERE id <= 5; UPDATE comments SET body = 'while out' WHERE id = 6; INSERT INTO comments VALUES (300, 2, 'while out')")
	n := len(readLines(t, out))
	p = start(t, out, "follow", "--config", cfg)
	waitColumnsFold(t, db, out, "a start with the table out of the publication")
	if ops := opsSince(t, out, n); !reflect.DeepEqual(ops, []string{"posts:rebuild_start", "posts:rebuild_done"}) {
		t.Fatalf("lines %v, want one rebuild of posts", ops)
	}
	db.Exec(t, "DELETE FROM comments WHERE id = 300")
	waitColumnsFold(t, db, out, "a delete of a row inserted while out")
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}
