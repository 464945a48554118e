package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
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

// spill moves the rows in memory to a new temporary file.
func (b *rowBuffer) spill() error {
	f, err := os.CreateTemp(b.dir, "flusso-txn-*.spill")
	if err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	b.file = f
	b.w = bufio.NewWriterSize(f, 256<<10)
	mi := 0
	for i := range b.rows {
		for mi < len(b.marks) && b.marks[mi].pos <= i {
			if b.marks[mi].off < 0 {
				b.marks[mi].off = b.size
			}
			mi++
		}
		if err := b.write(&b.rows[i]); err != nil {
			return err
		}
	}
	for ; mi < len(b.marks); mi++ {
		if b.marks[mi].off < 0 {
			b.marks[mi].off = b.size
		}
	}
	b.rows = nil
	b.mem = int64(len(b.seen)) * seenOverhead
	if b.spilled != nil {
		b.spilled()
	}
	return nil
}

// write appends one length-prefixed record to the file.
func (b *rowBuffer) write(r *change.Row) error {
	b.enc = b.encode(b.enc[:0], r)
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b.enc)))
	if _, err := b.w.Write(hdr[:n]); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	if _, err := b.w.Write(b.enc); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	b.size += int64(n + len(b.enc))
	return nil
}

// Record encoding: uvarint shape, op byte, flags byte (1: old, 2: new), then
// each value of old and new: a tag byte (0 text, 1 null, 2 missing) and for
// text a uvarint length and the bytes.
func (b *rowBuffer) encode(dst []byte, r *change.Row) []byte {
	dst = binary.AppendUvarint(dst, uint64(b.shapeIndex(r)))
	flags := byte(0)
	if r.Old != nil {
		flags |= 1
	}
	if r.New != nil {
		flags |= 2
	}
	dst = append(dst, byte(r.Op), flags)
	for _, vs := range [2][]change.Value{r.Old, r.New} {
		for _, v := range vs {
			switch {
			case v.Missing:
				dst = append(dst, 2)
			case v.Null:
				dst = append(dst, 1)
			default:
				dst = append(dst, 0)
				dst = binary.AppendUvarint(dst, uint64(len(v.Text)))
				dst = append(dst, v.Text...)
			}
		}
	}
	return dst
}

func (b *rowBuffer) shapeIndex(r *change.Row) int {
	k := shapeKey{table: r.Table, ncols: len(r.Cols)}
	if i, ok := b.shapeOf[k]; ok {
		return i
	}
	if b.shapeOf == nil {
		b.shapeOf = map[shapeKey]int{}
	}
	b.shapes = append(b.shapes, shape{table: r.Table, cols: r.Cols})
	b.shapeOf[k] = len(b.shapes) - 1
	return len(b.shapes) - 1
}

var errCorruptSpill = errors.New("spill file is corrupt")

func (b *rowBuffer) decodeRecord(rec []byte, row *change.Row) error {
	rd := reader{b: rec}
	si, n := binary.Uvarint(rd.b)
	if n <= 0 || si >= uint64(len(b.shapes)) {
		return errCorruptSpill
	}
	rd.b = rd.b[n:]
	sh := b.shapes[si]
	*row = change.Row{Table: sh.table, Cols: sh.cols, Op: change.Op(rd.byte1())}
	flags := rd.byte1()
	nc := len(sh.cols)
	total := 0
	if flags&1 != 0 {
		total += nc
	}
	if flags&2 != 0 {
		total += nc
	}
	if total > 0 {
		vals := make([]change.Value, total)
		if flags&1 != 0 {
			row.Old = vals[:nc:nc]
			vals = vals[nc:]
		}
		if flags&2 != 0 {
			row.New = vals
		}
	}
	for _, vs := range [2][]change.Value{row.Old, row.New} {
		for i := range vs {
			switch rd.byte1() {
			case 0:
				l, n := binary.Uvarint(rd.b)
				if n <= 0 || l > uint64(len(rd.b)-n) {
					return errCorruptSpill
				}
				vs[i].Text = string(rd.b[n : n+int(l)])
				rd.b = rd.b[n+int(l):]
			case 1:
				vs[i].Null = true
			case 2:
				vs[i].Missing = true
			default:
				return errCorruptSpill
			}
		}
	}
	if rd.bad {
		return errCorruptSpill
	}
	return nil
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
