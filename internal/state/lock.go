package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked reports that another process holds the state of the slot.
var ErrLocked = errors.New("the state dir is in use by another flusso-pg")

// Lock is a held lock on one slot's records in a state dir.
type Lock struct {
	f *os.File
}

// LockFile is the lock file of slot in dir.
func LockFile(dir, slot string) string { return filepath.Join(dir, slot+".lock") }

// Acquire takes the lock on the store's records for the life of the process
// (or until Release): an exclusive flock on <slot>.lock in the state dir,
// which records the holder's pid. Two processes following one slot from one
// state dir would overwrite each other's progress, so the second is refused
// at once, naming the holder. The kernel drops the lock when the holder
// dies, however it dies: a stale lock file is never a problem.
func (s *Store) Acquire() (*Lock, error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := LockFile(s.Dir, s.Slot)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by %s for slot %s; stop that process first, or give this one another state.dir (or another slot)",
				ErrLocked, path, holder(path), s.Slot)
		}
		return nil, fmt.Errorf("state dir: lock %s: %w", path, err)
	}
	// Record who holds it, for the message above.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// holder reads the pid recorded in the lock file.
func holder(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "another process"
	}
	pid := strings.TrimSpace(string(data))
	if _, err := strconv.Atoi(pid); err != nil {
		return "another process"
	}
	return "pid " + pid
}

// Release gives the lock up. The file stays: removing it could let a third
// process lock a new file while a second still waits on the old one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}
