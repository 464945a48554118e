package snapshot

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds cmd/flusso-pg into dir.
func buildBinary(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "flusso-pg")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/flusso-pg")
	cmd.Dir = filepathRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func filepathRoot(t testing.TB) string {
	return filepath.Dir(filepath.Dir(workload(t, "")))
}

// TestCLIBackfill runs the built binary: killed with SIGKILL mid-way and run
// again into the same file, the fold equals the reference (the one-shot
// command keeps no progress: it starts over, and the output file keeps only
// whole lines); to stdout it writes the documents and nothing else; a bad
// --index or a config that does not match the database is refused.
func TestCLIBackfill(t *testing.T) {
	db, _ := loadBlog(t, "50", "3000", "9000")
	want := blogReference(t, db.Pool)
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	blog := readFile(t, workload(t, "flusso.yaml"))
	indexes := blog[strings.Index(blog, "\nindexes:")+1:]
	config := filepath.Join(dir, "flusso.yaml")
	if err := os.WriteFile(config, []byte("source:\n  dsn: "+db.DSN+"\n"+indexes), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("killed and run again", func(t *testing.T) {
		out := filepath.Join(dir, "out.ndjson")
		cmd := exec.Command(bin, "backfill", "--config", config, "--output", out, "--workers", "2", "--batch-size", "10")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			if st, err := os.Stat(out); err == nil && st.Size() > 150<<10 {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("no output after 60 s: %s", stderr.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !st.Signaled() {
			t.Fatalf("the backfill was not killed (it finished first?): %v\n%s", err, stderr.String())
		}
		again := exec.Command(bin, "backfill", "--config", config, "--output", out, "--workers", "2")
		stdout, err := again.Output()
		if err != nil {
			t.Fatalf("second run: %v\n%s", err, stderrOf(err))
		}
		if len(stdout) != 0 {
			t.Fatalf("wrote %d bytes to stdout with --output", len(stdout))
		}
		lines := readLines(t, out)
		if len(lines) <= len(want) {
			t.Fatalf("%d lines: the killed run wrote nothing?", len(lines))
		}
		sameDocs(t, fold(t, lines, "posts"), want)
	})

	t.Run("stdout", func(t *testing.T) {
		cmd := exec.Command(bin, "backfill", "--config", config, "--index", "posts", "--workers", "1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr.String())
		}
		path := filepath.Join(t.TempDir(), "out.ndjson")
		os.WriteFile(path, stdout, 0o644)
		lines := readLines(t, path)
		eachKeyOnce(t, lines)
		sameDocs(t, fold(t, lines, "posts"), want)
		if !strings.Contains(stderr.String(), "backfill done") || strings.Contains(stderr.String(), "\x1b[") {
			t.Fatalf("stderr (not a terminal: log lines, no bars):\n%s", stderr.String())
		}
	})

	t.Run("refused", func(t *testing.T) {
		out, err := exec.Command(bin, "backfill", "--config", config, "--index", "nope").CombinedOutput()
		if err == nil || !strings.Contains(string(out), `"nope"`) {
			t.Fatalf("--index nope: %v\n%s", err, out)
		}
		bad := filepath.Join(dir, "bad.yaml")
		os.WriteFile(bad, []byte("source:\n  dsn: "+db.DSN+"\nindexes:\n  - name: posts\n    table: posts\n    columns: [id, nosuch]\n"), 0o644)
		out, err = exec.Command(bin, "backfill", "--config", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "nosuch") {
			t.Fatalf("bad column: %v\n%s", err, out)
		}
	})
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
