package follow_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// A promotion under load (PostgreSQL 17+): follow reads through a
// multi-host DSN with target_session_attrs=primary, the old primary is
// stopped in the middle of the stream and the standby promoted. follow
// reconnects to the new primary, follows the new timeline on the synced
// failover slot, and the fold equals the reference query on the new
// primary, without a second backfill. Before 17 the slot does not survive:
// follow stops with the message that says so and what to do.
func TestFollowThroughPromotion(t *testing.T) {
	p := pgtest.NewPair(t, pgtest.PairOptions{BinDir: pgtest.PairBinDir(t, 17, 18)})
	db := pairBlog(t, p, 20, 300, 1500)
	dir := t.TempDir()
	cfg := pairConfig(t, db, p.MultiHostDSN(db.Name), dir, "")
	out := filepath.Join(dir, "out.ndjson")
	f := start(t, out, "follow", "--config", cfg)
	waitLog(t, f, "backfill done", 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := newWorkload(db, 11, false)
	w.run(ctx, t, 60)
	if p.Primary.Version >= 17 {
		waitFold(t, db, out, 60*time.Second)
		p.WaitSlotSynced(t, db.Name)
		w.run(ctx, t, 60) // the stream is busy when the primary goes
	}
	p.StopPrimary()
	if err := p.Promote(); err != nil {
		t.Fatal(err)
	}
	promoted := onCluster(t, p.Standby, db)
	if p.Primary.Version < 17 {
		select {
		case <-f.done:
			f.done <- nil
		case <-time.After(2 * time.Minute):
			t.Fatalf("follow on PostgreSQL %d did not stop after a promotion:\n%s", p.Primary.Version, tailString(f.stderr.String(), 3000))
		}
		log := f.stderr.String()
		if code := f.cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(log, "did not survive the failover") || !strings.Contains(log, "--resync") {
			t.Fatalf("follow on PostgreSQL %d after a promotion: exit %d, want non-zero with the clear stop:\n%s", p.Primary.Version, code, tailString(log, 3000))
		}
		return
	}
	w.db = promoted
	w.run(ctx, t, 60)
	waitFold(t, promoted, out, 90*time.Second)
	log := f.stderr.String()
	if n := strings.Count(log, "backfill started"); n != 1 {
		t.Fatalf("%d backfills, want 1 (no backfill after the failover):\n%s", n, tailString(log, 3000))
	}
	if !strings.Contains(log, "a failover happened") {
		t.Fatalf("the failover is not in the log:\n%s", tailString(log, 3000))
	}
	if code := f.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}
