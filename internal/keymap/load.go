package keymap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// loadBatchBytes is how much a Loader gathers before it writes.
const loadBatchBytes = 4 << 20

// Loader fills a new map from the backfill's snapshot: one per worker (each
// is for one goroutine; several may load at once). Every key is added once
// (the snapshot holds each row once); nothing is read back.
type Loader struct {
	m      *Map
	b      *pebble.Batch
	counts []int64
	closed bool
}

// NewLoader starts a loader. Only a map that Create made and that no
// FinishLoad has finished can be loaded.
func (m *Map) NewLoader() (*Loader, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lsn != 0 {
		return nil, errors.New("the key map is already loaded: create a new one to load again")
	}
	return &Loader{m: m, b: m.db.NewBatch(), counts: make([]int64, len(m.specs))}, nil
}

// Add puts the join values of key in table t.
func (l *Loader) Add(t change.Table, key, join []change.Value) error {
	if l.closed {
		return errors.New("the key map loader is closed")
	}
	tid, err := l.m.tid(t)
	if err != nil {
		return err
	}
	if err := l.b.Set(entryKey(nil, tid, key), appendVals(nil, join), nil); err != nil {
		return fmt.Errorf("load the key map: %w", err)
	}
	l.counts[tid]++
	if l.b.Len() >= loadBatchBytes {
		return l.flush()
	}
	return nil
}

func (l *Loader) flush() error {
	if l.b.Empty() {
		return nil
	}
	if err := l.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("load the key map: %w", err)
	}
	_ = l.b.Close()
	l.b = l.m.db.NewBatch()
	return nil
}

// Close writes what the loader still holds. The rows count once the map's
// FinishLoad is called.
func (l *Loader) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	err := l.flush()
	_ = l.b.Close()
	if err != nil {
		return err
	}
	l.m.mu.Lock()
	for i, n := range l.counts {
		l.m.counts[i] += n
	}
	l.m.mu.Unlock()
	return nil
}

// FinishLoad marks the load done at lsn, the position of the snapshot it
// was read in (the slot's consistent point), and makes it durable. Every
// loader must be closed first. From then on Open accepts the map.
func (m *Map) FinishLoad(lsn pglogrepl.LSN) error {
	if lsn == 0 {
		return errors.New("finish the key map load: the snapshot's LSN is 0")
	}
	m.mu.Lock()
	if m.lsn != 0 {
		m.mu.Unlock()
		return errors.New("the key map is already loaded")
	}
	b := m.db.NewBatch()
	for tid, n := range m.counts {
		_ = b.Set(countKey(uint32(tid)), binary.AppendVarint(nil, n), nil)
	}
	m.mu.Unlock()
	_ = b.Set(metaLSN, appendLSN(nil, uint64(lsn)), nil)
	_ = b.Set(metaDurable, appendLSN(nil, uint64(lsn)), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("finish the key map load: %w", err)
	}
	m.mu.Lock()
	m.lsn, m.durable, m.stored, m.flushed, m.written = uint64(lsn), uint64(lsn), uint64(lsn), uint64(lsn), uint64(lsn)
	m.mu.Unlock()
	return nil
}

// Dir is where the map of slot lives in stateDir.
func Dir(stateDir, slot string) string { return filepath.Join(stateDir, slot+".keymap") }

// DiskBytes is the space the files of the map in dir take, read without
// opening it (a running follow holds it): 0 and false when there is none.
func DiskBytes(dir string) (int64, bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	var n int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !info.IsDir() {
			n += info.Size()
		}
	}
	return n, len(entries) > 0
}

// Reload replaces every entry of table t with the rows fill adds (through
// add, each key once): the table's rows read now, when the map cannot vouch
// for them (the table was out of the publication, so changes to it never
// reached the map). No batch may be open. The entries are then as of fill's
// read, newer than the map's LSN; the transactions the stream still carries
// for the table apply on top and end at the same values (each key's last
// change sets what the read saw), but until then a read can answer a value
// from the future, so the caller must rebuild, after the reload, every index
// that reads the table. A reload cut short by a crash leaves a part of the
// rows: the caller records the need first and reloads again at the next start.
func (m *Map) Reload(t change.Table, fill func(add func(key, join []change.Value) error) error) error {
	m.mu.Lock()
	if m.lsn == 0 || m.open {
		m.mu.Unlock()
		return errors.New("reload the key map: it is not loaded, or a batch is open")
	}
	m.open = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.open = false
		m.mu.Unlock()
	}()
	// The transactions gathered so far go first: written after the
	// reload, their entries of t would overwrite it.
	if err := m.FlushGroup(); err != nil {
		return err
	}
	tid, err := m.tid(t)
	if err != nil {
		return err
	}
	b := m.db.NewBatch()
	defer func() { _ = b.Close() }()
	lo, hi := tableSpan(tid)
	_ = b.DeleteRange(lo, hi, nil)
	var n int64
	add := func(key, join []change.Value) error {
		if err := b.Set(entryKey(nil, tid, key), appendVals(nil, join), nil); err != nil {
			return err
		}
		n++
		if b.Len() < loadBatchBytes {
			return nil
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		_ = b.Close()
		b = m.db.NewBatch()
		return nil
	}
	if err := fill(add); err != nil {
		return fmt.Errorf("reload %s in the key map: %w", t, err)
	}
	_ = b.Set(countKey(tid), binary.AppendVarint(nil, n), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("reload %s in the key map: %w", t, err)
	}
	m.mu.Lock()
	m.counts[tid] = n
	m.mu.Unlock()
	return nil
}
