package follow_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// A commit that is in the WAL, and sent, but not yet visible to other
// sessions is not built from the state before it: the group waits, then
// writes the new state. A synchronous standby that never answers holds a
// commit exactly there (the commit record is flushed and decoded; the
// transaction leaves the proc array only once the standby confirms), until
// synchronous_standby_names is emptied. The group's visibility check rides
// in the same pipeline as its first query (visible.go).
func TestVisibleCommitHeldBySyncRepIsNotBuiltEarly(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	// Only the session that asks for it waits for the standby.
	c, err := pgtest.Start(pgtest.Options{Settings: []string{"synchronous_commit = local"}})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { c.Stop(); os.RemoveAll(filepath.Dir(c.DataDir)) })
	db := c.NewDB(t)
	db.LoadFile(t, filepath.Join(pgtest.RepoRoot(t), "workloads/blog/schema.sql"), map[string]string{
		"authors": "3", "posts": "10", "comments": "20"})
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)

	db.Exec(t, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
	db.Exec(t, "SELECT pg_reload_conf()")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The reload reaches every backend before its next query; this one
	// must see the new setting before it commits.
	waitFor(t, 10*time.Second, func() bool {
		var s string
		return conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&s) == nil && s == "nobody"
	})
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		t.Fatal(err)
	}
	before := len(readLines(t, out))
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "UPDATE posts SET title = 'held by the standby' WHERE id = 3")
		done <- err
	}()
	// The walsender sends the commit once it is flushed: wait until it has
	// sent everything flushed, then give flusso-pg time to (wrongly) build.
	waitFor(t, 10*time.Second, func() bool {
		var sent bool
		err := db.Pool.QueryRow(ctx, `SELECT coalesce(bool_and(sent_lsn >= pg_current_wal_flush_lsn()), false)
			FROM pg_stat_replication`).Scan(&sent)
		return err == nil && sent
	})
	time.Sleep(1500 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the commit did not wait for the standby (err %v): the test proves nothing", err)
	default:
	}
	var visible bool
	if err := db.Pool.QueryRow(ctx, "SELECT title = 'held by the standby' FROM posts WHERE id = 3").Scan(&visible); err != nil || visible {
		t.Fatalf("the held commit is already visible (%v, %v)", visible, err)
	}
	if got := readLines(t, out); len(got) != before {
		t.Fatalf("%d lines written for a commit not visible yet (built from the state before it): %s",
			len(got)-before, strings.Join(got[before:], "\n"))
	}

	db.Exec(t, "ALTER SYSTEM RESET synchronous_standby_names")
	db.Exec(t, "SELECT pg_reload_conf()")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the commit was not released when synchronous_standby_names was emptied")
	}
	waitFor(t, 10*time.Second, func() bool { return countLines(t, out, `"held by the standby"`) > 0 })
	got := readLines(t, out)[before:]
	if !strings.Contains(got[0], `"held by the standby"`) {
		t.Fatalf("the first line after the commit is not its new state: %s", got[0])
	}
	waitFold(t, db, out, 10*time.Second)
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}
