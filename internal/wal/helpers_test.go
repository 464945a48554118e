package wal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

func TestMain(m *testing.M) {
	if os.Getenv(captureProcessEnv) != "" {
		os.Exit(captureProcessMain())
	}
	pgtest.Main(m)
}

// fixture is one test's database, publication and capture settings.
type fixture struct {
	t   *testing.T
	db  *pgtest.DB
	cfg Config
}

// newFixture makes a database with schema, and a publication pub for tables.
func newFixture(t *testing.T, schema string, pubTables string, tables map[change.Table][]string) *fixture {
	t.Helper()
	db := pgtest.NewDB(t)
	if schema != "" {
		db.Exec(t, schema)
	}
	db.Exec(t, "CREATE PUBLICATION pub FOR TABLE "+pubTables)
	return &fixture{t: t, db: db, cfg: Config{
		DSN:            db.DSN,
		Slot:           "s_" + db.Name,
		Publication:    "pub",
		Tables:         tables,
		MemoryBudget:   1 << 20,
		TempDir:        t.TempDir(),
		StatusInterval: 100 * time.Millisecond,
		Coalesce:       time.Millisecond, // capture.coalesce's default
		Store:          state.New(t.TempDir(), "s_"+db.Name),
	}}
}

func tbl(name string) change.Table { return change.Table{Schema: "public", Name: name} }

func testLogger(t *testing.T) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// running is a capture whose Run goroutine delivers into out.
type running struct {
	t      *testing.T
	c      *Capture
	start  *Start
	out    chan []*Txn
	queue  []*Txn // the rest of the last batch taken from out
	cancel context.CancelFunc
	done   chan error
}

// open opens a capture with f.cfg and releases the snapshot.
func (f *fixture) open() (*Capture, *Start) {
	f.t.Helper()
	c := New(f.cfg, testLogger(f.t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Open(ctx)
	if err != nil {
		f.t.Fatalf("open: %v", err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c, st
}

// run starts Run on an opened capture.
func run(t *testing.T, c *Capture, st *Start, buffer int) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, c: c, start: st, out: make(chan []*Txn, buffer), cancel: cancel, done: make(chan error, 1)}
	c.ReleaseSnapshot()
	go func() { r.done <- c.Run(ctx, r.out) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels Run and returns its error.
func (r *running) stop() error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(30 * time.Second):
		r.t.Errorf("Run did not stop within 30s")
		return errors.New("stuck")
	}
}

// next waits for the next transaction.
func (r *running) next(within time.Duration) *Txn {
	r.t.Helper()
	if txn := r.pop(); txn != nil {
		return txn
	}
	select {
	case batch := <-r.out:
		r.queue = batch
		return r.pop()
	case err := <-r.done:
		r.done <- err
		r.t.Fatalf("Run ended: %v", err)
	case <-time.After(within):
		r.t.Fatalf("no transaction within %s", within)
	}
	return nil
}

// none asserts that no transaction arrives within d.
func (r *running) none(d time.Duration) {
	r.t.Helper()
	if txn := r.pop(); txn != nil {
		rows, _ := allRows(txn)
		r.t.Fatalf("unexpected transaction %d with %d rows: %v", txn.Xid, txn.Rows, rows)
	}
	select {
	case batch := <-r.out:
		txn := batch[0]
		rows, _ := allRows(txn)
		r.t.Fatalf("unexpected transaction %d with %d rows: %v", txn.Xid, txn.Rows, rows)
	case err := <-r.done:
		r.done <- err
		r.t.Fatalf("Run ended: %v", err)
	case <-time.After(d):
	}
}

// runErr waits for Run to end with an error.
func (r *running) runErr(within time.Duration) error {
	r.t.Helper()
	for {
		select {
		case batch := <-r.out:
			releaseAll(batch)
		case err := <-r.done:
			r.done <- err
			return err
		case <-time.After(within):
			r.t.Fatalf("Run did not end within %s", within)
			return nil
		}
	}
}

// pop takes the next transaction of the batch in hand, or nil.
func (r *running) pop() *Txn {
	if len(r.queue) == 0 {
		return nil
	}
	txn := r.queue[0]
	r.queue = r.queue[1:]
	return txn
}

func allRows(txn *Txn) ([]change.Row, error) {
	var all []change.Row
	err := txn.Each(1000, func(rows []change.Row) error {
		all = append(all, rows...)
		return nil
	})
	return all, err
}

// rowsText renders rows compactly: "I public.t new[1,a]" etc.
func rowsText(rows []change.Row) []string {
	var out []string
	for _, r := range rows {
		s := fmt.Sprintf("%c %s", byte(r.Op), r.Table)
		if r.Old != nil {
			s += " old" + valsText(r.Old)
		}
		if r.New != nil {
			s += " new" + valsText(r.New)
		}
		out = append(out, s)
	}
	return out
}

func valsText(vs []change.Value) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		switch {
		case v.Missing:
			parts[i] = "?"
		case v.Null:
			parts[i] = "null"
		default:
			parts[i] = v.Text
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func txnText(t *testing.T, txn *Txn) []string {
	t.Helper()
	rows, err := allRows(txn)
	if err != nil {
		t.Fatalf("each: %v", err)
	}
	return rowsText(rows)
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rows:\n got  %q\n want %q", got, want)
	}
}

// slotConfirmed reads the slot's confirmed_flush_lsn.
func (f *fixture) slotConfirmed() pglogrepl.LSN {
	f.t.Helper()
	var lsn pglogrepl.LSN
	err := f.db.Pool.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&lsn)
	if err != nil {
		f.t.Fatalf("slot confirmed_flush_lsn: %v", err)
	}
	return lsn
}

func currentLSN(t testing.TB, db *pgtest.DB) pglogrepl.LSN {
	t.Helper()
	var lsn pglogrepl.LSN
	if err := db.Pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// eventually polls cond until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var _ sync.Locker // keep sync imported for helpers added later
