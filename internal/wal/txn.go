package wal

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Txn is one committed transaction's thin rows, handed out in commit order.
// Its rows live in memory, or in a temporary file once they outgrow the
// memory budget; Release frees either.
type Txn struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN // start of the commit record: the "lsn" written on lines
	EndLSN     pglogrepl.LSN // end of the commit record: what Confirm takes
	CommitTime time.Time
	Rows       int // after deduplication

	// When the socket read that brought the commit returned, and when the
	// transaction was handed out: the first stages of a commit's latency
	// (the "group written" debug log of follow).
	Received, Handed time.Time
	// Sent is when the server sent the commit (its clock, as CommitTime):
	// long after CommitTime, the walsender is sending a backlog.
	Sent time.Time

	buf rowBuffer
}

// Spilled reports whether the rows went to a temporary file.
func (t *Txn) Spilled() bool { return t.buf.file != nil }

// Each calls fn with the rows in commit order, at most batch at a time
// (truncates included, as rows with Op Truncate). The slice is reused
// between calls; the rows' strings may be kept.
func (t *Txn) Each(batch int, fn func([]change.Row) error) error {
	return t.buf.each(batch, fn)
}

// Release frees the rows: memory, and the spill file. Each must not be
// called afterwards.
func (t *Txn) Release() {
	t.buf.release()
}

// rowBuffer collects a transaction's rows: in memory up to budget bytes,
// then in a temporary file (a length-prefixed binary record per row).
// Identical rows are kept once. Positions where a subtransaction first
// appeared are marked, so a subtransaction abort can cut the rows back.
type rowBuffer struct {
	budget int64
	dir    string

	n    int           // rows kept
	rows []change.Row  // in memory; nil once spilled
	one  [1]change.Row // rows' first backing array: most transactions have one row
	mem  int64         // estimated bytes of rows and seen

	// deduplication: a 128-bit hash of each row's encoding → its position.
	// Best effort: bounded in size, and the first row is hashed only once
	// a second one comes.
	seen    map[[2]uint64]int
	seenCap int

	shapes  []shape
	shapeOf map[shapeKey]int
	enc     []byte

	file  *os.File
	w     *bufio.Writer
	size  int64 // bytes written to the file, buffered ones included
	marks []mark

	spilled func() // called once when the buffer spills
}

// shape is a table and its carried columns: rows refer to it by number.
type shape struct {
	table change.Table
	cols  []string
}

type shapeKey struct {
	table change.Table
	ncols int
}

// mark is where a subtransaction's first row went.
type mark struct {
	xid uint32
	pos int
	off int64 // file offset of that row; -1 while the row is in memory
}

var hashSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func newRowBuffer(budget int64, dir string) *rowBuffer {
	b := &rowBuffer{}
	b.init(budget, dir)
	return b
}

func (b *rowBuffer) init(budget int64, dir string) {
	b.budget, b.dir, b.seenCap = budget, dir, max(1024, int(budget/4/64))
	b.rows = b.one[:0:1]
}

const (
	rowOverhead   = 120 // Row, slice headers, allocation slack
	valueOverhead = 32  // change.Value plus the string's allocation slack
	seenOverhead  = 64  // one deduplication entry
)

func rowSize(r *change.Row) int64 {
	s := int64(rowOverhead)
	for _, v := range r.Old {
		s += valueOverhead + int64(len(v.Text))
	}
	for _, v := range r.New {
		s += valueOverhead + int64(len(v.Text))
	}
	return s
}

// mark records that subtransaction xid's first row is the next one.
func (b *rowBuffer) mark(xid uint32) {
	for _, m := range b.marks {
		if m.xid == xid {
			return
		}
	}
	off := int64(-1)
	if b.file != nil {
		off = b.size
	}
	b.marks = append(b.marks, mark{xid: xid, pos: b.n, off: off})
}

// add appends a row unless an identical one is already there.
func (b *rowBuffer) add(r *change.Row) error {
	if b.n > 0 {
		if b.seen == nil {
			b.seen = map[[2]uint64]int{}
			if b.file == nil && len(b.rows) == 1 {
				b.remember(b.hash(&b.rows[0]), 0)
			}
		}
		h := b.hash(r)
		if _, dup := b.seen[h]; dup {
			return nil
		}
		b.remember(h, b.n)
	}
	if b.file != nil {
		b.n++
		return b.write(r)
	}
	b.rows = append(b.rows, *r)
	b.n++
	b.mem += rowSize(r)
	if b.mem > b.budget {
		return b.spill()
	}
	return nil
}

func (b *rowBuffer) remember(h [2]uint64, pos int) {
	if len(b.seen) < b.seenCap {
		b.seen[h] = pos
		b.mem += seenOverhead
	}
}

func (b *rowBuffer) hash(r *change.Row) [2]uint64 {
	b.enc = b.encode(b.enc[:0], r)
	return [2]uint64{maphash.Bytes(hashSeeds[0], b.enc), maphash.Bytes(hashSeeds[1], b.enc)}
}

// cut drops the rows from subtransaction xid's first row on: it aborted.
// Everything after that point belongs to it or to its children, since the
// stream is in WAL order and subtransactions nest.
func (b *rowBuffer) cut(xid uint32) error {
	at := -1
	for i, m := range b.marks {
		if m.xid == xid {
			at = i
			break
		}
	}
	if at < 0 {
		return nil // it sent no rows
	}
	m := b.marks[at]
	b.marks = b.marks[:at]
	for h, pos := range b.seen {
		if pos >= m.pos {
			delete(b.seen, h)
		}
	}
	if b.file == nil {
		clear(b.rows[m.pos:])
		b.rows = b.rows[:m.pos]
		b.n = m.pos
		b.mem = int64(len(b.seen)) * seenOverhead
		for i := range b.rows {
			b.mem += rowSize(&b.rows[i])
		}
		return nil
	}
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	if err := b.file.Truncate(m.off); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	if _, err := b.file.Seek(m.off, io.SeekStart); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	b.size = m.off
	b.w.Reset(b.file)
	b.n = m.pos
	return nil
}

func (b *rowBuffer) each(batch int, fn func([]change.Row) error) error {
	if batch <= 0 {
		batch = 1000
	}
	if b.file == nil {
		for i := 0; i < len(b.rows); i += batch {
			j := min(i+batch, len(b.rows))
			if err := fn(b.rows[i:j:j]); err != nil { // capped: an append cannot overwrite the next rows
				return err
			}
		}
		return nil
	}
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	br := bufio.NewReaderSize(io.NewSectionReader(b.file, 0, b.size), 256<<10)
	rows := make([]change.Row, 0, min(batch, b.n))
	var rec []byte
	for {
		l, err := binary.ReadUvarint(br)
		if err == io.EOF {
			break
		}
		if err != nil || l > 1<<30 {
			return fmt.Errorf("read spilled transaction: %w", errCorruptSpill)
		}
		if uint64(cap(rec)) < l {
			rec = make([]byte, l)
		}
		rec = rec[:l]
		if _, err := io.ReadFull(br, rec); err != nil {
			return fmt.Errorf("read spilled transaction: %w", err)
		}
		rows = append(rows, change.Row{})
		if err := b.decodeRecord(rec, &rows[len(rows)-1]); err != nil {
			return fmt.Errorf("read spilled transaction: %w", err)
		}
		if len(rows) == batch {
			if err := fn(rows); err != nil {
				return err
			}
			clear(rows)
			rows = rows[:0]
		}
	}
	if len(rows) > 0 {
		return fn(rows)
	}
	return nil
}

func (b *rowBuffer) release() {
	b.rows = nil
	b.seen = nil
	b.marks = nil
	if b.file != nil {
		b.file.Close()
		os.Remove(b.file.Name())
		b.file = nil
		b.w = nil
	}
}
