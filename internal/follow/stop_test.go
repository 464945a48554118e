package follow_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startStalled runs follow with stdout a pipe nobody reads, and waits until
// its writes block (the backfill is larger than the pipe holds).
func startStalled(t *testing.T) *proc {
	t.Helper()
	db := blog(t, 50, 2000, 500)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close() })
	p := &proc{stderr: &logBuf{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, "follow", "--config", cfg)
	p.cmd.Stdout = pw
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("flusso-pg stderr:\n%s", tailString(p.stderr.String(), 4000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.stderr.String(), "backfill started") {
		if time.Now().After(deadline) {
			t.Fatalf("the backfill did not start\n%s", p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // its writes fill the pipe and block
	return p
}

// A stop with a reader that stopped reading ends within the stop timeout
// (10 s) plus a second, with exit code 1 (SPEC, Delivery).
func TestStopWithStalledReaderExits1(t *testing.T) {
	p := startStalled(t)
	began := time.Now()
	code := p.stop(t, syscall.SIGTERM, 20*time.Second)
	took := time.Since(began)
	if code != 1 {
		t.Fatalf("exit code %d after a stop that could not finish, want 1", code)
	}
	if took > 12*time.Second {
		t.Fatalf("the stop took %s, want at most the stop timeout (10s) plus a second", took.Round(time.Millisecond))
	}
	if !strings.Contains(p.stderr.String(), "confirming nothing more") {
		t.Fatalf("no word on the forced stop:\n%s", tailString(p.stderr.String(), 2000))
	}
}

// A second SIGINT/SIGTERM forces the stop at once.
func TestSecondSignalForcesStop(t *testing.T) {
	p := startStalled(t)
	p.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	began := time.Now()
	code := p.stop(t, syscall.SIGINT, 5*time.Second)
	if code != 1 {
		t.Fatalf("exit code %d after a forced stop, want 1", code)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("the second signal took %s to stop it", took)
	}
	if !strings.Contains(p.stderr.String(), "again: stopping now, confirming nothing more") {
		t.Fatalf("no word on the forced stop:\n%s", tailString(p.stderr.String(), 2000))
	}
}

// SIGHUP is a graceful stop, like SIGTERM (it used to kill the process
// with 129, without a word).
func TestSIGHUPStopsGracefully(t *testing.T) {
	db := blog(t, 5, 20, 20)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.stderr.String(), "streaming") {
		if time.Now().After(deadline) {
			t.Fatalf("follow did not start streaming\n%s", p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := p.stop(t, syscall.SIGHUP, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGHUP, want 0 (a graceful stop)\n%s", code, tailString(p.stderr.String(), 2000))
	}
	for _, want := range []string{"stopping: finishing the transaction in hand", "stopped cleanly"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("no %q in the log: a clean stop must be told from a crash\n%s", want, tailString(p.stderr.String(), 2000))
		}
	}
}
