package keymap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Batch is one committed transaction's changes to the map, applied
// atomically by Commit together with the transaction's LSN. Its reads see
// its own earlier writes: read a row's old join values, then write the row,
// in the transaction's order (Row does both).
//
// A batch begun at or below the map's LSN is a replay of a transaction the
// map already holds: its writes change nothing, and its reads answer what
// they answered the first time (from the pre-images the first run stored),
// so a transaction replayed after a crash resolves to the same documents.
type Batch struct {
	m      *Map
	lsn    uint64
	replay bool
	b      *pebble.Batch // nil on a replay

	over    map[string]overlay // entry key → the value this transaction left
	cleared map[uint32]bool
	undone  map[string]bool // entry keys whose pre-image is stored
	journal []byte
	delta   map[uint32]int64
	reset   map[uint32]bool

	// A transaction larger than the map's chunk size is written in chunks
	// (see flushChunk); chunks counts those written, cut the tables whose
	// truncate is in one of them.
	chunks int
	cut    map[uint32]bool

	// A replay keeps its own writes in over up to the chunk size, then
	// spills them to scratch keys in the store, removed when it ends.
	overBytes int
	spilled   bool

	uncertain bool
	done      bool
}

type overlay struct {
	val     []byte
	present bool
}

// Begin starts the batch of the transaction that ends at lsn (its end LSN,
// the position confirmed once it is written). One batch at a time.
func (m *Map) Begin(lsn pglogrepl.LSN) (*Batch, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lsn == 0 {
		return nil, errors.New("the key map is not loaded: finish a load first")
	}
	if m.open {
		return nil, errors.New("a key map batch is already open")
	}
	m.open = true
	b := &Batch{m: m, lsn: uint64(lsn), replay: uint64(lsn) <= m.lsn,
		over: map[string]overlay{}, cleared: map[uint32]bool{}}
	if !b.replay {
		b.b = m.db.NewBatch()
		b.undone, b.delta, b.reset, b.cut = map[string]bool{}, map[uint32]int64{}, map[uint32]bool{}, map[uint32]bool{}
	}
	return b, nil
}

// Replay reports whether the batch replays a transaction the map holds.
func (b *Batch) Replay() bool { return b.replay }

// Uncertain reports whether a read may have answered other than the first
// run of the transaction did, because a truncate hid the value: on a replay,
// a later transaction (still to be replayed) truncated the table; on the
// rerun of a transaction that a crash cut in the middle, its own truncate had
// been written. Either truncate, replayed, rebuilds every index that reads
// the table, so nothing is lost, but a caller may rebuild at once.
func (b *Batch) Uncertain() bool { return b.uncertain }

// read returns the entry for key as this transaction sees it now.
func (b *Batch) read(tid uint32, ek []byte, key []change.Value) ([]byte, bool, error) {
	if o, ok := b.over[string(ek)]; ok {
		return o.val, o.present, nil
	}
	if b.spilled {
		v, err := b.m.get(scratchKey(ek))
		if err != nil || v != nil {
			if err == nil && len(v) == 0 {
				err = errDecode
			}
			if err != nil {
				return nil, false, err
			}
			return v[1:], v[0] == 1, nil
		}
	}
	if b.cleared[tid] {
		return nil, false, nil
	}
	if !b.replay && !b.cut[tid] && b.m.lostClear[tid] {
		b.uncertain = true
	}
	if b.replay {
		return b.readAt(tid, ek, key)
	}
	v, err := b.m.get(ek)
	return v, v != nil, err
}

// readAt returns the entry as it was when transaction b.lsn began: the
// pre-image stored by the first transaction at or after b.lsn that touched
// the key, unless a truncate of the table came first; else the entry now.
func (b *Batch) readAt(tid uint32, ek []byte, key []change.Value) ([]byte, bool, error) {
	up := undoPrefix(nil, tid, key)
	u, uval, err := b.m.firstAtOrAfter(up, b.lsn)
	if err != nil {
		return nil, false, err
	}
	t, _, err := b.m.firstAtOrAfter(truncPrefix(nil, tid), b.lsn)
	if err != nil {
		return nil, false, err
	}
	switch {
	case u != 0 && (t == 0 || u <= t):
		if len(uval) == 0 {
			return nil, false, errDecode
		}
		if uval[0] == 0 {
			return nil, false, nil
		}
		return uval[1:], true, nil
	case t != 0:
		b.uncertain = true
		return nil, false, nil
	}
	v, err := b.m.get(ek)
	return v, v != nil, err
}

// firstAtOrAfter finds the first key prefix+lsn(8) with an LSN at or after
// lsn: its LSN (0 when there is none) and value.
func (m *Map) firstAtOrAfter(prefix []byte, lsn uint64) (uint64, []byte, error) {
	it, err := m.reader().NewIter(&pebble.IterOptions{LowerBound: appendLSN(append([]byte(nil), prefix...), lsn), UpperBound: successor(prefix)})
	if err != nil {
		return 0, nil, err
	}
	var found uint64
	var val []byte
	if it.First() {
		k := it.Key()
		if len(k) != len(prefix)+8 {
			_ = it.Close()
			return 0, nil, errDecode
		}
		found = binary.BigEndian.Uint64(k[len(prefix):])
		val = append([]byte(nil), it.Value()...)
	}
	return found, val, it.Close()
}

func (b *Batch) check() error {
	if b.done {
		return errors.New("the key map batch is already committed or discarded")
	}
	return nil
}

// write sets (val != nil) or deletes the entry for key, recording its
// pre-image the first time the transaction touches it.
func (b *Batch) write(tid uint32, key []change.Value, val []byte, present bool) error {
	ek := entryKey(nil, tid, key)
	prev, had, err := b.read(tid, ek, key)
	if err != nil {
		return wrapRead(err)
	}
	return b.writeRead(tid, ek, key, prev, had, val, present)
}

// writeRead is write when the entry's current value (prev, had: what read
// returns) is known.
func (b *Batch) writeRead(tid uint32, ek []byte, key []change.Value, prev []byte, had bool, val []byte, present bool) error {
	if !b.replay && b.chunks == 0 && had == present && (!present || bytes.Equal(prev, val)) {
		// The entry stays as the transaction sees it (an UPDATE of a
		// column outside the key and the join columns, the common case):
		// nothing to write, no pre-image to keep.
		return nil
	}
	var err error
	if !b.replay {
		uk := appendLSN(undoPrefix(nil, tid, key), b.lsn)
		first := !b.undone[string(ek)]
		if first && b.chunks > 0 {
			// An earlier chunk may have stored it.
			v, err := b.m.get(uk)
			if err != nil {
				return wrapRead(err)
			}
			first = v == nil
		}
		// The pre-image is the entry when the transaction began: the store's
		// (which holds no write of this transaction to this key yet), unless
		// a chunk already wrote this transaction's truncate of the table —
		// then it is lost, and the truncate's marker stands for it.
		if first && !b.cut[tid] {
			pre, pres := prev, had
			if _, touched := b.over[string(ek)]; touched || b.cleared[tid] {
				if pre, err = b.m.get(ek); err != nil {
					return wrapRead(err)
				}
				pres = pre != nil
			}
			uv := []byte{0}
			if pres {
				uv = append([]byte{1}, pre...)
			}
			_ = b.b.Set(uk, uv, nil)
			b.journal = appendJournal(b.journal, uk)
			b.undone[string(ek)] = true
		}
		if present {
			_ = b.b.Set(ek, val, nil)
		} else {
			_ = b.b.Delete(ek, nil)
		}
		switch {
		case present && !had:
			b.delta[tid]++
		case !present && had:
			b.delta[tid]--
		}
	}
	b.over[string(ek)] = overlay{val: val, present: present}
	if b.replay {
		b.overBytes += len(ek) + len(val) + 64
		return b.maybeSpill()
	}
	return b.maybeFlush()
}

// maybeSpill moves a replay's own writes to scratch keys once they pass the
// chunk size, so that a replayed transaction's memory is bounded too.
func (b *Batch) maybeSpill() error {
	if b.overBytes < b.m.chunkBytes {
		return nil
	}
	wb := b.m.db.NewBatch()
	defer wb.Close()
	for k, o := range b.over {
		v := []byte{0}
		if o.present {
			v = append([]byte{1}, o.val...)
		}
		_ = wb.Set(scratchKey([]byte(k)), v, nil)
	}
	if err := wb.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("spill a replay of %s: %w", pglogrepl.LSN(b.lsn), err)
	}
	clear(b.over)
	b.overBytes, b.spilled = 0, true
	return nil
}

// maybeFlush writes the transaction's changes so far as a chunk once they
// pass the map's chunk size, so that memory does not follow the size of a
// transaction. The map's LSN does not move: the chunk is marked partial, and
// a crash before Commit is rolled back by the next Open (rollbackPartial),
// after which the slot's resend of the transaction applies it again.
func (b *Batch) maybeFlush() error {
	if b.replay || b.b.Len() < b.m.chunkBytes {
		return nil
	}
	m := b.m
	// The transactions before this one go to the store first.
	if err := m.FlushGroup(); err != nil {
		return err
	}
	_ = b.b.Set(journalChunkKey(b.lsn, b.chunks), b.journal, nil)
	for tid, n := range b.counts() {
		_ = b.b.Set(countKey(tid), binary.AppendVarint(nil, n), nil)
	}
	_ = b.b.Set(metaPartial, appendLSN(nil, b.lsn), nil)
	if err := b.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("write the key map at %s: %w", pglogrepl.LSN(b.lsn), err)
	}
	_ = b.b.Close()
	b.b = m.db.NewBatch()
	b.chunks++
	b.journal = nil
	for tid := range b.cleared {
		b.cut[tid] = true
	}
	clear(b.over)
	clear(b.cleared)
	clear(b.undone)
	return nil
}

// counts are the entry counts of the tables the batch changed, as they are
// once it is applied.
func (b *Batch) counts() map[uint32]int64 {
	m := b.m
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := map[uint32]int64{}
	for tid, d := range b.delta {
		n := m.counts[tid]
		if b.reset[tid] {
			n = 0
		}
		counts[tid] = n + d
	}
	return counts
}

// Get returns the join values of key in table t as the transaction sees
// them at this point.
func (b *Batch) Get(t change.Table, key []change.Value) ([]change.Value, bool, error) {
	if err := b.check(); err != nil {
		return nil, false, err
	}
	tid, err := b.m.tid(t)
	if err != nil {
		return nil, false, err
	}
	v, ok, err := b.read(tid, entryKey(nil, tid, key), key)
	if err != nil || !ok {
		return nil, false, wrapRead(err)
	}
	vals, err := decodeVals(v)
	return vals, err == nil, wrapRead(err)
}

// Put sets the join values of key in table t.
func (b *Batch) Put(t change.Table, key, join []change.Value) error {
	if err := b.check(); err != nil {
		return err
	}
	tid, err := b.m.tid(t)
	if err != nil {
		return err
	}
	return b.write(tid, key, appendVals(nil, join), true)
}

// Delete removes key from table t.
func (b *Batch) Delete(t change.Table, key []change.Value) error {
	if err := b.check(); err != nil {
		return err
	}
	tid, err := b.m.tid(t)
	if err != nil {
		return err
	}
	return b.write(tid, key, nil, false)
}

// Move is a key change: the entry at oldKey goes, newKey gets join.
func (b *Batch) Move(t change.Table, oldKey, newKey, join []change.Value) error {
	if err := b.Delete(t, oldKey); err != nil {
		return err
	}
	return b.Put(t, newKey, join)
}

// Clear removes every entry of table t (a TRUNCATE).
func (b *Batch) Clear(t change.Table) error {
	if err := b.check(); err != nil {
		return err
	}
	tid, err := b.m.tid(t)
	if err != nil {
		return err
	}
	b.cleared[tid] = true
	lo, hi := tableSpan(tid)
	for k := range b.over {
		if k >= string(lo) && k < string(hi) {
			delete(b.over, k)
		}
	}
	if b.replay {
		if b.spilled {
			return b.m.clearScratch(scratchKey(lo), scratchKey(hi))
		}
		return nil
	}
	_ = b.b.DeleteRange(lo, hi, nil)
	tk := appendLSN(truncPrefix(nil, tid), b.lsn)
	_ = b.b.Set(tk, nil, nil)
	b.journal = appendJournal(b.journal, tk)
	b.reset[tid] = true
	b.delta[tid] = 0
	return b.maybeFlush()
}

// Row applies one thin row of a mapped table and returns the join values its
// key had just before it (found false when the map had no entry): what a
// DELETE, or an UPDATE without an old tuple, needs to find its old parents.
//
//   - Insert: the key gets New's join values.
//   - Update: the key (Old's when the key changed, else New's) moves to New's
//     key with New's join values; a join value New does not carry (an
//     unchanged TOAST value) is taken from Old, else from the old entry.
//   - Delete: the key (from Old) goes.
//   - Truncate: the table is cleared.
func (b *Batch) Row(r *change.Row) ([]change.Value, bool, error) {
	if err := b.check(); err != nil {
		return nil, false, err
	}
	tid, err := b.m.tid(r.Table)
	if err != nil {
		return nil, false, err
	}
	if r.Op == change.Truncate {
		return nil, false, b.Clear(r.Table)
	}
	spec := &b.m.specs[tid]
	kpos, err := positions(r, spec.Key)
	if err != nil {
		return nil, false, err
	}
	jpos, err := positions(r, spec.Join)
	if err != nil {
		return nil, false, err
	}
	oldKey, newKey, err := rowKeys(r, kpos, spec.Key)
	if err != nil {
		return nil, false, err
	}
	look := newKey
	if oldKey != nil {
		look = oldKey
	}
	lek := entryKey(nil, tid, look)
	prevRaw, had, err := b.read(tid, lek, look)
	if err != nil {
		return nil, false, wrapRead(err)
	}
	var prev []change.Value
	if had {
		if prev, err = decodeVals(prevRaw); err != nil {
			return nil, false, wrapRead(err)
		}
	}
	if r.Op == change.Delete {
		return prev, had, b.writeRead(tid, lek, oldKey, prevRaw, had, nil, false)
	}
	join := pick(r.New, jpos)
	for i := range join {
		if !join[i].Missing {
			continue
		}
		if r.Old != nil && jpos[i] < len(r.Old) && !r.Old[jpos[i]].Missing {
			join[i] = r.Old[jpos[i]]
		} else if had && i < len(prev) {
			join[i] = prev[i]
		}
	}
	if oldKey != nil && !sameVals(oldKey, newKey) {
		if err := b.writeRead(tid, lek, oldKey, prevRaw, had, nil, false); err != nil {
			return nil, false, err
		}
		return prev, had, b.write(tid, newKey, appendVals(nil, join), true)
	}
	return prev, had, b.writeRead(tid, lek, newKey, prevRaw, had, appendVals(nil, join), true)
}

// rowKeys gives the key a row had before it (nil for an insert) and after
// it (nil for a delete); an update's key column New does not carry (an
// unchanged TOAST value) is Old's. A key column neither carries is an error.
func rowKeys(r *change.Row, kpos []int, names []string) (oldKey, newKey []change.Value, err error) {
	switch r.Op {
	case change.Insert:
		newKey = pick(r.New, kpos)
	case change.Update:
		newKey = pick(r.New, kpos)
		oldKey = newKey
		if r.Old != nil {
			oldKey = pick(r.Old, kpos)
		}
		for i := range newKey {
			if newKey[i].Missing && !oldKey[i].Missing {
				newKey[i] = oldKey[i]
			}
		}
	case change.Delete:
		oldKey = pick(r.Old, kpos)
	default:
		return nil, nil, fmt.Errorf("table %s: a row with op %s", r.Table, r.Op)
	}
	for _, k := range [][]change.Value{oldKey, newKey} {
		for i, v := range k {
			if v.Missing {
				return nil, nil, fmt.Errorf("table %s: the row does not carry its key column %s", r.Table, names[i])
			}
		}
	}
	return oldKey, newKey, nil
}

func positions(r *change.Row, cols []string) ([]int, error) {
	pos := make([]int, len(cols))
	for i, c := range cols {
		pos[i] = r.Col(c)
		if pos[i] < 0 {
			return nil, fmt.Errorf("table %s: column %s is not captured", r.Table, c)
		}
	}
	return pos, nil
}

func pick(vals []change.Value, pos []int) []change.Value {
	out := make([]change.Value, len(pos))
	for i, p := range pos {
		if p < len(vals) {
			out[i] = vals[p]
		} else {
			out[i] = change.Value{Missing: true}
		}
	}
	return out
}

// Commit applies the batch and the LSN atomically (not yet fsynced: Sync
// does that). On a replay it changes nothing.
func (b *Batch) Commit() error {
	if err := b.check(); err != nil {
		return err
	}
	if b.replay {
		return b.finish()
	}
	defer b.finish()
	m := b.m
	if len(b.journal) > 0 {
		_ = b.b.Set(journalChunkKey(b.lsn, b.chunks), b.journal, nil)
	}
	if b.chunks > 0 {
		_ = b.b.Delete(metaPartial, nil)
	}
	m.mu.Lock()
	lost := len(m.lostClear) > 0
	m.mu.Unlock()
	if lost {
		// The transaction a crash cut is applied again: its truncates are done.
		_ = b.b.Delete(metaLost, nil)
	}
	counts := b.counts()
	if b.b.Empty() && len(counts) == 0 {
		// Nothing changed: the LSN moves in memory only. Written or not,
		// it reads the same: a replay of it after a crash (when a later
		// transaction's LSN was written) answers from the later
		// transactions' pre-images, and a rerun (when none was) reads the
		// entries it left as they were.
		m.mu.Lock()
		m.lsn = b.lsn
		m.mu.Unlock()
		return nil
	}
	for tid, n := range counts {
		_ = b.b.Set(countKey(tid), binary.AppendVarint(nil, n), nil)
	}
	_ = b.b.Set(metaLSN, appendLSN(nil, b.lsn), nil)
	if b.chunks > 0 {
		// Its chunks are in the store already (the group was flushed
		// before the first): the rest goes there too, now.
		m.wmu.Lock()
		err := b.b.Commit(pebble.NoSync)
		if err == nil {
			m.mu.Lock()
			m.stored, m.flushed = b.lsn, b.lsn
			m.mu.Unlock()
		}
		m.wmu.Unlock()
		if err != nil {
			return fmt.Errorf("write the key map at %s: %w", pglogrepl.LSN(b.lsn), err)
		}
	} else {
		m.gmu.Lock()
		if m.grp == nil {
			m.grp = m.db.NewIndexedBatch()
		}
		err := m.grp.Apply(b.b, nil)
		m.gmu.Unlock()
		if err != nil {
			return fmt.Errorf("write the key map at %s: %w", pglogrepl.LSN(b.lsn), err)
		}
	}
	m.mu.Lock()
	m.written = b.lsn
	m.lsn = b.lsn
	for tid, n := range counts {
		m.counts[tid] = n
	}
	clear(m.lostClear)
	m.mu.Unlock()
	return nil
}

// Discard drops the batch without applying it.
func (b *Batch) Discard() {
	if !b.done {
		_ = b.finish() // scratch keys left by an error are removed by the next Open
	}
}

func (b *Batch) finish() error {
	b.done = true
	if b.b != nil {
		_ = b.b.Close()
		b.b = nil
	}
	var err error
	if b.spilled {
		err = b.m.clearScratch([]byte{pScratch}, []byte{pScratch + 1})
	}
	b.m.mu.Lock()
	b.m.open = false
	b.m.mu.Unlock()
	return err
}

// Fill applies r like Row and then gives r the old values the map knew, as
// REPLICA IDENTITY FULL would have sent them for these columns: on a DELETE,
// or an UPDATE, the join columns of r.Old that are missing (r.Old is made,
// key and join columns, when the server sent none) take the map's values. The
// resolver then finds the old parents from r.Old as it does under FULL. A
// row whose key the map did not hold is left as it is.
func (b *Batch) Fill(r *change.Row) error {
	prev, found, err := b.Row(r)
	if err != nil || !found || (r.Op != change.Delete && r.Op != change.Update) {
		return err
	}
	spec := &b.m.specs[b.m.tids[r.Table]]
	if r.Old == nil {
		r.Old = make([]change.Value, len(r.Cols))
		for i := range r.Old {
			r.Old[i] = change.Value{Missing: true}
		}
		for _, k := range spec.Key {
			i := r.Col(k)
			if i < len(r.New) {
				r.Old[i] = r.New[i]
			}
		}
	}
	for j, c := range spec.Join {
		if i := r.Col(c); i < len(r.Old) && r.Old[i].Missing && j < len(prev) {
			r.Old[i] = prev[j]
		}
	}
	return nil
}
