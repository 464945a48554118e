package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// This file decodes pgoutput messages (protocol versions 1 and 2) straight
// from the bytes of an XLogData payload. pglogrepl's decoders panic on short
// input and copy every column of every table; this one checks every bound,
// returns errors, skips the tables nobody asked for after reading four bytes,
// and copies only the configured columns.
//
// Message formats: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html

// ErrDecode marks a message that could not be decoded (corrupt, truncated,
// out of order, or naming an unknown relation). It is not retried.
var ErrDecode = errors.New("decode pgoutput")

// ErrColumnMissing: a Relation message lacks a configured column; a DDL
// dropped or renamed it, or the publication's column list leaves it out.
var ErrColumnMissing = errors.New("the column is configured but not in the replication stream (dropped or renamed, or left out of the publication's column list): fix the config or the table, then run with --resync")

func decodeErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDecode, fmt.Sprintf(format, args...))
}

// msg is one decoded message. rows alias the decoder's scratch: they are
// valid until the next decode, but their values are fresh copies.
type msg struct {
	kind       byte          // the message type byte; 0 for a change of a table not captured
	xid        uint32        // B: xid; S, c, A: top-level xid; a change inside a stream: its (sub)transaction
	subXid     uint32        // A
	first      bool          // S: first segment of the transaction
	commitLSN  pglogrepl.LSN // B (final LSN), C, c
	endLSN     pglogrepl.LSN // C, c: end of the commit record
	commitTime time.Time     // B, C, c
	rows       []change.Row  // I, U, D: at most one; T: one per captured table
}

// relation is the cached Relation message of one table, reduced to what the
// configured columns need.
type relation struct {
	table change.Table
	natts int
	cols  []string // configured columns, key first; nil: the table is not captured
	attr  []int    // per configured column, its position in the tuple
	ident []bool   // per configured column, whether it is part of the replica identity
}

// decoder turns pgoutput messages into msgs. It keeps the relation cache
// and whether it is inside a streamed block ('S' … 'E'), where each change
// carries its transaction id.
type decoder struct {
	tables   map[change.Table][]string
	rels     map[uint32]*relation
	last     *relation // the relation of the last change: most streams repeat it
	lastID   uint32
	inStream bool

	newT, oldT []field // scratch tuples
	rows       []change.Row
}

type field struct {
	kind byte // 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary
	data []byte
}

func newDecoder(tables map[change.Table][]string) *decoder {
	return &decoder{tables: tables, rels: map[uint32]*relation{}}
}

// reset forgets the relation cache and stream state: a new connection
// sends everything again.
func (d *decoder) reset() {
	d.rels = map[uint32]*relation{}
	d.last, d.lastID = nil, 0
	d.inStream = false
}

// reader reads big-endian fields with bounds checks; the first failure
// sticks and later reads return zero values.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) byte1() byte {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.bad = true
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.bad = true
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.bad = true
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.bad = true
		r.b = nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// cstring reads a NUL-terminated string.
func (r *reader) cstring() string {
	for i, c := range r.b {
		if c == 0 {
			s := string(r.b[:i])
			r.b = r.b[i+1:]
			return s
		}
	}
	r.bad = true
	r.b = nil
	return ""
}

// pgEpoch is 2000-01-01 00:00:00 UTC, where Postgres timestamps count from.
const pgEpochUnix = 946684800

func pgTime(us int64) time.Time {
	return time.Unix(pgEpochUnix+us/1_000_000, (us%1_000_000)*1000).UTC()
}

// decode decodes one pgoutput message.
func (d *decoder) decode(data []byte) (msg, error) {
	var m msg
	if len(data) == 0 {
		return m, decodeErr("empty message")
	}
	r := reader{b: data[1:]}
	m.kind = data[0]
	switch m.kind {
	case 'B':
		m.commitLSN = pglogrepl.LSN(r.u64())
		m.commitTime = pgTime(int64(r.u64()))
		m.xid = r.u32()
	case 'C':
		r.byte1() // flags
		m.commitLSN = pglogrepl.LSN(r.u64())
		m.endLSN = pglogrepl.LSN(r.u64())
		m.commitTime = pgTime(int64(r.u64()))
	case 'S':
		if d.inStream {
			return m, decodeErr("stream start inside a stream")
		}
		m.xid = r.u32()
		m.first = r.byte1() == 1
		if !r.bad {
			d.inStream = true
		}
	case 'E':
		if !d.inStream {
			return m, decodeErr("stream stop outside a stream")
		}
		d.inStream = false
	case 'c':
		m.xid = r.u32()
		r.byte1() // flags
		m.commitLSN = pglogrepl.LSN(r.u64())
		m.endLSN = pglogrepl.LSN(r.u64())
		m.commitTime = pgTime(int64(r.u64()))
	case 'A':
		m.xid = r.u32()
		m.subXid = r.u32()
		// Protocol 4 adds the abort LSN and time; nothing here needs them.
	case 'O', 'Y', 'M':
		// Origin, Type and logical decoding messages: nothing to keep. Type
		// and Message carry an xid inside a stream, which is not needed either.
		return m, nil
	case 'R':
		if d.inStream {
			r.u32()
		}
		if err := d.relation(&r); err != nil {
			return m, err
		}
	case 'I', 'U', 'D':
		if d.inStream {
			m.xid = r.u32()
		}
		row, ok, err := d.change(m.kind, &r)
		if err != nil {
			return m, err
		}
		if ok {
			d.rows = append(d.rows[:0], row)
			m.rows = d.rows
		} else {
			m.kind = 0
		}
	case 'T':
		if d.inStream {
			m.xid = r.u32()
		}
		n := int(r.u32())
		r.byte1() // options: CASCADE, RESTART IDENTITY
		if r.bad || n < 0 || n > len(r.b)/4 {
			return m, decodeErr("truncate: bad relation count")
		}
		d.rows = d.rows[:0]
		for range n {
			id := r.u32()
			rel, ok := d.rels[id]
			if !ok {
				return m, decodeErr("truncate: unknown relation id %d (no Relation message)", id)
			}
			if rel.cols != nil {
				d.rows = append(d.rows, change.Row{Table: rel.table, Op: change.Truncate})
			}
		}
		m.rows = d.rows
	case 'b', 'P', 'K', 'r', 'p':
		return m, decodeErr("two-phase message %q: flusso-pg never asks for two_phase", m.kind)
	default:
		return m, decodeErr("unknown message type %q", m.kind)
	}
	if r.bad {
		return m, decodeErr("message %q is truncated", m.kind)
	}
	return m, nil
}

// relation reads a Relation message into the cache, refreshing an older one
// (a Relation comes again after DDL).
func (d *decoder) relation(r *reader) error {
	id := r.u32()
	ns := r.cstring()
	name := r.cstring()
	r.byte1() // replica identity setting
	natts := int(r.u16())
	if r.bad {
		return decodeErr("relation message is truncated")
	}
	table := change.Table{Schema: ns, Name: name}
	want, ok := d.tables[table]
	if !ok {
		want, ok = d.tables[change.Table{Name: name}]
	}
	rel := &relation{table: table, natts: natts}
	type att struct {
		pos   int
		ident bool
	}
	var seen map[string]att
	if ok {
		seen = make(map[string]att, natts)
	}
	for i := range natts {
		flags := r.byte1()
		col := r.cstring()
		r.u32() // type oid
		r.u32() // type modifier
		if r.bad {
			return decodeErr("relation %s: message is truncated", table)
		}
		if seen != nil {
			seen[col] = att{pos: i, ident: flags&1 != 0}
		}
	}
	if ok {
		rel.cols = want
		rel.attr = make([]int, len(want))
		rel.ident = make([]bool, len(want))
		for i, col := range want {
			a, found := seen[col]
			if !found {
				return fmt.Errorf("table %s, column %q: %w", table, col, ErrColumnMissing)
			}
			rel.attr[i] = a.pos
			rel.ident[i] = a.ident
		}
	}
	d.rels[id] = rel
	if d.lastID == id {
		d.last = rel
	}
	return nil
}

// change decodes an Insert, Update or Delete; ok is false for a table that
// is not captured.
func (d *decoder) change(kind byte, r *reader) (change.Row, bool, error) {
	id := r.u32()
	if r.bad {
		return change.Row{}, false, decodeErr("change is truncated")
	}
	rel := d.last
	if rel == nil || d.lastID != id {
		var ok bool
		if rel, ok = d.rels[id]; !ok {
			return change.Row{}, false, decodeErr("change of unknown relation id %d (no Relation message)", id)
		}
		d.last, d.lastID = rel, id
	}
	if rel.cols == nil {
		return change.Row{}, false, nil
	}
	var err error
	oldKind := byte(0)
	d.oldT, d.newT = d.oldT[:0], d.newT[:0]
	tag := r.byte1()
	switch kind {
	case 'I':
		if tag != 'N' {
			return change.Row{}, false, decodeErr("insert into %s: expected 'N', got %q", rel.table, tag)
		}
		d.newT, err = readTuple(r, d.newT)
	case 'U':
		if tag == 'K' || tag == 'O' {
			oldKind = tag
			if d.oldT, err = readTuple(r, d.oldT); err != nil {
				break
			}
			tag = r.byte1()
		}
		if tag != 'N' {
			return change.Row{}, false, decodeErr("update of %s: expected 'N', got %q", rel.table, tag)
		}
		d.newT, err = readTuple(r, d.newT)
	case 'D':
		if tag != 'K' && tag != 'O' {
			return change.Row{}, false, decodeErr("delete from %s: expected 'K' or 'O', got %q", rel.table, tag)
		}
		oldKind = tag
		d.oldT, err = readTuple(r, d.oldT)
	}
	if err != nil {
		return change.Row{}, false, fmt.Errorf("%s: %w", rel.table, err)
	}
	if (oldKind != 0 && len(d.oldT) != rel.natts) || (kind != 'D' && len(d.newT) != rel.natts) {
		return change.Row{}, false, decodeErr("%s: tuple columns do not match the relation's %d", rel.table, rel.natts)
	}
	row := change.Row{Table: rel.table, Op: change.Op(kind), Cols: rel.cols}
	n := len(rel.cols)
	var vals []change.Value
	switch {
	case oldKind != 0 && kind == 'U':
		vals = make([]change.Value, 2*n)
		row.Old, row.New = vals[:n:n], vals[n:]
	default:
		vals = make([]change.Value, n)
		if kind == 'D' {
			row.Old = vals
		} else {
			row.New = vals
		}
	}
	for i, pos := range rel.attr {
		var old *change.Value
		if row.Old != nil {
			old = &row.Old[i]
			f := d.oldT[pos]
			switch {
			case oldKind == 'K' && !rel.ident[i]:
				// Under a key-only old tuple the other columns are sent as
				// nulls that mean "not sent".
				old.Missing = true
			default:
				*old = fieldValue(f)
			}
		}
		if row.New != nil {
			f := d.newT[pos]
			if f.kind == 'u' {
				// Unchanged TOAST: the old tuple has it, or nobody does.
				if old != nil && !old.Missing {
					row.New[i] = *old
				} else {
					row.New[i] = change.Value{Missing: true}
				}
				continue
			}
			row.New[i] = fieldValue(f)
		}
	}
	return row, true, nil
}

func fieldValue(f field) change.Value {
	switch f.kind {
	case 'n':
		return change.Value{Null: true}
	case 'u':
		return change.Value{Missing: true}
	default:
		return change.Value{Text: string(f.data)}
	}
}

// readTuple reads TupleData into dst (reused); data aliases the message.
func readTuple(r *reader, dst []field) ([]field, error) {
	n := int(r.u16())
	if r.bad || n > len(r.b) {
		return dst, decodeErr("tuple is truncated")
	}
	for range n {
		f := field{kind: r.byte1()}
		switch f.kind {
		case 'n', 'u':
		case 't':
			l := int(int32(r.u32()))
			f.data = r.bytes(l)
		case 'b':
			return dst, decodeErr("binary column values are not supported")
		default:
			return dst, decodeErr("unknown column kind %q", f.kind)
		}
		if r.bad {
			return dst, decodeErr("tuple is truncated")
		}
		dst = append(dst, f)
	}
	return dst, nil
}
