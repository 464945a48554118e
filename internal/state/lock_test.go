package state

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLockRefusesASecondHolderNamingTheFirst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "st")
	a := New(dir, "s1")
	l, err := a.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	// Another open file description: flock is per description, as between
	// two processes.
	_, err = New(dir, "s1").Acquire()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Acquire: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), "another state.dir") {
		t.Fatalf("the error does not name the holder and the fix: %v", err)
	}
	// Another slot in the same folder is another set of records.
	other, err := New(dir, "s2").Acquire()
	if err != nil {
		t.Fatalf("another slot in the same dir: %v", err)
	}
	other.Release()
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := New(dir, "s1").Acquire()
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("state dir mode %v (%v), want no access for others", st.Mode(), err)
	}
}

// A holder that dies (kill -9) leaves its lock file behind, and the lock is
// free at once.
func TestLockIsFreedWhenTheHolderIsKilled(t *testing.T) {
	if os.Getenv("STATE_LOCK_CHILD") != "" {
		if _, err := New(os.Getenv("STATE_LOCK_CHILD"), "s").Acquire(); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("locked\n")
		time.Sleep(time.Minute)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockIsFreedWhenTheHolderIsKilled$")
	cmd.Env = append(os.Environ(), "STATE_LOCK_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf) != "locked\n" {
		cmd.Process.Kill()
		t.Fatalf("child did not lock: %q %v", buf, err)
	}
	_, err = New(dir, "s").Acquire()
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
		cmd.Process.Kill()
		t.Fatalf("while the child holds it: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := New(dir, "s").Acquire()
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	l.Release()
}
