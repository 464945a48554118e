package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// The spill file of a transaction that outgrew the memory budget: its rows
// as length-prefixed binary records, written and read back by rowBuffer.

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
