package wal

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// A key-changing update under the default replica identity carries the old
// key ('K') and the new row; other configured columns of the old side are
// Missing, never an invented NULL.
func TestKeyChange(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, parent int)`, "t",
		map[change.Table][]string{tbl("t"): {"id", "parent"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1, 7)`)
	f.db.Exec(t, `UPDATE t SET id = 2 WHERE id = 1`)
	f.db.Exec(t, `UPDATE t SET parent = NULL WHERE id = 2`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.t new[1,7]"})
	equal(t, txnText(t, r.next(10*time.Second)), []string{"U public.t old[1,?] new[2,7]"})
	equal(t, txnText(t, r.next(10*time.Second)), []string{"U public.t new[2,null]"})
}

// REPLICA IDENTITY FULL gives the whole old row, so an update moving a row
// to another parent names both parents, and a delete names its parent.
func TestReplicaIdentityFull(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, parent int); ALTER TABLE t REPLICA IDENTITY FULL`, "t",
		map[change.Table][]string{tbl("t"): {"id", "parent"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1, 7)`)
	f.db.Exec(t, `UPDATE t SET parent = 8 WHERE id = 1`)
	f.db.Exec(t, `DELETE FROM t`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.t new[1,7]"})
	equal(t, txnText(t, r.next(10*time.Second)), []string{"U public.t old[1,7] new[1,8]"})
	equal(t, txnText(t, r.next(10*time.Second)), []string{"D public.t old[1,8]"})
}

// An unchanged TOAST value ('u') is taken from the old tuple when the server
// sent one (FULL), and is Missing otherwise.
func TestUnchangedToast(t *testing.T) {
	f := newFixture(t, `
		CREATE TABLE d (id int PRIMARY KEY, big text, n int);
		ALTER TABLE d ALTER big SET STORAGE EXTERNAL;
		CREATE TABLE f (id int PRIMARY KEY, big text, n int);
		ALTER TABLE f ALTER big SET STORAGE EXTERNAL;
		ALTER TABLE f REPLICA IDENTITY FULL;`, "d, f",
		map[change.Table][]string{tbl("d"): {"id", "big"}, tbl("f"): {"id", "big"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	big := strings.Repeat("x", 10000)
	f.db.Exec(t, `INSERT INTO d VALUES (1, $1, 0)`, big)
	f.db.Exec(t, `INSERT INTO f VALUES (1, $1, 0)`, big)
	r.next(10 * time.Second).Release()
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `UPDATE d SET n = 1`)
	f.db.Exec(t, `UPDATE f SET n = 1`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"U public.d new[1,?]"})
	rows, _ := allRows(r.next(10 * time.Second))
	if len(rows) != 1 || rows[0].New[1].Text != big || rows[0].New[1].Missing || rows[0].Old[1].Text != big {
		t.Fatalf("FULL update: %v", rowsText(rows))
	}
}

// Truncate comes as a row per captured table; a composite key and every
// common key type arrive in the server's text format.
func TestTruncateCompositeKeyTypes(t *testing.T) {
	f := newFixture(t, `
		CREATE TABLE c (a bigint, b text, c uuid, d numeric(30,10), e timestamptz, f bool, g bytea, h date, PRIMARY KEY (a,b,c,d,e,f,g,h));
		CREATE TABLE o (id int PRIMARY KEY);`, "c, o",
		map[change.Table][]string{tbl("c"): {"a", "b", "c", "d", "e", "f", "g", "h"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `SET TIME ZONE 'UTC'; INSERT INTO c VALUES (9007199254740993, 'x"y', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 12345678901234567890.0123456789, '2024-01-02 03:04:05.123456+00', true, '\x00ff', '2024-02-29')`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{
		`I public.c new[9007199254740993,x"y,a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,12345678901234567890.0123456789,2024-01-02 03:04:05.123456+00,t,\x00ff,2024-02-29]`})
	f.db.Exec(t, `TRUNCATE c, o`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"T public.c"})
}

// Relation messages come again after DDL and refresh the cache; dropping a
// configured column stops capture with an error naming table and column.
func TestRelationRefreshAndDroppedColumn(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, a int, b int)`, "t",
		map[change.Table][]string{tbl("t"): {"id", "b"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1, 2, 3)`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.t new[1,3]"})
	f.db.Exec(t, `ALTER TABLE t DROP COLUMN a; ALTER TABLE t ADD COLUMN z int; INSERT INTO t (id, b, z) VALUES (2, 4, 5)`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.t new[2,4]"})
	f.db.Exec(t, `ALTER TABLE t DROP COLUMN b; INSERT INTO t VALUES (3)`)
	err := r.runErr(10 * time.Second)
	if !errors.Is(err, ErrColumnMissing) || !strings.Contains(err.Error(), `public.t, column "b"`) {
		t.Fatalf("run error %v, want ErrColumnMissing naming public.t and b", err)
	}
}
