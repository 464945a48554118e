package follow_test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Large transactions spill to capture.spill_dir (by default under the state
// dir), never to $TMPDIR: with TMPDIR pointing nowhere, as on a read-only
// root file system, a transaction past the memory budget still comes out.
func TestSpillGoesToTheStateDir(t *testing.T) {
	db := blog(t, 20, 2000, 100)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), "capture:\n", "capture:\n  memory_budget: 64KiB\n", 1)), 0o600)
	out := filepath.Join(dir, "out.ndjson")
	addr := "127.0.0.1:" + freePort(t)
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &proc{stderr: &logBuf{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, "follow", "--config", cfg, "--listen", addr)
	p.cmd.Env = append(os.Environ(), "TMPDIR=/nonexistent/tmp")
	p.cmd.Stdout = f
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("flusso-pg stderr:\n%s", tailString(p.stderr.String(), 4000))
		}
	})
	waitFold(t, db, out, 60*time.Second)
	db.Exec(t, "UPDATE posts SET votes = votes + 1, body = repeat('spill ', 50)")
	waitFold(t, db, out, 60*time.Second)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "flusso_capture_spilled_transactions_total 0\n") {
		t.Fatal("the transaction did not spill: the test proves nothing")
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "spill")); err != nil {
		t.Fatalf("no spill folder under the state dir: %v", err)
	}
	p.stop(t, syscall.SIGTERM, 15*time.Second)
}
