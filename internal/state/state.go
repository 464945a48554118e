// Package state keeps flusso-pg's progress on disk, in the state dir
// (state.dir, by default .flusso-state next to the config file): which server
// and slot the progress belongs to, how far a backfill got, and whether
// flusso-pg created the publication. Each record is one small JSON file,
// written atomically (temporary file, fsync, rename, fsync of the folder), so
// a kill -9 at any moment leaves either the old record or the new one.
//
// Files are named after the slot, so several configs may share one folder:
// <slot>.identity.json, <slot>.backfill.json, <slot>.publication.json. One
// process at a time follows a slot from a folder: it holds an flock on
// <slot>.lock (Store.Acquire), and a second is refused naming the first.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pglogrepl"
)

// Store reads and writes the records of one slot in one folder.
type Store struct {
	Dir  string
	Slot string
}

// New returns the store for slot in dir; the folder is created on first write.
func New(dir, slot string) *Store { return &Store{Dir: dir, Slot: slot} }

func (s *Store) path(record string) string {
	return filepath.Join(s.Dir, s.Slot+"."+record+".json")
}

// Load reads record into v. It returns false (and no error) when the record
// does not exist.
func (s *Store) Load(record string, v any) (bool, error) {
	data, err := os.ReadFile(s.path(record))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("state file %s is damaged (%v): move it away and start again with --resync", s.path(record), err)
	}
	return true, nil
}

// Save writes record atomically and durably.
func (s *Store) Save(record string, v any) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	final := s.path(record)
	tmp, err := os.CreateTemp(s.Dir, "."+filepath.Base(final)+".*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if d, err := os.Open(s.Dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Remove deletes record; a missing record is not an error.
func (s *Store) Remove(record string) error {
	err := os.Remove(s.path(record))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Records.
const (
	IdentityRecord    = "identity"
	BackfillRecord    = "backfill"
	PublicationRecord = "publication"
	PartitionsRecord  = "partitions"
	RebuildsRecord    = "rebuilds"
)

// Identity ties the progress in the state dir to one server and one slot.
type Identity struct {
	SystemID        string        `json:"system_identifier"`
	Timeline        int32         `json:"timeline"`
	Database        string        `json:"database"`
	Slot            string        `json:"slot"`
	ConsistentPoint pglogrepl.LSN `json:"consistent_point"`
	CreatedAt       time.Time     `json:"created_at"`
}

// Publication records that flusso-pg created the publication (so `drop`
// removes it) or only added tables to it.
type Publication struct {
	Name    string    `json:"name"`
	Created bool      `json:"created"`
	At      time.Time `json:"at"`
}
