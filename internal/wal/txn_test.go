package wal

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// streamedTxns reads how many transactions the server streamed for the slot
// (pg_stat_replication_slots, PG14+).
func (f *fixture) streamedTxns() int64 {
	f.t.Helper()
	var n int64
	err := f.db.Pool.QueryRow(context.Background(),
		`SELECT coalesce((SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = $1), 0)`, f.cfg.Slot).Scan(&n)
	if err != nil {
		f.t.Fatalf("pg_stat_replication_slots: %v", err)
	}
	return n
}

// A transaction bigger than logical_decoding_work_mem (64kB in the test
// server) arrives in streamed blocks (protocol 2, PG14+) and is handed out
// whole at its commit; one rolled back is never handed out; a subtransaction
// rolled back to its savepoint is cut out, also from a spill file.
func TestStreamedTransactions(t *testing.T) {
	for _, budget := range []int64{64 << 20, 16 << 10} {
		t.Run(fmt.Sprintf("budget=%d", budget), func(t *testing.T) {
			f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, pad text)`, "t",
				map[change.Table][]string{tbl("t"): {"id"}})
			f.cfg.MemoryBudget = budget
			c, st := f.open()
			r := run(t, c, st, 4)

			f.db.Exec(t, `BEGIN; INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g; ROLLBACK;`)
			f.db.Exec(t, `BEGIN;
				INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g;
				SAVEPOINT a;
				INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(3001, 6000) g;
				SAVEPOINT b;
				INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(6001, 6100) g;
				ROLLBACK TO SAVEPOINT a;
				INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(7001, 7010) g;
				SAVEPOINT c;
				INSERT INTO t VALUES (8001, '');
				RELEASE SAVEPOINT c;
				COMMIT;`)
			f.db.Exec(t, `INSERT INTO t VALUES (9001, '')`)

			txn := r.next(20 * time.Second)
			rows, err := allRows(txn)
			if err != nil {
				t.Fatal(err)
			}
			var want []int
			for i := 1; i <= 3000; i++ {
				want = append(want, i)
			}
			for i := 7001; i <= 7010; i++ {
				want = append(want, i)
			}
			want = append(want, 8001)
			if len(rows) != len(want) || txn.Rows != len(want) {
				t.Fatalf("got %d rows (Rows %d), want %d", len(rows), txn.Rows, len(want))
			}
			for i, row := range rows {
				if row.Op != change.Insert || row.New[0].Text != strconv.Itoa(want[i]) {
					t.Fatalf("row %d = %v, want insert of %d", i, rowsText(rows[i:i+1]), want[i])
				}
			}
			if spilled := txn.Spilled(); spilled != (budget < 1<<20) {
				t.Fatalf("spilled = %v with budget %d", spilled, budget)
			}
			txn.Release()
			equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.t new[9001]"})
			// PG 18 no longer streams a transaction it can tell has aborted
			// (it skips decoding it), so only the committed one is streamed there.
			wantStreamed := int64(2)
			if f.db.Cluster.Version >= 18 {
				wantStreamed = 1
			}
			// The walsender reports its statistics lazily (through the stats
			// collector before PG 15), so they may lag the stream a little.
			n := f.streamedTxns()
			for deadline := time.Now().Add(15 * time.Second); n < wantStreamed && time.Now().Before(deadline); n = f.streamedTxns() {
				time.Sleep(100 * time.Millisecond)
			}
			if n < wantStreamed {
				t.Fatalf("the server streamed %d transactions, want %d (the rolled back one before PG 18, and the committed one)", n, wantStreamed)
			}
		})
	}
}

// Identical thin rows are kept once per transaction.
func TestDeduplicate(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, n int)`, "t",
		map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1, 0), (2, 0)`)
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `BEGIN; UPDATE t SET n = n + 1; UPDATE t SET n = n + 1; UPDATE t SET n = n + 1 WHERE id = 1; COMMIT`)
	txn := r.next(10 * time.Second)
	equal(t, txnText(t, txn), []string{"U public.t new[1]", "U public.t new[2]"})
	if txn.Rows != 2 {
		t.Fatalf("Rows = %d", txn.Rows)
	}
}

// A transaction of a million rows under a small memory budget spills to a
// file, keeps the heap small, and Each yields every row in order.
func TestMillionRowTransaction(t *testing.T) {
	n := 1_000_000
	if s := os.Getenv("FLUSSO_TEST_BIG_ROWS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	f := newFixture(t, `CREATE TABLE t (id int, parent int)`, "t",
		map[change.Table][]string{tbl("t"): {"id", "parent"}})
	f.cfg.MemoryBudget = 4 << 20
	c, st := f.open()
	r := run(t, c, st, 1)

	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	runtime.GC()
	began := time.Now()
	f.db.Exec(t, fmt.Sprintf(`INSERT INTO t SELECT g, g %% 100 FROM generate_series(1, %d) g`, n))
	inserted := time.Now()
	txn := r.next(90 * time.Second)
	t.Logf("insert %s, then capture %s", inserted.Sub(began), time.Since(inserted))
	defer txn.Release()
	if !txn.Spilled() || c.Spills() == 0 {
		t.Fatalf("a %d-row transaction did not spill under a 4 MiB budget", n)
	}
	count, sum := 0, 0
	err := txn.Each(1000, func(rows []change.Row) error {
		for _, row := range rows {
			id, err := strconv.Atoi(row.New[0].Text)
			if err != nil {
				return err
			}
			count++
			if id != count {
				return fmt.Errorf("row %d has id %d", count, id)
			}
			sum += id
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count != n || txn.Rows != n || sum != n*(n+1)/2 {
		t.Fatalf("Each gave %d rows (Rows %d), want %d", count, txn.Rows, n)
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	t.Logf("peak HeapInuse %.1f MiB", float64(peak.Load())/(1<<20))
	if peak.Load() > 64<<20 {
		t.Fatalf("peak HeapInuse %d MiB, want under 64 MiB", peak.Load()>>20)
	}
	name := txn.buf.file.Name()
	txn.Release()
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Fatalf("spill file %s still there after Release (%v)", name, err)
	}
}

// Subtransaction cuts land on the right row whether the mark was made in
// memory, before the spill, or in the file.
func TestRowBufferCut(t *testing.T) {
	row := func(i int) *change.Row {
		return &change.Row{Table: tbl("t"), Op: change.Insert, Cols: []string{"id"}, New: []change.Value{{Text: strconv.Itoa(i)}}}
	}
	ids := func(b *rowBuffer) []string {
		var out []string
		b.each(3, func(rows []change.Row) error {
			for _, r := range rows {
				out = append(out, r.New[0].Text)
			}
			return nil
		})
		return out
	}
	for _, c := range []struct {
		name   string
		budget int64
	}{{"memory", 1 << 20}, {"spilled", 1000}} {
		t.Run(c.name, func(t *testing.T) {
			b := newRowBuffer(c.budget, t.TempDir())
			defer b.release()
			for i := 0; i < 5; i++ {
				b.add(row(i))
			}
			b.mark(100) // subxact 100 from row 5
			for i := 5; i < 10; i++ {
				b.add(row(i))
			}
			b.mark(200) // its child from row 10
			for i := 10; i < 15; i++ {
				b.add(row(i))
			}
			b.add(row(3)) // a duplicate: kept once
			if err := b.cut(200); err != nil {
				t.Fatal(err)
			}
			b.add(row(12))                     // after the cut it is new again
			if err := b.cut(300); err != nil { // never seen: nothing to cut
				t.Fatal(err)
			}
			got := strings.Join(ids(b), ",")
			if want := "0,1,2,3,4,5,6,7,8,9,12"; got != want {
				t.Fatalf("rows %s, want %s", got, want)
			}
			if err := b.cut(100); err != nil {
				t.Fatal(err)
			}
			b.add(row(20))
			if got, want := strings.Join(ids(b), ","), "0,1,2,3,4,20"; got != want {
				t.Fatalf("rows %s, want %s", got, want)
			}
			if (b.file != nil) != (c.budget < 1<<20) {
				t.Fatalf("spilled = %v", b.file != nil)
			}
		})
	}
}
