package state

import (
	"fmt"
	"os"
)

// probeSize is how much CheckWritable writes: a few records' worth, so a
// file system with no room for the next records fails now, not after the
// slot was created.
const probeSize = 64 << 10

// CheckWritable proves the state dir can hold the store's records: it
// creates the folder when missing, writes, fsyncs and removes a probe file.
// follow calls it before anything is created on the server, so an
// unwritable or full state dir cannot leave an orphan slot behind.
func (s *Store) CheckWritable() error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("state dir %s cannot be created (%w): fix its permissions or give another with --state-dir (state.dir)", s.Dir, err)
	}
	f, err := os.CreateTemp(s.Dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("state dir %s is not writable (%w): fix its permissions or give another with --state-dir (state.dir)", s.Dir, err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.Write(make([]byte, probeSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("state dir %s cannot hold the progress records (%w): free some space or give another with --state-dir (state.dir)", s.Dir, err)
	}
	return nil
}
