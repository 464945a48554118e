package snapshot

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// TestSlotSnapshotWhileRowsChange backfills inside the snapshot a new
// replication slot exported, while another session keeps changing the
// rows. The replication connection runs its next command as soon as
// imported is called, which ends the exported snapshot: the backfill must
// still finish, and its fold must equal the database exactly as the
// snapshot saw it, every line tagged with the slot's consistent point.
func TestSlotSnapshotWhileRowsChange(t *testing.T) {
	db, plan := loadBlog(t, "40", "2000", "6000")
	ctx := ctxT(t)
	repl, err := pgconn.Connect(ctx, db.DSN+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(context.Background())
	slot, err := pglogrepl.CreateReplicationSlot(ctx, repl, "snaptest", "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := pglogrepl.ParseLSN(slot.ConsistentPoint)
	if err != nil {
		t.Fatal(err)
	}

	// The reference: the same snapshot, imported before the backfill starts.
	ref, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Rollback(context.Background())
	if _, err := ref.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+slot.SnapshotName+"'"); err != nil {
		t.Fatal(err)
	}

	// Rows change throughout the backfill.
	stop := make(chan struct{})
	var changes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := db.Pool.Exec(context.Background(), `
WITH u AS (UPDATE posts SET votes = votes + 1000, title = 'changed' WHERE id = $1 RETURNING id),
     c AS (INSERT INTO comments (id, post_id, body) VALUES (1000000 + $2, 1 + ($1 * 7) % 2000, 'late') RETURNING id),
     d AS (DELETE FROM post_tags WHERE post_id = 2001 - $1 RETURNING post_id)
SELECT 1`, 1+(i*13)%2000, i)
			if err != nil {
				return
			}
			changes.Add(1)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// A few changes land before the backfill starts (a fast backfill of 2000
	// posts may otherwise finish before the first one): they are after the
	// snapshot all the same, and more keep coming while it runs.
	for began := time.Now(); changes.Load() < 3; time.Sleep(5 * time.Millisecond) {
		if time.Since(began) > 30*time.Second {
			t.Fatalf("only %d changes in 30 s", changes.Load())
		}
	}
	path := filepath.Join(t.TempDir(), "out.ndjson")
	w, err := output.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	imported := 0
	var afterImport error
	b := New(Config{Workers: 3, BatchSize: 50}, plan, db.Pool, w, nil, testLog(t))
	err = b.Run(ctx, Snapshot{Name: slot.SnapshotName, LSN: cp}, func() {
		imported++
		// The replication connection's next command ends the export.
		_, afterImport = pglogrepl.IdentifySystem(ctx, repl)
	})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if imported != 1 || afterImport != nil {
		t.Fatalf("imported called %d times; IDENTIFY_SYSTEM: %v", imported, afterImport)
	}
	// The exported snapshot is gone indeed: a late importer fails.
	late, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+slot.SnapshotName+"'"); err == nil {
		t.Fatal("the exported snapshot is still importable after the replication connection moved on")
	}
	late.Rollback(ctx)

	if changes.Load() < 3 {
		t.Fatalf("only %d concurrent changes: the test proves nothing", changes.Load())
	}
	want := blogReference(t, ref)
	live := blogReference(t, db.Pool)
	differ := 0
	for k, v := range want {
		if live[k] != v {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("the live database equals the snapshot: the test proves nothing")
	}
	lines := readLines(t, path)
	eachKeyOnce(t, lines)
	sameDocs(t, fold(t, lines, "posts"), want)
	for _, l := range lines {
		if l.LSN != cp.String() {
			t.Fatalf("line at %s, want the consistent point %s", l.LSN, cp)
		}
	}
	t.Logf("%d concurrent changes; %d documents differ from the live database", changes.Load(), differ)
}

// TestMillionRowsBoundedMemory backfills a million-row table with two
// workers: every row is written once and the Go heap stays under 128 MiB.
func TestMillionRowsBoundedMemory(t *testing.T) {
	db := pgtest.NewDB(t)
	// Unlogged, and the key added after the rows: the fastest way to a big table.
	db.Exec(t, `CREATE UNLOGGED TABLE events (id bigint NOT NULL, kind text NOT NULL, amount numeric, at timestamptz);
INSERT INTO events SELECT g, 'kind' || (g % 17), g * 1.5, timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, 1000000) g;
ALTER TABLE events ADD PRIMARY KEY (id);
ANALYZE events;`)
	plan := compile(t, db.Pool, parseConfig(t, "indexes:\n  - name: events\n    table: events\n    columns: [id, kind, amount, at]\n"))

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var lines, bytes int64
	read := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := pr.Read(buf)
			bytes += int64(n)
			for _, c := range buf[:n] {
				if c == '\n' {
					lines++
				}
			}
			if err == io.EOF {
				read <- nil
				return
			}
			if err != nil {
				read <- err
				return
			}
		}
	}()
	w, err := output.NewWriter(pw, true)
	if err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	stop := make(chan struct{})
	var peak uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	err = New(Config{Workers: 2, BatchSize: 1000}, plan, db.Pool, w, nil, testLog(t)).Run(ctxT(t), Snapshot{}, nil)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if lines != 1_000_000 {
		t.Fatalf("%d lines, want 1000000", lines)
	}
	t.Logf("1M documents (%d MiB) in %s; peak heap in use %d MiB", bytes>>20, elapsed.Round(time.Millisecond), peak>>20)
	if peak > 128<<20 {
		t.Fatalf("peak heap in use %d MiB, want under 128 MiB", peak>>20)
	}
}
