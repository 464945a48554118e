package follow_test

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// The fold of the stream equals the reference query after a random workload
// that runs while the first backfill is still going.
func TestFollowFoldEqualsReferenceUnderRandomWorkload(t *testing.T) {
	db := blog(t, 20, 300, 1500)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	newWorkload(db, 1, true).run(ctx, t, 250)
	waitFold(t, db, out, 60*time.Second)

	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// Repeated kill -9 at random moments, each followed by a restart, loses
// nothing: the fold still equals the reference.
func TestFollowSurvivesRepeatedSIGKILL(t *testing.T) {
	db := blog(t, 20, 300, 1500)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		newWorkload(db, 2, true).run(ctx, t, 300)
	}()
	rnd := rand.New(rand.NewSource(7))
	for i := 0; i < 6; i++ {
		p := start(t, out, "follow", "--config", cfg)
		time.Sleep(time.Duration(300+rnd.Intn(1500)) * time.Millisecond)
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	}
	wg.Wait()
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 90*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// SIGTERM in the middle of a stream finishes the commit in hand, confirms it
// and exits 0 within a few seconds; the slot is confirmed up to the end.
func TestFollowSIGTERMConfirmsAndExitsZero(t *testing.T) {
	db := blog(t, 5, 50, 100)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)
	db.Exec(t, "UPDATE posts SET title = 'last' WHERE id = 1")
	waitFold(t, db, out, 30*time.Second)
	var end pglogrepl.LSN
	var s string
	db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s)
	end, _ = pglogrepl.ParseLSN(s)
	begin := time.Now()
	if code := p.stop(t, syscall.SIGTERM, 8*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("stopped in %s", time.Since(begin))
	// The last transaction (the UPDATE) ends before `end`; its end LSN must be confirmed.
	var lastCommit pglogrepl.LSN
	lines := readLines(t, out)
	for _, l := range lines {
		if strings.Contains(l, `"last"`) {
			lastCommit = lineLSN(t, l)
		}
	}
	if lastCommit == 0 {
		t.Fatal("no line for the last update")
	}
	if got := slotLSN(t, db); got <= lastCommit || got > end {
		t.Fatalf("confirmed_flush_lsn = %s after SIGTERM; want past the last commit %s (and not past %s)", got, lastCommit, end)
	}
}

// A reader that goes away ends flusso-pg with a non-zero code, and the slot
// is not confirmed past what it received.
func TestFollowReaderGoneExitsNonZero(t *testing.T) {
	db := blog(t, 5, 50, 100)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	cmd := exec.Command(binary, "follow", "--config", cfg)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &logBuf{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Read the backfill's 50 lines, then go away.
	buf := make([]byte, 1)
	newlines := 0
	for newlines < 50 {
		if _, err := stdout.Read(buf); err != nil {
			t.Fatalf("read: %v (stderr %s)", err, stderr.String())
		}
		if buf[0] == '\n' {
			newlines++
		}
	}
	before := slotLSN(t, db)
	stdout.Close()
	db.Exec(t, "UPDATE posts SET title = 'unseen' WHERE id = 2")
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err = <-errc:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("flusso-pg kept running after its reader went away\n%s", stderr.String())
	}
	if err == nil || cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("exit %v, want a non-zero code", err)
	}
	if !strings.Contains(stderr.String(), "went away") {
		t.Errorf("stderr does not say the reader went away:\n%s", stderr.String())
	}
	// The update was never received by anyone: the slot must not have passed it.
	var commitOfUpdate pglogrepl.LSN
	var s string
	db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s)
	commitOfUpdate, _ = pglogrepl.ParseLSN(s)
	if got := slotLSN(t, db); got >= commitOfUpdate {
		t.Fatalf("slot confirmed %s, past the unseen update (wal now %s, before %s)", got, commitOfUpdate, before)
	}
}

// With --ack-file the slot is confirmed only up to what the reader acknowledged.
func TestFollowAckFileConfirmsOnlyAcknowledged(t *testing.T) {
	db := blog(t, 5, 20, 40)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	fifo := filepath.Join(dir, "acks")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg, "--ack-file", fifo)
	ack, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ack.Close()
	waitFold(t, db, out, 30*time.Second)
	db.Exec(t, "UPDATE posts SET title = 'one' WHERE id = 1")
	waitFold(t, db, out, 30*time.Second)
	db.Exec(t, "UPDATE posts SET title = 'two' WHERE id = 2")
	waitFold(t, db, out, 30*time.Second)
	lines := readLines(t, out)
	one, two := lineLSN(t, find(t, lines, `"one"`)), lineLSN(t, find(t, lines, `"two"`))

	time.Sleep(2 * time.Second) // several status intervals
	if got := slotLSN(t, db); got > one {
		t.Fatalf("slot confirmed %s with nothing acknowledged past the backfill (first update at %s)", got, one)
	}
	fmt.Fprintf(ack, "%s\n", one)
	waitFor(t, 10*time.Second, func() bool { got := slotLSN(t, db); return got > one && got <= two })
	fmt.Fprintf(ack, "%s\n", two)
	waitFor(t, 10*time.Second, func() bool { return slotLSN(t, db) > two })
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// --listen serves health, readiness and Prometheus metrics.
func TestFollowListenServesHealthAndMetrics(t *testing.T) {
	db := blog(t, 5, 20, 40)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	addr := "127.0.0.1:" + freePort(t)
	p := start(t, out, "follow", "--config", cfg, "--listen", addr)
	waitFold(t, db, out, 30*time.Second)
	waitFor(t, 10*time.Second, func() bool { return get(addr+"/readyz") == 200 })
	if code := get(addr + "/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	db.Exec(t, "UPDATE comments SET score = 99 WHERE id = 1")
	waitFold(t, db, out, 30*time.Second)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"flusso_confirmed_lsn", "flusso_documents_total{index=\"posts\",op=\"upsert\"}",
		"flusso_build_duration_seconds_bucket", "flusso_slot_retained_wal_bytes", "flusso_replication_lag_bytes",
		"flusso_backfill_rows{index=\"posts\"} 20", "flusso_reconnects_total",
		"flusso_capture_spilled_transactions_total 0", "flusso_capture_socket_reads_total", "flusso_capture_read_pauses_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A transaction that only touches tables no index reads still lets the slot advance.
func TestFollowUnrelatedWritesLetTheSlotAdvance(t *testing.T) {
	db := blog(t, 5, 20, 40)
	db.Exec(t, "CREATE TABLE audit (id serial PRIMARY KEY, note text)")
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)
	for i := 0; i < 20; i++ {
		db.Exec(t, "INSERT INTO audit (note) SELECT repeat('x', 1000) FROM generate_series(1, 100)")
	}
	var s string
	db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s)
	target, _ := pglogrepl.ParseLSN(s)
	waitFor(t, 40*time.Second, func() bool { return slotLSN(t, db) >= target })
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A DDL that breaks the index stops flusso-pg with a message naming the index
// and column; nothing is confirmed past the last good commit; after the
// config is fixed, a restart resumes without loss.
func TestFollowBreakingDDLStopsThenResumes(t *testing.T) {
	db := blog(t, 5, 20, 40)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)
	db.Exec(t, "UPDATE posts SET votes = 1000 WHERE id = 3")
	waitFold(t, db, out, 30*time.Second)
	good := slotLSN(t, db)
	db.Exec(t, "ALTER TABLE posts RENAME COLUMN votes TO score; UPDATE posts SET title = 'after ddl' WHERE id = 4")
	select {
	case <-p.done:
		p.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("flusso-pg kept running after a configured column was renamed away")
	}
	if p.cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("exit code 0 after a breaking DDL")
	}
	msg := p.stderr.String()
	if !strings.Contains(msg, "posts") || !strings.Contains(msg, "votes") {
		t.Fatalf("the error does not name the index and the column:\n%s", tailString(msg, 2000))
	}
	var s string
	db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s)
	if got := slotLSN(t, db); got < good {
		t.Fatalf("slot moved back: %s < %s", got, good)
	}
	lines := readLines(t, out)
	for _, l := range lines {
		if strings.Contains(l, "after ddl") {
			t.Fatal("a document built after the breaking DDL was written")
		}
	}
	// Fix the config: the column is now called score; the document field keeps its name.
	data, _ := os.ReadFile(cfg)
	fixed := strings.Replace(string(data), "columns: [id, title, body, published_at, votes]",
		"columns: [id, title, body, published_at, score]\n    rename: {score: votes}", 1)
	os.WriteFile(cfg, []byte(fixed), 0o644)
	p2 := start(t, out, "follow", "--config", cfg)
	waitFor(t, 30*time.Second, func() bool {
		for _, l := range readLines(t, out) {
			if strings.Contains(l, "after ddl") {
				return true
			}
		}
		return false
	})
	p2.stop(t, syscall.SIGTERM, 10*time.Second)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func find(t *testing.T, lines []string, sub string) string {
	t.Helper()
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	t.Fatalf("no line contains %s", sub)
	return ""
}

func lineLSN(t *testing.T, line string) pglogrepl.LSN {
	t.Helper()
	i := strings.Index(line, `"lsn":"`)
	if i < 0 {
		t.Fatalf("no lsn in %s", line)
	}
	rest := line[i+7:]
	l, err := pglogrepl.ParseLSN(rest[:strings.IndexByte(rest, '"')])
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	waitEvery(t, timeout, 100*time.Millisecond, cond)
}

func waitEvery(t *testing.T, timeout, every time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(every)
	}
}

func get(url string) int {
	resp, err := http.Get("http://" + url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	return addr[strings.LastIndexByte(addr, ':')+1:]
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// Every line is built from the state at or after the commit that caused it.
// Postgres flushes a commit to the WAL (and may send it) a moment before the
// transaction becomes visible to other sessions: a document built in that
// moment carries the state from before the commit.
func TestFollowLinesSeeTheirCommit(t *testing.T) {
	db := blog(t, 5, 50, 100)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)
	for i := 0; i < 60; i++ {
		title := fmt.Sprintf("seen-%d", i)
		// A child moves too: both the old and the new parent must show it.
		db.Exec(t, fmt.Sprintf("BEGIN; UPDATE posts SET title = '%s' WHERE id = %d; UPDATE comments SET post_id = %d WHERE id = %d; COMMIT",
			title, 1+i%50, 1+(i+1)%50, 1+i))
		waitFor(t, 10*time.Second, func() bool { return countLines(t, out, `"`+title+`"`) > 0 })
	}
	// The last line per key must equal the database: a stale line would stay.
	waitFold(t, db, out, 10*time.Second)
	lines := readLines(t, out)
	for i := 0; i < 60; i++ {
		title := fmt.Sprintf(`"seen-%d"`, i)
		l := find(t, lines, title)
		if !strings.Contains(l, `"op":"upsert"`) {
			t.Fatalf("line for %s is not an upsert: %s", title, l)
		}
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// --ack-fd reads the acknowledgements from an inherited file descriptor, and
// lines carry "ack":true at the end of each flushed group.
func TestFollowAckFD(t *testing.T) {
	db := blog(t, 5, 20, 40)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out := filepath.Join(dir, "out.ndjson")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "follow", "--config", cfg, "--ack-fd", "3")
	cmd.Stdout = f
	stderr := &logBuf{}
	cmd.Stderr = stderr
	cmd.ExtraFiles = []*os.File{r} // fd 3 in the child
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFold(t, db, out, 30*time.Second)
	db.Exec(t, "UPDATE posts SET title = 'acked by fd' WHERE id = 3")
	waitFold(t, db, out, 30*time.Second)
	l := find(t, readLines(t, out), `"acked by fd"`)
	if !strings.HasSuffix(l, `,"ack":true}`) {
		t.Fatalf("the last line of the group is not marked for acknowledgement: %s", l)
	}
	lsn := lineLSN(t, l)
	time.Sleep(1500 * time.Millisecond)
	if got := slotLSN(t, db); got > lsn {
		t.Fatalf("slot confirmed %s before the acknowledgement of %s", got, lsn)
	}
	fmt.Fprintf(w, "%s\n", lsn)
	waitFor(t, 10*time.Second, func() bool { return slotLSN(t, db) > lsn })
}
