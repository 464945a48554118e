package wal

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// batches reads n transactions from r.out, checking that they come in
// commit order with keys 1..n, confirming each, and taking slow after each
// batch; it returns the batch sizes.
func batches(t *testing.T, r *running, n int, slow, within time.Duration) []int {
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
				rows, err := allRows(txn)
				if err != nil || len(rows) != 1 || rows[0].New[0].Text != strconv.Itoa(got) {
					t.Fatalf("transaction %d: rows %v (%v), want key %d", got, rowsText(rows), err, got)
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

// Coalesce < 0 turns the pauses off; transactions read together are still
// handed out together.
func TestCaptureCoalesceOff(t *testing.T) {
	const n = 3000
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, n int)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	f.cfg.Coalesce = -1
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
