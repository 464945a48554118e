package wal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// A new slot comes with an exported snapshot that shows exactly the rows
// committed before its consistent point, and the stream carries exactly
// the commits after it: nothing missed, nothing twice.
func TestOpenSnapshotHandoff(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, a text); INSERT INTO t VALUES (1,'a'),(2,'b');`,
		"t", map[change.Table][]string{tbl("t"): {"id", "a"}})
	c, st := f.open()
	if !st.Created || st.SnapshotName == "" || st.ConsistentPoint == 0 {
		t.Fatalf("start = %+v, want a created slot with a snapshot", st)
	}
	var id state.Identity
	if ok, err := f.cfg.Store.Load(state.IdentityRecord, &id); !ok || err != nil || id.SystemID != st.SystemID || id.ConsistentPoint != st.ConsistentPoint {
		t.Fatalf("identity record %+v (%v, %v), start %+v", id, ok, err, st)
	}
	// A commit after the slot: in the stream, not in the snapshot.
	f.db.Exec(t, `INSERT INTO t VALUES (3,'c')`)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+st.SnapshotName+"'"); err != nil {
		t.Fatalf("import snapshot: %v", err)
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("snapshot sees %d rows (%v), want 2", n, err)
	}
	tx.Rollback(ctx)

	r := run(t, c, st, 4)
	txn := r.next(10 * time.Second)
	equal(t, txnText(t, txn), []string{"I public.t new[3,c]"})
	if txn.CommitLSN < st.ConsistentPoint || txn.EndLSN <= txn.CommitLSN || txn.Xid == 0 || time.Since(txn.CommitTime) > time.Minute {
		t.Fatalf("txn %+v, consistent point %s", txn, st.ConsistentPoint)
	}
	txn.Release()
	r.none(300 * time.Millisecond)
}

// Inserts, updates and deletes arrive per transaction at its commit, thin:
// only the configured columns, key first; rolled-back work never arrives.
func TestCaptureChanges(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, a text, b int, skip text);
		CREATE TABLE other (id int PRIMARY KEY);`,
		"t, other", map[change.Table][]string{tbl("t"): {"id", "b"}})
	c, st := f.open()
	r := run(t, c, st, 4)

	f.db.Exec(t, `BEGIN; INSERT INTO t VALUES (1,'a',10,'x'); INSERT INTO other VALUES (1); UPDATE t SET b = 11, skip = 'y' WHERE id = 1; COMMIT;`)
	f.db.Exec(t, `BEGIN; INSERT INTO t VALUES (2,'a',20,'x'); ROLLBACK;`)
	f.db.Exec(t, `INSERT INTO other VALUES (2)`) // nothing for us: not handed out
	f.db.Exec(t, `DELETE FROM t WHERE id = 1`)

	txn := r.next(10 * time.Second)
	equal(t, txnText(t, txn), []string{"I public.t new[1,10]", "U public.t new[1,11]"})
	first := txn.EndLSN
	txn.Release()
	txn = r.next(10 * time.Second)
	// DEFAULT replica identity: a delete gives the key only.
	equal(t, txnText(t, txn), []string{"D public.t old[1,?]"})
	if txn.CommitLSN <= first {
		t.Fatalf("commit order: %s after %s", txn.CommitLSN, first)
	}
	c.Confirm(txn.EndLSN)
	txn.Release()
	eventually(t, 10*time.Second, "confirmed_flush_lsn to reach the confirmed commit", func() bool {
		return f.slotConfirmed() >= txn.EndLSN
	})
}

// A later Open resumes the slot from its confirmed position: confirmed
// transactions are not delivered again, unconfirmed ones are.
func TestResume(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	f.db.Exec(t, `INSERT INTO t VALUES (2)`)
	a := r.next(10 * time.Second)
	b := r.next(10 * time.Second)
	c.Confirm(a.EndLSN)
	eventually(t, 10*time.Second, "confirm", func() bool { return f.slotConfirmed() >= a.EndLSN })
	if err := r.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	c.Close()
	if got := f.slotConfirmed(); got != a.EndLSN {
		t.Fatalf("confirmed_flush_lsn %s, want %s (the confirmed commit, not %s)", got, a.EndLSN, b.EndLSN)
	}

	c2, st2 := f.open()
	if st2.Created || st2.Confirmed != a.EndLSN {
		t.Fatalf("second start %+v, want resume from %s", st2, a.EndLSN)
	}
	r2 := run(t, c2, st2, 4)
	txn := r2.next(10 * time.Second)
	equal(t, txnText(t, txn), []string{"I public.t new[2]"})
	if txn.EndLSN != b.EndLSN {
		t.Fatalf("replayed commit ends at %s, want %s", txn.EndLSN, b.EndLSN)
	}
}

func TestSlotNames(t *testing.T) {
	for _, name := range []string{"", "A", "a-b", "a b", "x;DROP", string(make([]byte, 64))} {
		if err := ValidateSlotName(name); !errors.Is(err, ErrBadSlotName) {
			t.Errorf("ValidateSlotName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"a", "flusso_1", "0"} {
		if err := ValidateSlotName(name); err != nil {
			t.Errorf("ValidateSlotName(%q) = %v", name, err)
		}
	}
}

// Confirm brings the next status update forward: the slot follows within a
// fraction of a second, not a whole status interval later.
func TestConfirmIsReportedPromptly(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	f.cfg.StatusInterval = time.Minute
	c, st := f.open()
	r := run(t, c, st, 4)
	for i := 1; i <= 3; i++ {
		f.db.Exec(t, `INSERT INTO t VALUES ($1)`, i)
		txn := r.next(10 * time.Second)
		txn.Release()
		confirmed := time.Now()
		c.Confirm(txn.EndLSN)
		eventually(t, 3*time.Second, "confirmed_flush_lsn to follow Confirm", func() bool {
			return f.slotConfirmed() >= txn.EndLSN
		})
		if d := time.Since(confirmed); d > 2*time.Second {
			t.Fatalf("the slot followed Confirm after %s, with a status interval of a minute", d)
		}
	}
}
