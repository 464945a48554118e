package wal

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Schema and publication changes under a running capture (issue 21): the
// ones capture cannot follow stop Run, within seconds, naming the table,
// the column and the fix; unused columns come and go.

// stopsWith waits for Run to end with an error matching target whose
// message holds every one of words, with no transaction handed out first.
func stopsWith(t *testing.T, r *running, target error, words ...string) {
	t.Helper()
	began := time.Now()
	if txn := r.pop(); txn != nil {
		t.Fatalf("a transaction was handed out after the change: %v", txnText(t, txn))
	}
	var err error
	select {
	case batch := <-r.out:
		t.Fatalf("a transaction was handed out after the change: %v", txnText(t, batch[0]))
	case err = <-r.done:
		r.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop within 20s")
	}
	if !errors.Is(err, target) {
		t.Fatalf("run: %v, want %v", err, target)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("run: %q does not say %q", err, w)
		}
	}
	if d := time.Since(began); d > 15*time.Second {
		t.Fatalf("stopped after %s", d)
	}
	t.Logf("stopped with: %v", err)
}

// A child's replica identity lowered from FULL to DEFAULT while following:
// its old rows no longer carry the column toward the parent, so a delete
// could not say which document held the row. Capture stops at the Relation
// message, before that delete is handed out.
func TestReplicaIdentityLowered(t *testing.T) {
	f := newFixture(t, `CREATE TABLE child (id int PRIMARY KEY, parent_id int, note text);
		ALTER TABLE child REPLICA IDENTITY FULL`, "child", map[change.Table][]string{tbl("child"): {"id", "parent_id"}})
	f.cfg.OldColumns = map[change.Table][]string{tbl("child"): {"id", "parent_id"}}
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO child VALUES (1, 10, 'a'), (2, 20, 'b')`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.child new[1,10]", "I public.child new[2,20]"})
	f.db.Exec(t, `DELETE FROM child WHERE id = 1`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"D public.child old[1,10]"})

	f.db.Exec(t, `ALTER TABLE child REPLICA IDENTITY DEFAULT`)
	f.db.Exec(t, `DELETE FROM child WHERE id = 2`)
	stopsWith(t, r, ErrSchemaChanged, "public.child", `column "parent_id"`, "DEFAULT", "ALTER TABLE public.child REPLICA IDENTITY FULL", "--resync")
}

// Columns nobody carries are added, dropped and retyped without a stop; a
// carried column retyped stops capture, naming the old and the new type.
func TestColumnRetyped(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, b int, extra text)`, "t",
		map[change.Table][]string{tbl("t"): {"id", "b"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1, 1, 'x')`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.t new[1,1]"})
	for i, ddl := range []string{
		`ALTER TABLE t ADD COLUMN more int`,
		`ALTER TABLE t DROP COLUMN extra`,
		`ALTER TABLE t ALTER COLUMN more TYPE text`,
	} {
		f.db.Exec(t, ddl)
		f.db.Exec(t, `INSERT INTO t (id, b) VALUES ($1, $1)`, i+2)
		txn := r.next(10 * time.Second)
		equal(t, txnText(t, txn), []string{"I public.t new[" + itoa(i+2) + "," + itoa(i+2) + "]"})
		c.Confirm(txn.EndLSN)
		txn.Release()
	}
	f.db.Exec(t, `ALTER TABLE t ALTER COLUMN b TYPE bigint`)
	f.db.Exec(t, `INSERT INTO t (id, b) VALUES (9, 9)`)
	stopsWith(t, r, ErrSchemaChanged, "public.t", `column "b"`, "int4", "int8", "--resync")
}

// A carried column dropped stops capture with ErrColumnMissing.
func TestCarriedColumnDropped(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, b int)`, "t",
		map[change.Table][]string{tbl("t"): {"id", "b"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1, 1)`)
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `ALTER TABLE t DROP COLUMN b`)
	f.db.Exec(t, `INSERT INTO t VALUES (2)`)
	stopsWith(t, r, ErrColumnMissing, "public.t", `column "b"`, "--resync")
}

// A captured table renamed (the same relation id under a new name) stops
// capture rather than dropping its changes as another table's.
func TestTableRenamed(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `ALTER TABLE t RENAME TO t2`)
	f.db.Exec(t, `INSERT INTO t2 VALUES (2)`)
	stopsWith(t, r, ErrSchemaChanged, "table public.t:", "renamed to public.t2", "ALTER TABLE public.t2 RENAME TO t", "--resync")
}

// A captured table dropped from the publication stops capture with the
// ALTER PUBLICATION that fixes it.
func TestTableLeftPublication(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)`, "t, u",
		map[change.Table][]string{tbl("t"): {"id"}, tbl("u"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `ALTER PUBLICATION pub DROP TABLE u`)
	stopsWith(t, r, ErrPublicationChanged, "publication pub", "table public.u", "ALTER PUBLICATION pub ADD TABLE public.u; then run with --resync")
}

// A captured table dropped from the publication just before Open (after
// provision looked) is required all the same: capture stops naming it.
func TestTableLeftPublicationBeforeOpen(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)`, "t, u",
		map[change.Table][]string{tbl("t"): {"id"}, tbl("u"): {"id"}})
	f.db.Exec(t, `ALTER PUBLICATION pub DROP TABLE u`)
	c, st := f.open()
	r := run(t, c, st, 4)
	stopsWith(t, r, ErrPublicationChanged, "publication pub", "table public.u", "ALTER PUBLICATION pub ADD TABLE public.u; then run with --resync")
}

// An action turned off in the publication stops capture with the fix.
func TestPublicationActionOff(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `ALTER PUBLICATION pub SET (publish = 'insert, update')`)
	stopsWith(t, r, ErrPublicationChanged, "no longer publishes delete, truncate",
		"ALTER PUBLICATION pub SET (publish = 'insert, update, delete, truncate'); then run with --resync")
}

func itoa(i int) string { return strconv.Itoa(i) }

// A captured table dropped (here: and created again, a new table the
// publication does not have) stops capture: DROP TABLE sends no deletes.
func TestCapturedTableDropped(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)`, "t, u",
		map[change.Table][]string{tbl("t"): {"id"}, tbl("u"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO u VALUES (1)`)
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `DROP TABLE u; CREATE TABLE u (id int PRIMARY KEY)`)
	stopsWith(t, r, ErrPublicationChanged, "table public.u was dropped", "ALTER PUBLICATION pub ADD TABLE public.u", "--resync")
}
