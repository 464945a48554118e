package follow_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// Under source.provision: auto, a publication that no longer fits is
// repaired, not a stop: actions turned off are published again and every
// index rebuilt (the deletes meanwhile never arrived); a captured table
// dropped and created again is put in the publication and what reads it
// rebuilt (DROP TABLE sends no deletes; the new table's rows were never in
// the stream). The fold equals the document query after each, and the
// stream goes on.
func TestFollowPublicationRepaired(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, columnsSchema)
	db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT") // the key map's entries must follow too
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	cfg := columnsConfig(t, db, dir, "auto")
	p := start(t, out, "follow", "--config", cfg)
	waitColumnsFold(t, db, out, "the backfill")
	pub := "pub_" + db.Name

	n := len(readLines(t, out))
	db.Exec(t, "ALTER PUBLICATION "+pub+" SET (publish = 'insert, update')")
	db.Exec(t, "DELETE FROM comments WHERE id <= 3; DELETE FROM posts WHERE id = 8")
	waitColumnsFold(t, db, out, "actions turned off")
	waitFor(t, 20*time.Second, func() bool {
		ops := opsSince(t, out, n)
		return len(ops) >= 2 && ops[len(ops)-1] == "posts:rebuild_done"
	})
	var all bool
	db.Pool.QueryRow(t.Context(), "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate FROM pg_publication WHERE pubname = $1", pub).Scan(&all)
	if !all {
		t.Fatal("the publication's actions were not published again")
	}
	db.Exec(t, "DELETE FROM comments WHERE id = 4")
	waitColumnsFold(t, db, out, "a delete after the repair")

	n = len(readLines(t, out))
	db.Exec(t, `DROP TABLE comments; CREATE TABLE comments (id int PRIMARY KEY, post_id int, body text);
		INSERT INTO comments VALUES (1, 2, 'new 1'), (2, 2, 'new 2'), (3, 5, 'new 3')`)
	waitColumnsFold(t, db, out, "a table dropped and created again")
	waitFor(t, 20*time.Second, func() bool {
		ops := opsSince(t, out, n)
		return len(ops) >= 2 && ops[len(ops)-1] == "posts:rebuild_done"
	})
	// The new table's changes arrive, its deletes and moves resolved.
	db.Exec(t, "INSERT INTO comments VALUES (4, 1, 'after')")
	db.Exec(t, "UPDATE comments SET post_id = 6 WHERE id = 1")
	db.Exec(t, "DELETE FROM comments WHERE id = 2")
	waitColumnsFold(t, db, out, "changes to the new table")
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}
