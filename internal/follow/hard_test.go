package follow_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// One change that affects 100k documents (renaming a tag every post has) is
// streamed through in batches, with bounded memory.
func TestFollowOneChangeAffecting100kDocuments(t *testing.T) {
	const posts = 100_000
	began := time.Now()
	db := blog(t, 100, posts, 1000)
	db.Exec(t, "INSERT INTO post_tags SELECT id, 1 FROM posts ON CONFLICT DO NOTHING")
	t.Logf("loaded in %s", time.Since(began))
	began = time.Now()
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitEvery(t, 3*time.Minute, time.Second, func() bool { return countLines(t, out) >= posts })
	t.Logf("backfilled in %s", time.Since(began))
	began = time.Now()
	db.Exec(t, "UPDATE tags SET name = 'renamed-popular' WHERE id = 1")
	waitEvery(t, 3*time.Minute, time.Second, func() bool { return countLines(t, out, "renamed-popular") >= posts })
	t.Logf("streamed 100k documents in %s", time.Since(began))
	if hwm := peakRSS(t, p.cmd.Process.Pid); hwm > 200<<20 {
		t.Fatalf("peak RSS %d MiB while rebuilding 100k documents, want bounded (< 200 MiB)", hwm>>20)
	} else {
		t.Logf("peak RSS %d MiB", hwm>>20)
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// A transaction touching every table of the index at once.
func TestFollowTransactionTouchingEveryTable(t *testing.T) {
	db := blog(t, 5, 30, 60)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 30*time.Second)
	db.Exec(t, `BEGIN;
		UPDATE authors SET name = 'A' WHERE id = 1;
		UPDATE users SET handle = 'U' WHERE id = 2;
		INSERT INTO posts VALUES (1000, 1, 'fresh', NULL, NULL, 0);
		INSERT INTO comments VALUES (5000, 1000, 2, 'c', 1, now());
		UPDATE comments SET post_id = 1000 WHERE id = 3;
		DELETE FROM comments WHERE id = 4;
		INSERT INTO post_tags VALUES (1000, 7);
		DELETE FROM post_tags WHERE post_id = 5;
		UPDATE tags SET name = 'seven' WHERE id = 7;
		UPDATE posts SET id = 2000 WHERE id = 1000 AND false;
		DELETE FROM posts WHERE id = 6;
		COMMIT`)
	waitFold(t, db, out, 30*time.Second)
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

func countLines(t *testing.T, path string, contains ...string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	if len(contains) == 0 {
		return strings.Count(string(data), "\n")
	}
	return strings.Count(string(data), contains[0])
}

// peakRSS reads VmHWM, the process's peak resident set, from /proc.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// SIGTERM during the first backfill stops at once with exit 0; the next
// start resumes the backfill and the stream, and nothing is lost.
func TestFollowSIGTERMDuringBackfillResumes(t *testing.T) {
	db := blog(t, 50, 20000, 40000)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	// Small batches and one worker: the backfill lasts long enough to be interrupted.
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), "  workers: 2\n  batch_size: 100", "  workers: 1\n  batch_size: 10", 1)), 0o644)
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(p.stderr.String(), "backfill started") })
	time.Sleep(300 * time.Millisecond)
	db.Exec(t, "UPDATE posts SET title = 'during backfill' WHERE id = 19999")
	if code := p.stop(t, syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM during the backfill, want 0", code)
	}
	if n := countLines(t, out); n >= 20000 {
		t.Fatalf("the backfill finished (%d lines) before the signal: the test interrupts nothing", n)
	}
	p2 := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 90*time.Second)
	p2.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A reader that stalls makes flusso-pg wait, with bounded memory, without
// losing its replication connection (the server's wal_sender_timeout is cut
// to 5 s for this test, and the reader stalls for 20 s); once the reader
// reads again, everything arrives.
func TestFollowStalledReaderWaitsWithBoundedMemory(t *testing.T) {
	db := blog(t, 20, 2000, 4000)
	db.Exec(t, "ALTER SYSTEM SET wal_sender_timeout = '5s'")
	db.Exec(t, "SELECT pg_reload_conf()")
	t.Cleanup(func() {
		db.Exec(t, "ALTER SYSTEM RESET wal_sender_timeout")
		db.Exec(t, "SELECT pg_reload_conf()")
	})
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
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Nobody reads: the pipe (64 KiB) fills during the backfill.
	for i := 0; i < 40; i++ {
		db.Exec(t, "UPDATE comments SET score = score + 1 WHERE id % 40 = $1", i)
	}
	time.Sleep(20 * time.Second)
	if !alive(cmd.Process.Pid) {
		t.Fatalf("flusso-pg exited while its reader stalled:\n%s", stderr.String())
	}
	if rss := peakRSS(t, cmd.Process.Pid); rss > 150<<20 {
		t.Fatalf("peak RSS %d MiB while the reader stalled", rss>>20)
	}
	out := filepath.Join(dir, "out.ndjson")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	go func() { io.Copy(f, stdout); f.Close() }()
	waitFold(t, db, out, 60*time.Second)
	if strings.Contains(stderr.String(), "reconnect") {
		t.Fatalf("the replication connection was lost while the reader stalled:\n%s", tailString(stderr.String(), 3000))
	}
}

// alive reports whether pid is running (not gone, not a zombie waiting to be reaped).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(data))
	return len(f) > 2 && f[2] != "Z"
}

// A transaction of a million rows goes through the daemon, with its
// default settings, in bounded memory: capture spills it to a temporary
// file beyond capture.memory_budget and the documents come out right.
func TestFollowMillionRowTransactionInBoundedMemory(t *testing.T) {
	const rows, parents = 1_000_000, 10
	db := pgtest.NewDB(t)
	db.Exec(t, fmt.Sprintf(`CREATE TABLE parents (id int PRIMARY KEY, name text);
		CREATE TABLE children (id bigint PRIMARY KEY, parent_id int NOT NULL REFERENCES parents, note text);
		ALTER TABLE children REPLICA IDENTITY FULL;
		INSERT INTO parents SELECT g, 'p' || g FROM generate_series(1, %d) g;`, parents))
	dir := t.TempDir()
	cfg := filepath.Join(dir, "flusso.yaml")
	yaml := fmt.Sprintf(`source: {dsn: %q, slot: %s, publication: pub_%s}
state: {dir: %s}
indexes:
  - name: parents
    table: public.parents
    aggregates:
      - {name: children, table: public.children, join: {id: parent_id}, fn: count}
`, db.DSN, db.Name, db.Name, filepath.Join(dir, "state"))
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitEvery(t, time.Minute, 200*time.Millisecond, func() bool { return countLines(t, out) >= parents })
	began := time.Now()
	db.Exec(t, fmt.Sprintf(`INSERT INTO children SELECT g, 1 + g %% %d, 'a note about child ' || g FROM generate_series(1, %d) g`, parents, rows))
	want := strconv.Itoa(rows / parents)
	waitEvery(t, 3*time.Minute, time.Second, func() bool {
		docs := fold(t, out)
		for id := 1; id <= parents; id++ {
			d, _ := docs[strconv.Itoa(id)].(map[string]any)
			if n, _ := d["children"].(json.Number); n.String() != want {
				return false
			}
		}
		return true
	})
	t.Logf("a %d-row transaction streamed in %s", rows, time.Since(began))
	hwm := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("peak RSS %d MiB", hwm>>20)
	if hwm > 64<<20 {
		t.Fatalf("peak RSS %d MiB with a %d-row transaction, want under 64 MiB", hwm>>20, rows)
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
