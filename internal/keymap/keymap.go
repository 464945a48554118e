// Package keymap is the durable local key map of issue 14: for each table
// whose old row the pipeline would need but whose replica identity does not
// send it (a has_many child under DEFAULT identity, say), it maps every row's
// key to the join values that tie the row to its parents, so a DELETE or a
// parent-changing UPDATE that carries only the key still finds its old parents.
//
// The map lives in state.dir as a Pebble store. It is changed one committed
// transaction at a time (Begin … Commit), each batch applied atomically with
// the LSN it brings the map to; Sync makes the map durable up to that LSN
// (call it before the LSN is confirmed). A transaction at or below the map's
// LSN is a replay: its writes are ignored and its reads answer what the first
// run read, from the pre-images every transaction records (kept until Prune
// is told the transaction was confirmed). A map built for another
// configuration or format, one whose load never finished, or a damaged one is
// refused by Open with ErrRebuild. See docs/keymap.md.
package keymap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// formatVersion names the layout of the store (see encode.go). A change of
// layout changes it, and a map of another format is rebuilt, never read.
const formatVersion = "flusso-keymap/1"

// ErrRebuild says the map in the directory cannot be trusted: missing, from
// another configuration or format, never finished loading, or damaged. The
// cure is Create and a load from a fresh snapshot.
var ErrRebuild = errors.New("the key map must be rebuilt from a fresh snapshot")

// Spec says what the map keeps for one table: its key columns and the join
// columns the plan needs from the old row, by name as change.Row.Cols spells
// them.
type Spec struct {
	Table change.Table
	Key   []string
	Join  []string
}

// Options configure a map.
type Options struct {
	// Tables are the tables the map keeps. Their specs are part of the
	// fingerprint: a map built for other tables or columns is rebuilt.
	Tables []Spec
	// Fingerprint is what else the map was built for: the server's system
	// identifier and the slot, say. A map with another fingerprint is rebuilt.
	Fingerprint string
	// CacheBytes is the block cache (default 32 MiB). With MemTableBytes it
	// bounds the map's memory, whatever the size of the tables.
	CacheBytes int64
	// MemTableBytes is the size of one memtable (default 8 MiB; at most two
	// are held before writes wait for a flush).
	MemTableBytes int64
	// Logger receives Pebble's own messages (nil: none but fatal ones).
	Logger *zap.Logger

	fs         vfs.FS // tests: a crashable in-memory file system
	chunkBytes int    // tests: the chunk size of a large transaction (default a quarter of a memtable)
}

func (o *Options) filesystem() vfs.FS {
	if o.fs != nil {
		return o.fs
	}
	return vfs.Default
}

const (
	defaultCache    = 32 << 20
	defaultMemTable = 8 << 20
)

// Map is an open key map. Begin/Commit, the Loader and Prune are for one
// goroutine (the pipeline's); LSN, DurableLSN, Entries, Bytes and Lookup may
// be called from any.
type Map struct {
	db    *pebble.DB
	cache interface{ Unref() }
	dir   string
	specs []Spec
	tids  map[change.Table]uint32

	mu      sync.Mutex
	lsn     uint64 // the map reflects every transaction up to here
	durable uint64 // and is durable up to here
	stored  uint64 // the LSN last written (transactions that change nothing write none: Sync writes it)
	// wmu orders the writes of the map's LSN: a batch's commit, and Sync's
	// write of the LSN of the transactions that changed nothing since.
	wmu    sync.Mutex
	pruned uint64 // journal records below this are gone
	counts []int64
	open   bool // a batch is open

	chunkBytes int
	// lostClear: a crash cut a transaction after a chunk with its truncate
	// of these tables was written; until the transaction is applied again,
	// reads of them may differ from its first run's (Batch.Uncertain).
	lostClear  map[uint32]bool
	rolledBack bool // Open rolled a cut transaction back (tests)

	// grp gathers the committed transactions' batches (an indexed batch:
	// reads see it over the store) until FlushGroup writes them at once,
	// one write to the store per group of transactions rather than per
	// transaction. The batch goroutine's; gmu lets Lookup read it from
	// another goroutine. flushed is the LSN the store holds every change
	// up to (transactions after the last written one changed nothing);
	// written is the LSN of the last transaction in grp that changed
	// something.
	grp     *pebble.Batch
	gmu     sync.RWMutex
	flushed uint64
	written uint64
}

func (o *Options) normalize() []Spec {
	specs := append([]Spec(nil), o.Tables...)
	sort.Slice(specs, func(i, j int) bool {
		a, b := specs[i].Table, specs[j].Table
		if a.Schema != b.Schema {
			return a.Schema < b.Schema
		}
		return a.Name < b.Name
	})
	return specs
}

// fingerprint is everything a map depends on, as one string.
func fingerprint(specs []Spec, extra string) string {
	var b strings.Builder
	b.WriteString(formatVersion)
	for _, s := range specs {
		fmt.Fprintf(&b, "\n%s key(%s) join(%s)", s.Table.Quoted(), strings.Join(s.Key, ","), strings.Join(s.Join, ","))
	}
	b.WriteString("\n" + extra)
	return b.String()
}

func (o *Options) pebbleOptions(create bool) (*pebble.Options, interface{ Unref() }) {
	cacheBytes, mem := o.CacheBytes, o.MemTableBytes
	if cacheBytes <= 0 {
		cacheBytes = defaultCache
	}
	if mem <= 0 {
		mem = defaultMemTable
	}
	c := pebble.NewCache(cacheBytes)
	po := &pebble.Options{
		Cache:                       c,
		MemTableSize:                uint64(mem),
		MemTableStopWritesThreshold: 2,
		ErrorIfNotExists:            !create,
		Logger:                      pebbleLogger{o.Logger},
		FS:                          o.filesystem(),
		// A damaged block fails the read with a corruption error (reported
		// as ErrRebuild) instead of Pebble's default, a fatal log.
		EventListener: &pebble.EventListener{DataCorruption: func(info pebble.DataCorruptionInfo) {
			if o.Logger != nil {
				o.Logger.Error("the key map is damaged", zap.String("detail", info.String()))
			}
		}},
	}
	return po, c
}

// Open opens the map in dir. A map that is missing, was built for other
// options or another format, never finished its load, or is damaged is
// refused with an error that wraps ErrRebuild.
func Open(dir string, o Options) (*Map, error) {
	specs := o.normalize()
	po, c := o.pebbleOptions(false)
	db, err := pebble.Open(dir, po)
	if err != nil {
		c.Unref()
		if errors.Is(err, pebble.ErrDBDoesNotExist) {
			return nil, fmt.Errorf("no key map in %s: %w", dir, ErrRebuild)
		}
		if pebble.IsCorruptionError(err) {
			return nil, fmt.Errorf("the key map in %s is damaged (%v): %w", dir, err, ErrRebuild)
		}
		return nil, fmt.Errorf("open the key map in %s: %w", dir, err)
	}
	m := newMap(db, c, dir, specs, o.chunk())
	fail := func(why string) (*Map, error) {
		_ = m.Close()
		return nil, fmt.Errorf("the key map in %s %s: %w", dir, why, ErrRebuild)
	}
	format, err := m.get(metaFormat)
	if err != nil {
		return fail("cannot be read (" + err.Error() + ")")
	}
	if string(format) != formatVersion {
		return fail(fmt.Sprintf("has format %q, this flusso-pg writes %q", format, formatVersion))
	}
	fp, err := m.get(metaFingerprint)
	if err != nil {
		return fail("cannot be read (" + err.Error() + ")")
	}
	if string(fp) != fingerprint(specs, o.Fingerprint) {
		return fail("was built for another configuration (other tables, columns, server or slot)")
	}
	lsn, err := m.get(metaLSN)
	if err != nil {
		return fail("cannot be read (" + err.Error() + ")")
	}
	if len(lsn) != 8 {
		return fail("was never completely loaded")
	}
	m.lsn = binary.BigEndian.Uint64(lsn)
	m.durable = m.lsn // Pebble flushes (and fsyncs) what it recovers from its log before Open returns
	m.stored, m.flushed, m.written = m.lsn, m.lsn, m.lsn
	for i := range specs {
		v, err := m.get(countKey(uint32(i)))
		if err != nil {
			return fail("cannot be read (" + err.Error() + ")")
		}
		if v != nil {
			n, w := binary.Varint(v)
			if w <= 0 {
				return fail("has a damaged entry count")
			}
			m.counts[i] = n
		}
	}
	lost, err := m.get(metaLost)
	if err != nil {
		return fail("cannot be read (" + err.Error() + ")")
	}
	for ; len(lost) >= 4; lost = lost[4:] {
		m.lostClear[binary.BigEndian.Uint32(lost)] = true
	}
	if err := m.clearScratch([]byte{pScratch}, []byte{pScratch + 1}); err != nil {
		return fail("cannot be cleaned (" + err.Error() + ")")
	}
	if err := m.rollbackPartial(); err != nil {
		return fail("cannot be rolled back to its last transaction (" + err.Error() + ")")
	}
	return m, nil
}

// clearScratch removes the scratch keys in [lo, hi) (point deletions: a
// range deletion in the memtable would slow every read).
func (m *Map) clearScratch(lo, hi []byte) error {
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("clear the key map's scratch: %w", err)
	}
	b := m.db.NewBatch()
	defer b.Close()
	for it.First(); it.Valid(); it.Next() {
		_ = b.Delete(it.Key(), nil)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("clear the key map's scratch: %w", err)
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("clear the key map's scratch: %w", err)
	}
	return nil
}

// undoKey undoes, in b, one key a cut transaction's journal names: a
// truncate marks its table's entries as lost; a pre-image puts the entry
// back as it was (present or absent), adjusting the count.
func (m *Map) undoKey(b *pebble.Batch, k []byte) error {
	if len(k) < 5 {
		return errDecode
	}
	tid := binary.BigEndian.Uint32(k[1:5])
	if int(tid) >= len(m.counts) {
		return errDecode
	}
	_ = b.Delete(k, nil)
	if k[0] == pTrunc {
		m.lostClear[tid] = true
		return nil
	}
	if k[0] != pUndo || len(k) < 13 {
		return errDecode
	}
	ek := append([]byte{pEntry}, k[1:len(k)-8]...)
	pre, err := m.get(k)
	if err != nil {
		return err
	}
	cur, err := m.get(ek)
	if err != nil {
		return err
	}
	switch {
	case len(pre) > 0 && pre[0] == 1:
		_ = b.Set(ek, pre[1:], nil)
		if cur == nil {
			m.counts[tid]++
		}
	case len(pre) > 0:
		_ = b.Delete(ek, nil)
		if cur != nil {
			m.counts[tid]--
		}
	default:
		return errDecode
	}
	return nil
}

// rollbackPartial undoes the chunks of a transaction that a crash cut
// before its commit: every entry it touched gets its pre-image back, so the
// map is exactly at its LSN again (but for the entries of a table whose
// truncate was in a chunk: those are gone, see lostClear), and the slot's
// resend of the transaction applies it anew.
func (m *Map) rollbackPartial() error {
	v, err := m.get(metaPartial)
	if err != nil || v == nil {
		return err
	}
	if len(v) != 8 {
		return errDecode
	}
	lsn := binary.BigEndian.Uint64(v)
	b := m.db.NewBatch()
	defer b.Close()
	if lsn > m.lsn {
		prefix := journalKey(lsn)
		it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: successor(prefix)})
		if err != nil {
			return err
		}
		var keys [][]byte
		for it.First(); it.Valid(); it.Next() {
			_ = b.Delete(it.Key(), nil)
			if err := eachJournal(it.Value(), func(k []byte) { keys = append(keys, append([]byte(nil), k...)) }); err != nil {
				_ = it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		for _, k := range keys {
			if err := m.undoKey(b, k); err != nil {
				return err
			}
		}
		for tid, n := range m.counts {
			_ = b.Set(countKey(uint32(tid)), binary.AppendVarint(nil, n), nil)
		}
		// Until the transaction is applied again (it truncates those tables
		// anew), a crash must not forget that their entries are incomplete.
		var lost []byte
		for tid := range m.lostClear {
			lost = binary.BigEndian.AppendUint32(lost, tid)
		}
		if lost != nil {
			_ = b.Set(metaLost, lost, nil)
		}
	}
	_ = b.Delete(metaPartial, nil)
	m.rolledBack = lsn > m.lsn
	return b.Commit(pebble.Sync)
}

// Create makes a new, empty map in dir, removing whatever was there. It is
// not ready (Open refuses it) until a load is finished with FinishLoad.
func Create(dir string, o Options) (*Map, error) {
	specs := o.normalize()
	if err := o.filesystem().RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("remove the old key map in %s: %w", dir, err)
	}
	po, c := o.pebbleOptions(true)
	db, err := pebble.Open(dir, po)
	if err != nil {
		c.Unref()
		return nil, fmt.Errorf("create the key map in %s: %w", dir, err)
	}
	m := newMap(db, c, dir, specs, o.chunk())
	b := db.NewBatch()
	_ = b.Set(metaFormat, []byte(formatVersion), nil)
	_ = b.Set(metaFingerprint, []byte(fingerprint(specs, o.Fingerprint)), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		_ = m.Close()
		return nil, fmt.Errorf("create the key map in %s: %w", dir, err)
	}
	return m, nil
}

// chunk is the size past which a transaction's batch is written as a
// chunk: a quarter of a memtable (a batch larger than half of one would be
// written by Pebble as a table file of its own).
func (o *Options) chunk() int {
	if o.chunkBytes > 0 {
		return o.chunkBytes
	}
	mem := o.MemTableBytes
	if mem <= 0 {
		mem = defaultMemTable
	}
	return int(mem / 4)
}

func newMap(db *pebble.DB, c interface{ Unref() }, dir string, specs []Spec, chunk int) *Map {
	m := &Map{db: db, cache: c, dir: dir, specs: specs, tids: map[change.Table]uint32{}, counts: make([]int64, len(specs)),
		chunkBytes: chunk, lostClear: map[uint32]bool{}}
	for i, s := range specs {
		m.tids[s.Table] = uint32(i)
	}
	return m
}

// reader is where the batch goroutine reads: the group's batch over the
// store, or the store.
func (m *Map) reader() pebble.Reader {
	if m.grp != nil {
		return m.grp
	}
	return m.db
}

// FlushGroup writes the transactions committed since the last flush to
// the store, at once (not fsynced: Sync does that). Call it on the batch
// goroutine at the end of a group of transactions, before Sync.
func (m *Map) FlushGroup() error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	lsn, written := m.lsn, m.written
	m.mu.Unlock()
	if m.grp != nil {
		if err := m.grp.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("write the key map up to %s: %w", pglogrepl.LSN(lsn), err)
		}
		m.gmu.Lock()
		_ = m.grp.Close()
		m.grp = nil
		m.gmu.Unlock()
	}
	m.mu.Lock()
	m.stored = max(m.stored, written)
	m.flushed = max(m.flushed, lsn)
	m.mu.Unlock()
	return nil
}

// get returns a copy of the value at key, nil when there is none.
func (m *Map) get(key []byte) ([]byte, error) {
	v, closer, err := m.reader().Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	return out, closer.Close()
}

// Close closes the store. What was committed survives a crash up to the
// durable LSN, and (unless the machine itself crashed) up to LSN. The
// transactions that changed nothing since the last one written move the
// written LSN now, so that the map opens again at LSN.
func (m *Map) Close() error {
	ferr := m.FlushGroup()
	m.wmu.Lock()
	m.mu.Lock()
	lsn, stored, loaded := m.lsn, m.stored, m.lsn != 0
	m.mu.Unlock()
	err := ferr
	if err == nil && loaded && lsn > stored {
		// Only once the group is in the store: an LSN written past what
		// the store holds would make its transactions replays.
		err = m.db.Set(metaLSN, appendLSN(nil, lsn), pebble.NoSync)
	}
	m.wmu.Unlock()
	if cerr := m.db.Close(); err == nil {
		err = cerr
	}
	m.cache.Unref()
	if err != nil {
		return fmt.Errorf("close the key map: %w", err)
	}
	return nil
}

// LSN is the position the map reflects: every transaction ending at or
// before it is in the map. 0 until a load is finished.
func (m *Map) LSN() pglogrepl.LSN {
	m.mu.Lock()
	defer m.mu.Unlock()
	return pglogrepl.LSN(m.lsn)
}

// DurableLSN is the position up to which the map is on disk (fsynced):
// after a crash it opens at this LSN or later.
func (m *Map) DurableLSN() pglogrepl.LSN {
	m.mu.Lock()
	defer m.mu.Unlock()
	return pglogrepl.LSN(m.durable)
}

// Sync makes the map durable up to LSN() as of the last FlushGroup: after
// it, even a crash of the machine leaves the map there or later. Call it
// (after FlushGroup) before confirming LSN(). It may run on another
// goroutine than the batches.
// The transactions that changed nothing since the last one written move
// the written LSN here, once per sync rather than once each. The fsync does
// not hold up batches being committed meanwhile.
func (m *Map) Sync() error {
	m.wmu.Lock()
	m.mu.Lock()
	lsn, durable, stored := m.flushed, m.durable, m.stored
	m.mu.Unlock()
	if durable >= lsn {
		m.wmu.Unlock()
		return nil // nothing since the last sync: no fsync
	}
	b := m.db.NewBatch()
	if lsn > stored {
		_ = b.Set(metaLSN, appendLSN(nil, lsn), nil)
	}
	_ = b.Set(metaDurable, appendLSN(nil, lsn), nil)
	err := b.Commit(pebble.NoSync)
	_ = b.Close()
	if err == nil && lsn > stored {
		m.mu.Lock()
		m.stored = max(m.stored, lsn)
		m.mu.Unlock()
	}
	m.wmu.Unlock()
	if err == nil {
		// The write-ahead log is sequential: syncing it now makes every
		// batch committed before durable too.
		err = m.db.LogData([]byte{0}, pebble.Sync)
	}
	if err != nil {
		return fmt.Errorf("sync the key map: %w", err)
	}
	m.mu.Lock()
	m.durable = max(m.durable, lsn)
	m.mu.Unlock()
	return nil
}

// Entries is the number of rows the map holds, all tables together
// (flusso_keymap_entries).
func (m *Map) Entries() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, c := range m.counts {
		n += c
	}
	return n
}

// TableEntries is the number of rows the map holds for table t.
func (m *Map) TableEntries(t change.Table) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tid, ok := m.tids[t]; ok {
		return m.counts[tid]
	}
	return 0
}

// Bytes is the space the map takes on disk (flusso_keymap_bytes): tables,
// write-ahead log, manifest.
func (m *Map) Bytes() int64 {
	return int64(m.db.Metrics().DiskSpaceUsage())
}

func (m *Map) tid(t change.Table) (uint32, error) {
	tid, ok := m.tids[t]
	if !ok {
		return 0, fmt.Errorf("table %s is not in the key map", t)
	}
	return tid, nil
}

// Lookup returns the join values the map holds for key in table t now (at
// LSN()), and whether it holds the key at all.
func (m *Map) Lookup(t change.Table, key []change.Value) ([]change.Value, bool, error) {
	tid, err := m.tid(t)
	if err != nil {
		return nil, false, err
	}
	m.gmu.RLock()
	v, err := m.get(entryKey(nil, tid, key))
	m.gmu.RUnlock()
	if err != nil || v == nil {
		return nil, false, wrapRead(err)
	}
	vals, err := decodeVals(v)
	return vals, err == nil, wrapRead(err)
}

func wrapRead(err error) error {
	if err == nil {
		return nil
	}
	if pebble.IsCorruptionError(err) || errors.Is(err, errDecode) {
		return fmt.Errorf("read the key map: %v: %w", err, ErrRebuild)
	}
	return fmt.Errorf("read the key map: %w", err)
}

// Prune forgets the pre-images of transactions ending at or before upTo:
// call it with the confirmed LSN, which is never replayed again. (Point
// deletions only: a range deletion in the memtable would slow every read.)
func (m *Map) Prune(upTo pglogrepl.LSN) error {
	m.mu.Lock()
	from := m.pruned
	m.mu.Unlock()
	if uint64(upTo) < from {
		return nil
	}
	lo, hi := journalKey(from), successor(journalKey(uint64(upTo)))
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("prune the key map: %w", err)
	}
	b := m.db.NewBatch()
	defer b.Close()
	for it.First(); it.Valid(); it.Next() {
		_ = b.Delete(it.Key(), nil)
		if err := eachJournal(it.Value(), func(k []byte) { _ = b.Delete(k, nil) }); err != nil {
			_ = it.Close()
			return fmt.Errorf("prune the key map: %w", err)
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("prune the key map: %w", err)
	}
	if !b.Empty() {
		if err := b.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("prune the key map: %w", err)
		}
	}
	m.mu.Lock()
	m.pruned = max(m.pruned, uint64(upTo)+1)
	m.mu.Unlock()
	return nil
}

// pebbleLogger hands Pebble's messages to zap: information at debug level.
type pebbleLogger struct{ l *zap.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l != nil {
		p.l.Sugar().Debugf(format, args...)
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l != nil {
		p.l.Sugar().Warnf(format, args...)
	}
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("keymap: pebble: "+format, args...))
}

// Verify reads the whole store, checking every block's checksum and that
// every entry decodes: a damaged map fails with ErrRebuild.
func (m *Map) Verify() error {
	it, err := m.db.NewIter(nil)
	if err != nil {
		return wrapRead(err)
	}
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) > 0 && k[0] == pEntry {
			v, err := it.ValueAndErr()
			if err != nil {
				_ = it.Close()
				return wrapRead(err)
			}
			if _, err := decodeVals(v); err != nil {
				_ = it.Close()
				return wrapRead(err)
			}
		}
	}
	return wrapRead(it.Close())
}
