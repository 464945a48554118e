package wal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// batches reads n transactions from r.out, checking that they come in
// commit order with keys 1..n, confirming each, and taking slow after each
// batch; it returns the batch sizes.
func batches(t *testing.T, r *running, n int, slow, within time.Duration) []int {
	t.Helper()
	return batchesOf(t, r, 1, n, slow, within)
}

// batchesFrom is batches for keys from first on, read as fast as they come.
func batchesFrom(t *testing.T, r *running, first, n int, within time.Duration) []int {
	t.Helper()
	return batchesOf(t, r, first, n, 0, within)
}

func batchesOf(t *testing.T, r *running, first, n int, slow, within time.Duration) []int {
	t.Helper()
	var sizes []int
	got := 0
	var last *Txn
	deadline := time.After(within)
	for got < n {
		select {
		case batch := <-r.out:
			if len(batch) == 0 || len(batch) > maxBatch {
				t.Fatalf("a batch of %d transactions", len(batch))
			}
			sizes = append(sizes, len(batch))
			for _, txn := range batch {
				got++
				key := first + got - 1
				rows, err := allRows(txn)
				if err != nil || len(rows) != 1 || rows[0].New[0].Text != strconv.Itoa(key) {
					t.Fatalf("transaction %d: rows %v (%v), want key %d", got, rowsText(rows), err, key)
				}
				if last != nil && txn.CommitLSN <= last.CommitLSN {
					t.Fatalf("transaction %d commits at %s, before the previous one (%s)", got, txn.CommitLSN, last.CommitLSN)
				}
				last = txn
				r.c.Confirm(txn.EndLSN)
				txn.Release()
			}
			time.Sleep(slow)
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run ended after %d transactions: %v", got, err)
		case <-deadline:
			t.Fatalf("%d of %d transactions within %s", got, n, within)
		}
	}
	return sizes
}

// Transactions read together are handed out together: behind a consumer
// that takes its time, a backlog of small commits arrives in a few batches,
// in commit order, each at most maxBatch, read from the socket in few reads.
// (Whether a fast consumer sees batches depends on the walsender's speed
// against ours; pace_test.go tests the pauses that make them.)
func TestCaptureHandsOutBatches(t *testing.T) {
	const n = 5000
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, n int)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	f.db.Exec(t, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO t VALUES (i, 0); COMMIT; END LOOP; END $$`, n))
	r := run(t, c, st, 2)
	sizes := batches(t, r, n, 50*time.Millisecond, 2*time.Minute)
	t.Logf("%d transactions in %d batches; %d socket reads, %d pauses", n, len(sizes), c.pace.reads.Load(), c.pace.pauses.Load())
	if len(sizes) > n/20 {
		t.Fatalf("%d transactions came in %d batches, want them grouped (at most %d batches)", n, len(sizes), n/20)
	}
	if reads := c.pace.reads.Load(); reads > 3*n/2 {
		t.Fatalf("%d socket reads for %d transactions (%d messages): read message by message", reads, n, 3*n)
	}
}

// A lone commit is handed out alone, without a pause: nothing waits for
// company on a quiet database.
func TestCaptureLoneCommitsComeAlone(t *testing.T) {
	const n = 15
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, n int)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 2)
	inserted := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := f.db.Pool.Exec(context.Background(), `INSERT INTO t VALUES ($1, 0)`, i); err != nil {
				inserted <- err
				return
			}
			time.Sleep(40 * time.Millisecond)
		}
		inserted <- nil
	}()
	sizes := batches(t, r, n, 0, 60*time.Second)
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	alone := 0
	for _, s := range sizes {
		if s == 1 {
			alone++
		}
	}
	// A scheduler hiccup on a loaded machine may let two commits meet.
	if alone < n*2/3 {
		t.Fatalf("batch sizes %v: commits 40 ms apart should come one by one", sizes)
	}
	if p := c.pace.pauses.Load(); p != 0 {
		t.Fatalf("%d read pauses on a stream of one commit every 40 ms, want none", p)
	}
}

// Coalesce 0 turns the pauses off; transactions read together are still
// handed out together.
func TestCaptureCoalesceOff(t *testing.T) {
	const n = 3000
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, n int)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	f.cfg.Coalesce = 0
	c, st := f.open()
	f.db.Exec(t, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO t VALUES (i, 0); COMMIT; END LOOP; END $$`, n))
	r := run(t, c, st, 2)
	sizes := batches(t, r, n, 50*time.Millisecond, 2*time.Minute)
	if p := c.pace.pauses.Load(); p != 0 {
		t.Fatalf("%d pauses with coalescing off", p)
	}
	if len(sizes) > n/20 {
		t.Fatalf("%d transactions came in %d batches, want them grouped", n, len(sizes))
	}
}

// Over TLS the pacing sits under the encryption, on the socket: a busy
// stream and a backlog arrive whole and in order, the walsender's
// connection is encrypted, and the socket was read through the pacer.
func TestCaptureOverTLS(t *testing.T) {
	cl, err := pgtest.Start(pgtest.Options{SSL: true})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { cl.Stop(); os.RemoveAll(filepath.Dir(cl.DataDir)) })
	db := cl.NewDB(t)
	db.Exec(t, `CREATE TABLE t (id int PRIMARY KEY, n int); CREATE PUBLICATION pub FOR TABLE t`)
	cfg := Config{
		DSN:            strings.Replace(db.DSN, "sslmode=disable", "sslmode=require", 1),
		Slot:           "s_" + db.Name,
		Publication:    "pub",
		Tables:         map[change.Table][]string{tbl("t"): {"id"}},
		TempDir:        t.TempDir(),
		StatusInterval: 100 * time.Millisecond,
		Coalesce:       time.Millisecond,
		Store:          state.New(t.TempDir(), "s_"+db.Name),
	}
	f := &fixture{t: t, db: db, cfg: cfg}
	c, st := f.open()
	const backlog, live = 3000, 20000
	db.Exec(t, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO t VALUES (i, 0); COMMIT; END LOOP; END $$`, backlog))
	r := run(t, c, st, 2)
	sizes := batches(t, r, backlog, 20*time.Millisecond, 2*time.Minute)

	var ssl bool
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT s.ssl FROM pg_stat_ssl s JOIN pg_replication_slots r ON r.active_pid = s.pid WHERE r.slot_name = $1`, cfg.Slot).Scan(&ssl); err != nil || !ssl {
		t.Fatalf("the walsender's connection: ssl %v (%v), want an encrypted one", ssl, err)
	}
	if c.pace.reads.Load() == 0 {
		t.Fatal("no socket read went through the pacer under TLS")
	}

	// A live stream read as fast as it comes: pauses may engage (how often
	// depends on the machine); every transaction must still arrive, in order.
	go func() {
		if _, err := db.Pool.Exec(context.Background(), fmt.Sprintf(`DO $$ BEGIN FOR i IN %d..%d LOOP INSERT INTO t VALUES (i, 0); COMMIT; END LOOP; END $$`, backlog+1, backlog+live)); err != nil {
			t.Errorf("live stream: %v", err)
		}
	}()
	more := batchesFrom(t, r, backlog+1, live, 2*time.Minute)
	t.Logf("TLS: backlog in %d batches, live stream in %d; %d socket reads, %d pauses", len(sizes), len(more), c.pace.reads.Load(), c.pace.pauses.Load())
}
