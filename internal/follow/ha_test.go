package follow_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// pairBlog loads the blog workload into a fresh database of the pair's
// primary and waits until the standby has it.
func pairBlog(t *testing.T, p *pgtest.Pair, authors, posts, comments int) *pgtest.DB {
	t.Helper()
	db := p.Primary.NewDB(t)
	db.LoadFile(t, filepath.Join(pgtest.RepoRoot(t), "workloads/blog/schema.sql"), map[string]string{
		"authors": fmt.Sprint(authors), "posts": fmt.Sprint(posts), "comments": fmt.Sprint(comments)})
	p.WaitReplayed(t)
	return db
}

// onCluster is db as seen on another server of the pair (the standby, or
// the new primary after a promotion).
func onCluster(t *testing.T, c *pgtest.Cluster, db *pgtest.DB) *pgtest.DB {
	t.Helper()
	other := &pgtest.DB{Cluster: c, Name: db.Name, DSN: c.DSN(db.Name)}
	var err error
	if other.Pool, err = pgxpool.New(context.Background(), other.DSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Pool.Close)
	return other
}

// pairConfig writes the blog config with source.dsn = dsn.
func pairConfig(t *testing.T, db *pgtest.DB, dsn, dir, extra string) string {
	t.Helper()
	path := writeConfig(t, db, dir, extra)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(data), "dsn: "+db.DSN, "dsn: "+dsn, 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitLog(t *testing.T, p *proc, what string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.stderr.String(), what) {
		select {
		case <-p.done:
			p.done <- nil
			t.Fatalf("flusso-pg exited while waiting for %q:\n%s", what, tailString(p.stderr.String(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s:\n%s", what, within, tailString(p.stderr.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Standby mode (PostgreSQL 16+): source.dsn is the hot standby,
// source.primary_dsn the primary (where the publication is created). The
// slot, the backfill and every document query run on the standby; the fold
// equals the reference query, and the primary shows no flusso-pg session,
// only the standby's walsender. Before 16 the standby is refused with the
// reason.
func TestFollowOnStandby(t *testing.T) {
	p := pgtest.NewPair(t, pgtest.PairOptions{BinDir: pgtest.PairBinDir(t, 16, 17, 18)})
	db := pairBlog(t, p, 20, 300, 1500)
	dir := t.TempDir()
	cfg := pairConfig(t, db, p.StandbyDSN(db.Name), dir, "")
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), "source:\n", "source:\n  primary_dsn: "+db.DSN+"\n", 1)), 0o644)
	out := filepath.Join(dir, "out.ndjson")
	f := start(t, out, "follow", "--config", cfg)
	if p.Primary.Version < 16 {
		select {
		case <-f.done:
			f.done <- nil
		case <-time.After(time.Minute):
			t.Fatalf("follow on a PostgreSQL %d standby did not stop", p.Primary.Version)
		}
		if log := f.stderr.String(); f.cmd.ProcessState.ExitCode() == 0 || !strings.Contains(log, "cannot decode on a standby") {
			t.Fatalf("follow on a PostgreSQL %d standby: want the refusal:\n%s", p.Primary.Version, tailString(log, 3000))
		}
		return
	}
	// Writes on the primary while the slot is created on the standby (it
	// waits for the primary to log its running transactions, every 15 s by
	// the bgwriter) and while the backfill reads the slot's snapshot there.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var done atomic.Bool
	wg.Go(func() {
		w := newWorkload(db, 12, true)
		for !done.Load() && ctx.Err() == nil {
			w.run(ctx, t, 10)
		}
		w.run(ctx, t, 50) // and on the stream after the backfill
	})
	waitLog(t, f, "backfill done", 90*time.Second)
	done.Store(true)
	wg.Wait()
	waitFold(t, db, out, 90*time.Second)

	var walsenders, sessions int
	err := db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE backend_type = 'walsender' AND application_name <> 'pgtest_standby'),
  count(*) FILTER (WHERE application_name = 'flusso-pg') FROM pg_stat_activity`).Scan(&walsenders, &sessions)
	if err != nil {
		t.Fatal(err)
	}
	var standbyWalsender int
	db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = 'pgtest_standby'`).Scan(&standbyWalsender)
	if walsenders != 0 || sessions != 0 || standbyWalsender != 1 {
		t.Fatalf("on the primary: %d walsenders besides the standby's, %d flusso-pg sessions, %d standby walsender; want 0, 0, 1", walsenders, sessions, standbyWalsender)
	}
	// A table dropped from the publication (on the primary: the standby's
	// is a replica): provision auto adds it back there, not on the
	// read-only standby, and rebuilds what reads it.
	db.Exec(t, "ALTER PUBLICATION pub_"+db.Name+" DROP TABLE comments")
	db.Exec(t, "UPDATE comments SET body = 'while out' WHERE id IN (SELECT id FROM comments ORDER BY id LIMIT 5)")
	waitLog(t, f, "a table the index reads is back in the publication", 60*time.Second)
	waitFold(t, db, out, 90*time.Second)
	if code := f.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}
