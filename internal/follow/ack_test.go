package follow_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// ackPipeline runs `flusso-pg follow ... --ack-file FIFO | reader...` as the
// docs run it: the reader's stdin is flusso-pg's stdout.
type ackPipeline struct {
	follow, reader *exec.Cmd
	stderr         *logBuf
	done           chan error
}

func startAckPipeline(t *testing.T, followArgs []string, reader ...string) *ackPipeline {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &ackPipeline{stderr: &logBuf{}, done: make(chan error, 1)}
	p.follow = exec.Command(binary, followArgs...)
	p.follow.Stdout = pw
	p.follow.Stderr = p.stderr
	p.reader = exec.Command(reader[0], reader[1:]...)
	p.reader.Stdin = pr
	p.reader.Stderr = p.stderr
	if err := p.follow.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.reader.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	pw.Close()
	go func() { p.done <- p.follow.Wait() }()
	t.Cleanup(func() {
		p.follow.Process.Kill()
		p.reader.Process.Kill()
		<-p.done
		p.done <- nil
		p.reader.Wait()
		if t.Failed() {
			t.Logf("stderr:\n%s", tailString(p.stderr.String(), 4000))
		}
	})
	return p
}

// indexedIDs reads a reader's index file: the ids of the posts upserted.
func indexedIDs(t *testing.T, path string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, text := range wholeLines(t, path) {
		var l struct{ Index, Op, ID string }
		if err := json.Unmarshal(text, &l); err != nil {
			t.Fatalf("index file line is not JSON: %v", err)
		}
		if l.Index == "posts" && l.Op == "upsert" {
			ids[l.ID] = true
		}
	}
	return ids
}

func waitIndexed(t *testing.T, path string, want int, p *ackPipeline, timeout time.Duration) map[string]bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ids := indexedIDs(t, path)
		if len(ids) >= want {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the reader indexed %d of %d posts\nstderr:\n%s", timeout, len(ids), want, tailString(p.stderr.String(), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The documented ack reader, run as docs/follow.md and the example's own
// header run it, with a backfill far larger than a pipe holds: flusso-pg
// opens the FIFO beside the backfill, so the reader's open (before it reads
// a line) does not deadlock it; the stream's changes follow.
func TestAckReaderExampleLargeBackfill(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: the example reader cannot run") // never the case in CI
	}
	db := blog(t, 50, 2000, 500)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	fifo := filepath.Join(dir, "acks")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "docs.ndjson")
	example := filepath.Join(pgtest.RepoRoot(t), "docs/examples/ack_reader.py")
	p := startAckPipeline(t, []string{"follow", "--config", cfg, "--ack-file", fifo},
		"python3", example, "--ack-file", fifo, "--index-file", index)
	waitIndexed(t, index, 2000, p, 90*time.Second)

	before := slotLSN(t, db)
	db.Exec(t, "UPDATE posts SET title = 'acknowledged' WHERE id = 7")
	deadline := time.Now().Add(60 * time.Second)
	for slotLSN(t, db) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("the slot was not confirmed past %s after the reader acknowledged the update", before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	data, _ := os.ReadFile(index)
	if !strings.Contains(string(data), `"acknowledged"`) {
		t.Fatal("the update is confirmed on the slot but not in the reader's index")
	}
	var rec struct {
		Indexes map[string]struct{ Done bool }
	}
	raw, err := os.ReadFile(filepath.Join(dir, "state", db.Name+".backfill.json"))
	if err != nil || json.Unmarshal(raw, &rec) != nil || !rec.Indexes["posts"].Done {
		t.Fatalf("the backfill record does not say done once every line is acknowledged: %s (%v)", raw, err)
	}
	p.follow.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("follow did not stop cleanly: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not stop within 30 s of SIGTERM")
	}
}

// A reader that reads the whole backfill but stores and acknowledges only
// part of it, then dies: the backfill's checkpoints follow the
// acknowledgements, so the next start sends what was never acknowledged
// (with checkpoints that follow the flushes, these documents were lost).
func TestAckBackfillCheckpointFollowsAcks(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: the example reader cannot run")
	}
	db := blog(t, 50, 2000, 500)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	fifo := filepath.Join(dir, "acks")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "docs.ndjson")
	// Reads every backfill line; stores and acknowledges only the marked
	// batches within its first 700 lines; then exits.
	dying := `
import json, sys
acks = open(sys.argv[1], "w", buffering=1)
index = open(sys.argv[2], "a")
seen = set()
n = 0
for raw in sys.stdin:
    line = json.loads(raw)
    n += 1
    seen.add(line.get("id"))
    if n <= 700:
        index.write(raw)
        if line.get("ack"):
            index.flush()
            acks.write(line["lsn"] + "\n")
    if len(seen) >= 2000:
        break
index.close()
`
	p := startAckPipeline(t, []string{"follow", "--config", cfg, "--ack-file", fifo},
		"python3", "-c", dying, fifo, index)
	if err := p.reader.Wait(); err != nil {
		t.Fatalf("the dying reader failed: %v\n%s", err, p.stderr.String())
	}
	stored := indexedIDs(t, index)
	if len(stored) == 0 || len(stored) > 700 {
		t.Fatalf("the dying reader stored %d posts, want 1 to 700", len(stored))
	}
	// flusso-pg learns of the gone reader only at its next write: stop it.
	p.follow.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not stop within 30 s of SIGTERM")
	}

	example := filepath.Join(pgtest.RepoRoot(t), "docs/examples/ack_reader.py")
	q := startAckPipeline(t, []string{"follow", "--config", cfg, "--ack-file", fifo},
		"python3", example, "--ack-file", fifo, "--index-file", index)
	waitIndexed(t, index, 2000, q, 90*time.Second)
	q.follow.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-q.done:
		q.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not stop within 30 s of SIGTERM")
	}
	_ = context.Background
}

// The two-FIFO shape of docs/deployment.md: flusso-pg writes to one FIFO
// (--output), the example reader reads it and acknowledges through the
// other; neither open order deadlocks a backfill larger than a pipe.
func TestAckReaderTwoFIFOs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: the example reader cannot run")
	}
	db := blog(t, 50, 2000, 500)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	docs, acks := filepath.Join(dir, "docs"), filepath.Join(dir, "acks")
	for _, f := range []string{docs, acks} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	index := filepath.Join(dir, "docs.ndjson")
	example := filepath.Join(pgtest.RepoRoot(t), "docs/examples/ack_reader.py")
	p := &ackPipeline{stderr: &logBuf{}, done: make(chan error, 1)}
	// The reader first, as an indexer container that starts before flusso-pg.
	p.reader = exec.Command("sh", "-c", `exec python3 "$0" --ack-file "$1" --index-file "$2" < "$3"`, example, acks, index, docs)
	p.reader.Stderr = p.stderr
	if err := p.reader.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	p.follow = exec.Command(binary, "follow", "--config", cfg, "--output", docs, "--ack-file", acks)
	p.follow.Stderr = p.stderr
	if err := p.follow.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.follow.Wait() }()
	t.Cleanup(func() {
		p.follow.Process.Kill()
		p.reader.Process.Kill()
		<-p.done
		p.reader.Wait()
		if t.Failed() {
			t.Logf("stderr:\n%s", tailString(p.stderr.String(), 4000))
		}
	})
	waitIndexed(t, index, 2000, p, 90*time.Second)
}
