package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// backfillWhileKilled runs a backfill of the blog's posts on its own pool
// and terminates every connection of that pool once some lines are out.
func backfillWhileKilled(t *testing.T, db *pgtest.DB, plan *build.Plan, cfg Config, path string) error {
	t.Helper()
	pool, err := pgxpool.New(ctxT(t), db.DSN+"&application_name=bf-reader")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w, err := output.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	done := make(chan error, 1)
	go func() { done <- New(cfg, plan, pool, w, nil, testLog(t)).Run(ctxT(t), Snapshot{}, nil) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if len(data) > 0 || time.Now().After(deadline) {
			break
		}
		w.Sync()
		time.Sleep(5 * time.Millisecond)
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'bf-reader' AND datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no reader to terminate")
	}
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("the backfill did not end after its readers were terminated")
		return nil
	}
}

// Readers whose connections die, the exporting one among them, read on in a
// newer snapshot when the caller allows it (follow: its stream catches up):
// every key is written once and the fold equals the database.
func TestBackfillReadsOnInANewerSnapshot(t *testing.T) {
	db, plan := loadBlog(t, "20", "3000", "3000")
	path := filepath.Join(t.TempDir(), "out.ndjson")
	err := backfillWhileKilled(t, db, plan, Config{Workers: 2, BatchSize: 5, NewerSnapshotOK: true}, path)
	if err != nil {
		t.Fatalf("backfill: %v", err)
	}
	lines := readLines(t, path)
	eachKeyOnce(t, lines)
	sameDocs(t, fold(t, lines, "posts"), blogReference(t, db.Pool))
}

// The one-shot backfill cannot mix snapshots: a lost snapshot stops it,
// saying so.
func TestBackfillRefusesANewerSnapshotWhenNotAllowed(t *testing.T) {
	db, plan := loadBlog(t, "20", "3000", "3000")
	path := filepath.Join(t.TempDir(), "out.ndjson")
	err := backfillWhileKilled(t, db, plan, Config{Workers: 2, BatchSize: 5}, path)
	if err == nil || !strings.Contains(err.Error(), "was lost with its connection") {
		t.Fatalf("backfill: %v, want the lost snapshot named", err)
	}
}
