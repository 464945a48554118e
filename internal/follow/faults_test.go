package follow_test

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// The faults a daemon meets in production, made for real: the server
// crash-restarted (pg_ctl -m immediate), flusso-pg's backends terminated,
// the server down for a while, the process SIGKILLed. Through each, the
// fold of the output equals the reference query, and a process that was
// not killed never exits by itself.

// writers runs n concurrent writers of the blog workload until ctx ends,
// riding out the faults themselves: a transaction that fails (the server
// went away under it) is simply not retried. It returns a function that
// waits for them and reports how many transactions committed.
func writers(ctx context.Context, t *testing.T, db *pgtest.DB, n int) func() int64 {
	t.Helper()
	pool, err := pgxpool.New(ctx, db.DSN+"&application_name=chaos-writer")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var committed atomic.Int64
	for i := range n {
		w := newWorkload(db, int64(100+i), false)
		w.nextID = int64(i+1) * 10_000_000
		wg.Go(func() {
			for ctx.Err() == nil {
				sql := w.txn()
				c, err := pool.Acquire(ctx)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				_, err = c.Conn().PgConn().Exec(ctx, "BEGIN;"+sql+";COMMIT").ReadAll()
				c.Release()
				if err == nil {
					committed.Add(1)
				}
				time.Sleep(time.Duration(w.rnd.Intn(20)) * time.Millisecond)
			}
		})
	}
	return func() int64 {
		wg.Wait()
		pool.Close()
		return committed.Load()
	}
}

// mustRun fails the test when p has exited.
func mustRun(t *testing.T, p *proc, when string) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("flusso-pg exited %s (%v):\n%s", when, err, tailString(p.stderr.String(), 4000))
	default:
	}
}

// crash stops the cluster as a power cut would (pg_ctl -m immediate) and
// starts it again after down.
func crash(t *testing.T, c *pgtest.Cluster, down time.Duration) {
	t.Helper()
	c.Stop()
	defer ensureUp(c) // the next tests need it, also when this one fails
	time.Sleep(down)
	if err := c.Restart(); err != nil {
		t.Fatalf("restart the server: %v", err)
	}
}

// ensureUp starts c again unless it answers.
func ensureUp(c *pgtest.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, c.DSN("postgres")); err == nil {
		conn.Close(ctx)
		return
	}
	c.Restart()
}

// settle waits until the server answers the test's pool again.
func settle(t *testing.T, db *pgtest.DB) {
	t.Helper()
	db.Pool.Reset()
	waitFor(t, 60*time.Second, func() bool {
		var one int
		return db.Pool.QueryRow(context.Background(), "SELECT 1").Scan(&one) == nil
	})
}

// Concurrent writers while the server is crash-restarted several times: the
// process never exits, and the fold equals the database.
func TestFollowRidesOutServerCrashRestarts(t *testing.T) {
	db := blog(t, 20, 200, 800)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 60*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	wait := writers(ctx, t, db, 3)
	rnd := rand.New(rand.NewSource(11))
	for i := range 3 {
		time.Sleep(time.Duration(1000+rnd.Intn(1500)) * time.Millisecond)
		crash(t, db.Cluster, time.Duration(rnd.Intn(500))*time.Millisecond)
		mustRun(t, p, fmt.Sprintf("after crash restart %d", i+1))
	}
	time.Sleep(2 * time.Second)
	cancel()
	n := wait()
	t.Logf("%d transactions committed by the writers", n)
	settle(t, db)
	waitFold(t, db, out, 90*time.Second)
	mustRun(t, p, "after the crash restarts")
	if !strings.Contains(p.stderr.String(), "retrying with backoff") && !strings.Contains(p.stderr.String(), "reconnecting") {
		t.Fatalf("no retry was logged: the crashes hit nothing\n%s", tailString(p.stderr.String(), 3000))
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// terminate ends every backend of flusso-pg in db: its pool's (named
// flusso-pg) and its replication connection (a walsender, streaming the
// slot or, during the first backfill, holding its exported snapshot).
func terminate(t *testing.T, db *pgtest.DB) int {
	t.Helper()
	var n int
	err := db.Pool.QueryRow(context.Background(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		 WHERE pid <> pg_backend_pid() AND datname = $1
		   AND (application_name = 'flusso-pg' OR backend_type = 'walsender')`,
		db.Name).Scan(&n)
	if err != nil {
		t.Fatalf("terminate backends: %v", err)
	}
	return n
}

// Concurrent writers (with a big fan-out now and then) while every
// flusso-pg backend is terminated, again and again: the process never
// exits, and the fold equals the database.
func TestFollowRidesOutTerminatedBackends(t *testing.T) {
	db := blog(t, 20, 2000, 4000)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	db.Exec(t, "INSERT INTO post_tags SELECT id, 1 FROM posts ON CONFLICT DO NOTHING")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 60*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	wait := writers(ctx, t, db, 3)
	killed := 0
	for i := range 8 {
		if i%3 == 0 {
			// 2000 documents to rebuild: the kill lands in the middle of a build.
			db.Exec(t, "UPDATE tags SET name = name || '+' WHERE id = 1")
		}
		time.Sleep(700 * time.Millisecond)
		killed += terminate(t, db)
		mustRun(t, p, fmt.Sprintf("after kill round %d", i+1))
	}
	cancel()
	wait()
	t.Logf("%d backends terminated", killed)
	if killed < 8 {
		t.Fatalf("only %d backends terminated: the test killed little", killed)
	}
	began := time.Now()
	waitFold(t, db, out, 90*time.Second)
	t.Logf("caught up %s after the last kill", time.Since(began).Round(time.Millisecond))
	if os.Getenv("FLUSSO_TEST_LOGS") != "" {
		t.Log(p.stderr.String())
	}
	mustRun(t, p, "after the kills")
	if !strings.Contains(p.stderr.String(), "retrying with backoff") {
		t.Fatalf("no retry was logged: the kills hit nothing\n%s", tailString(p.stderr.String(), 3000))
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// The backfill rides out its readers' connections being terminated: each
// reads on (in a newer snapshot when the exported one died with them), and
// the stream that follows makes the fold equal the database.
func TestFollowBackfillRidesOutTerminatedBackends(t *testing.T) {
	db := blog(t, 50, 20000, 20000)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), "  workers: 2\n  batch_size: 100", "  workers: 2\n  batch_size: 10", 1)), 0o644)
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(p.stderr.String(), "backfill started") })
	kills := 0
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		if strings.Contains(p.stderr.String(), "backfill done") {
			break
		}
		db.Exec(t, "UPDATE posts SET title = title || '!' WHERE id % 1000 = 7")
		kills += terminate(t, db)
		mustRun(t, p, "after a kill during the backfill")
	}
	if kills == 0 || strings.Contains(p.stderr.String(), "backfill done") && kills < 2 {
		t.Fatalf("the backfill ended before the kills (%d backends terminated): the test interrupts nothing", kills)
	}
	waitFold(t, db, out, 120*time.Second)
	mustRun(t, p, "after the backfill")
	logs := p.stderr.String()
	if os.Getenv("FLUSSO_TEST_LOGS") != "" {
		t.Log(logs)
	}
	if strings.Contains(logs, "backfill is failing") && !strings.Contains(logs, "reads on in a newer snapshot") {
		t.Fatalf("a reader was killed with the replication connection, and none moved to a newer snapshot:\n%s", tailString(logs, 4000))
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// A server that stays down (10 s here; FLUSSO_LONG_OUTAGE=1 makes it 60 s)
// and comes back: meanwhile /readyz says why it is not ready, /healthz
// stays ok and flusso_degraded is 1; the log has one WARN per stage for
// the episode and one INFO with its length; afterwards everything written
// meanwhile arrives.
func TestFollowRidesOutALongOutage(t *testing.T) {
	down := 10 * time.Second
	if os.Getenv("FLUSSO_LONG_OUTAGE") != "" {
		down = 60 * time.Second
	}
	db := blog(t, 10, 100, 300)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	addr := "127.0.0.1:" + freePort(t)
	p := start(t, out, "follow", "--config", cfg, "--listen", addr)
	waitFold(t, db, out, 60*time.Second)
	waitFor(t, 10*time.Second, func() bool { return get(addr+"/readyz") == 200 })

	db.Cluster.Stop()
	t.Cleanup(func() { ensureUp(db.Cluster) }) // also when the test fails: the next tests need it
	began := time.Now()
	// Changes must be flowing for the build side to notice: the capture
	// notices at once, and the slot statistics within their interval.
	waitFor(t, 30*time.Second, func() bool { return get(addr+"/readyz") == 503 })
	body := fetch(t, addr+"/readyz")
	if !strings.Contains(body, "not ready") || !strings.Contains(body, "failing") {
		t.Fatalf("/readyz while the server is down says %q, want the reason", body)
	}
	if code := get(addr + "/healthz"); code != 200 {
		t.Fatalf("/healthz = %d while the server is down, want 200", code)
	}
	if m := fetch(t, addr+"/metrics"); !strings.Contains(m, "flusso_degraded 1") || !strings.Contains(m, "flusso_retries_total{") {
		t.Fatalf("/metrics while degraded lacks flusso_degraded 1 or flusso_retries_total")
	}
	time.Sleep(time.Until(began.Add(down)))
	mustRun(t, p, fmt.Sprintf("while the server was down for %s", down))
	if err := db.Cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	settle(t, db)
	db.Exec(t, "UPDATE posts SET title = 'after the outage' WHERE id = 3; DELETE FROM comments WHERE id = 5")
	waitFold(t, db, out, 90*time.Second)
	waitFor(t, 60*time.Second, func() bool { return get(addr+"/readyz") == 200 })
	mustRun(t, p, "after the outage")
	logs := p.stderr.String()
	if warns := strings.Count(logs, "is failing; retrying with backoff"); warns == 0 || warns > 6 {
		t.Fatalf("%d WARN lines for one outage, want one per failing stage:\n%s", warns, tailString(logs, 4000))
	}
	if !strings.Contains(logs, "recovered") || !strings.Contains(logs, "outage") {
		t.Fatalf("no INFO line with the outage's length:\n%s", tailString(logs, 4000))
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get("http://" + url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A second follow on the same slot and state dir is refused at once, with
// the first one's pid and the fix; the first goes on.
func TestFollowStateDirIsLocked(t *testing.T) {
	db := blog(t, 5, 20, 40)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)
	began := time.Now()
	p2 := start(t, filepath.Join(dir, "out2.ndjson"), "follow", "--config", cfg)
	select {
	case <-p2.done:
		p2.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("a second follow on the same state dir kept running")
	}
	if code := p2.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("second follow exit code %d, want 1", code)
	}
	msg := p2.stderr.String()
	if !strings.Contains(msg, fmt.Sprintf("pid %d", p.cmd.Process.Pid)) || !strings.Contains(msg, "state.dir") {
		t.Fatalf("the refusal does not name the holder's pid and the fix:\n%s", msg)
	}
	t.Logf("refused in %s: %s", time.Since(began).Round(time.Millisecond), strings.TrimSpace(msg))
	db.Exec(t, "UPDATE posts SET title = 'still followed' WHERE id = 2")
	waitFold(t, db, out, 30*time.Second)
	mustRun(t, p, "after the second start was refused")
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	// Once the first has stopped, the lock is free.
	p3 := start(t, out, "follow", "--config", cfg)
	db.Exec(t, "UPDATE posts SET title = 'third' WHERE id = 2")
	waitFold(t, db, out, 30*time.Second)
	p3.stop(t, syscall.SIGTERM, 10*time.Second)
}

// The chaos run of issue 12: concurrent writers while, every couple of
// seconds, one fault at random: a crash restart of the server, every
// flusso-pg backend terminated, or the process SIGKILLed (and started
// again). 15 s by default; FLUSSO_CHAOS=<seconds> runs it longer. A process
// that was not killed never exits; the fold equals the database at the end.
func TestFollowChaos(t *testing.T) {
	length := 15 * time.Second
	if s := os.Getenv("FLUSSO_CHAOS"); s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("FLUSSO_CHAOS=%q: give seconds", s)
		}
		length = time.Duration(secs) * time.Second
	}
	db := blog(t, 20, 300, 1200)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 60*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	wait := writers(ctx, t, db, 3)
	seed := time.Now().UnixNano()
	if s := os.Getenv("FLUSSO_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (FLUSSO_CHAOS_SEED=%d runs it again)", seed, seed)
	rnd := rand.New(rand.NewSource(seed))
	faults := map[string]int{}
	for end := time.Now().Add(length); time.Now().Before(end); {
		time.Sleep(time.Duration(800+rnd.Intn(1500)) * time.Millisecond)
		mustRun(t, p, fmt.Sprintf("by itself during the chaos run (faults so far: %v)", faults))
		switch rnd.Intn(3) {
		case 0:
			faults["crash restart"]++
			crash(t, db.Cluster, time.Duration(rnd.Intn(400))*time.Millisecond)
		case 1:
			faults["backends terminated"]++
			terminate(t, db)
		case 2:
			faults["SIGKILL"]++
			p.cmd.Process.Kill()
			<-p.done
			p.done <- nil
			p = start(t, out, "follow", "--config", cfg)
		}
	}
	cancel()
	n := wait()
	t.Logf("faults %v; %d transactions committed", faults, n)
	settle(t, db)
	began := time.Now()
	waitFold(t, db, out, 120*time.Second)
	t.Logf("caught up %s after the last fault", time.Since(began).Round(time.Millisecond))
	mustRun(t, p, "after the chaos run")
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// A SIGTERM while the server is down stops follow at once, with exit 0,
// when no work is in hand: the stop does not wait for the server.
func TestFollowStopsWhileTheServerIsDown(t *testing.T) {
	db := blog(t, 5, 30, 60)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	addr := "127.0.0.1:" + freePort(t)
	p := start(t, out, "follow", "--config", cfg, "--listen", addr)
	waitFold(t, db, out, 60*time.Second)
	waitFor(t, 30*time.Second, func() bool { return get(addr+"/readyz") == 200 })

	db.Cluster.Stop()
	t.Cleanup(func() { ensureUp(db.Cluster) }) // also when the test fails: the next tests need it
	waitFor(t, 30*time.Second, func() bool { return get(addr+"/readyz") == 503 })
	if !strings.Contains(fetchOr(addr+"/readyz"), "failing") {
		t.Fatalf("/readyz does not say what is failing: %q", fetchOr(addr+"/readyz"))
	}
	began := time.Now()
	if code := p.stop(t, syscall.SIGTERM, 8*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM with the server down and nothing in hand, want 0\n%s", code, tailString(p.stderr.String(), 3000))
	}
	t.Logf("stopped in %s with the server down", time.Since(began).Round(time.Millisecond))
	if err := db.Cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	settle(t, db)
}

// fetchOr is fetch without failing: "" when nothing answers.
func fetchOr(url string) string {
	resp, err := http.Get("http://" + url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
