package wal

import (
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
	kind       pglogrepl.MessageType // the message type; kindSkip for a change of a table not captured
	xid        uint32                // B: xid; S, c, A: top-level xid; a change inside a stream: its (sub)transaction
	subXid     uint32                // A
	first      bool                  // S: first segment of the transaction
	commitLSN  pglogrepl.LSN         // B (final LSN), C, c
	endLSN     pglogrepl.LSN         // C, c: end of the commit record
	commitTime time.Time             // B, C, c
	rows       []change.Row          // I, U, D: at most one; T: one per captured table
}

// kindSkip is the kind of a change decoded and dropped: its table is not
// captured. No pgoutput message type is 0.
const kindSkip pglogrepl.MessageType = 0

// The protocol 3 two-phase messages (pglogrepl names none of them). They
// come only with two_phase, which flusso-pg never asks for.
const (
	msgBeginPrepare     pglogrepl.MessageType = 'b'
	msgPrepare          pglogrepl.MessageType = 'P'
	msgCommitPrepared   pglogrepl.MessageType = 'K'
	msgRollbackPrepared pglogrepl.MessageType = 'r'
	msgStreamPrepare    pglogrepl.MessageType = 'p'
)

// Tuple markers in Insert, Update and Delete messages, and the kinds of a
// column value in TupleData.
const (
	tupleNew = 'N' // the new row
	tupleKey = 'K' // the old row's replica identity columns
	tupleOld = 'O' // the whole old row (REPLICA IDENTITY FULL)

	valueNull      = 'n'
	valueUnchanged = 'u' // an unchanged TOAST value, not sent
	valueText      = 't'
	valueBinary    = 'b'
)

// decoder turns pgoutput messages into msgs. It keeps the relation cache
// and whether it is inside a streamed block ('S' … 'E'), where each change
// carries its transaction id.
type decoder struct {
	tables   map[change.Table][]string
	old      map[change.Table][]string // columns old rows must carry (Config.OldColumns)
	rels     map[uint32]*relation
	seen     map[uint32]*relation // captured tables of earlier connections (relation.go)
	last     *relation            // the relation of the last change: most streams repeat it
	lastID   uint32
	inStream bool

	newT, oldT []field // scratch tuples
	rows       []change.Row
}

type field struct {
	kind byte // valueNull, valueUnchanged, valueText or valueBinary
	data []byte
}

func newDecoder(tables map[change.Table][]string) *decoder {
	return &decoder{tables: tables, rels: map[uint32]*relation{}, seen: map[uint32]*relation{}}
}

// reset forgets the relation cache and stream state: a new connection
// sends everything again. The captured tables' entries are kept in seen.
func (d *decoder) reset() {
	for id, rel := range d.rels {
		if rel.cols != nil {
			d.seen[id] = rel // what relation.go compares the next connection's with
		}
	}
	d.rels = map[uint32]*relation{}
	d.last, d.lastID = nil, 0
	d.inStream = false
}

// decode decodes one pgoutput message.
func (d *decoder) decode(data []byte) (msg, error) {
	var m msg
	if len(data) == 0 {
		return m, decodeErr("empty message")
	}
	r := reader{b: data[1:]}
	m.kind = pglogrepl.MessageType(data[0])
	var err error
	switch m.kind {
	case pglogrepl.MessageTypeBegin, pglogrepl.MessageTypeCommit:
		d.transaction(&m, &r)
	case pglogrepl.MessageTypeStreamStart, pglogrepl.MessageTypeStreamStop,
		pglogrepl.MessageTypeStreamCommit, pglogrepl.MessageTypeStreamAbort:
		err = d.stream(&m, &r)
	case pglogrepl.MessageTypeOrigin, pglogrepl.MessageTypeType, pglogrepl.MessageTypeMessage:
		// Origin, Type and logical decoding messages: nothing to keep. Type
		// and Message carry an xid inside a stream, which is not needed either.
		return m, nil
	case pglogrepl.MessageTypeRelation:
		if d.inStream {
			r.u32()
		}
		err = d.relation(&r)
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete:
		if d.inStream {
			m.xid = r.u32()
		}
		row, ok, cerr := d.change(m.kind, &r)
		switch {
		case cerr != nil:
			err = cerr
		case ok:
			d.rows = append(d.rows[:0], row)
			m.rows = d.rows
		default:
			m.kind = kindSkip
		}
	case pglogrepl.MessageTypeTruncate:
		err = d.truncate(&m, &r)
	case msgBeginPrepare, msgPrepare, msgCommitPrepared, msgRollbackPrepared, msgStreamPrepare:
		return m, decodeErr("two-phase message %q: flusso-pg never asks for two_phase", m.kind)
	default:
		return m, decodeErr("unknown message type %q", m.kind)
	}
	if err != nil {
		return m, err
	}
	if r.bad {
		return m, decodeErr("message %q is truncated", m.kind)
	}
	return m, nil
}

// transaction reads a Begin or a Commit.
func (d *decoder) transaction(m *msg, r *reader) {
	if m.kind == pglogrepl.MessageTypeBegin {
		m.commitLSN = pglogrepl.LSN(r.u64())
		m.commitTime = pgTime(int64(r.u64()))
		m.xid = r.u32()
		return
	}
	r.byte1() // flags
	m.commitLSN = pglogrepl.LSN(r.u64())
	m.endLSN = pglogrepl.LSN(r.u64())
	m.commitTime = pgTime(int64(r.u64()))
}

// stream reads the messages of protocol 2's streamed transactions and
// keeps track of whether a streamed block is open.
func (d *decoder) stream(m *msg, r *reader) error {
	switch m.kind {
	case pglogrepl.MessageTypeStreamStart:
		if d.inStream {
			return decodeErr("stream start inside a stream")
		}
		m.xid = r.u32()
		m.first = r.byte1() == 1
		if !r.bad {
			d.inStream = true
		}
	case pglogrepl.MessageTypeStreamStop:
		if !d.inStream {
			return decodeErr("stream stop outside a stream")
		}
		d.inStream = false
	case pglogrepl.MessageTypeStreamCommit:
		m.xid = r.u32()
		r.byte1() // flags
		m.commitLSN = pglogrepl.LSN(r.u64())
		m.endLSN = pglogrepl.LSN(r.u64())
		m.commitTime = pgTime(int64(r.u64()))
	case pglogrepl.MessageTypeStreamAbort:
		m.xid = r.u32()
		m.subXid = r.u32()
		// Protocol 4 adds the abort LSN and time; nothing here needs them.
	}
	return nil
}

// truncate reads a Truncate: one row per captured table.
func (d *decoder) truncate(m *msg, r *reader) error {
	if d.inStream {
		m.xid = r.u32()
	}
	n := int(r.u32())
	r.byte1() // options: CASCADE, RESTART IDENTITY
	if r.bad || n < 0 || n > len(r.b)/4 {
		return decodeErr("truncate: bad relation count")
	}
	d.rows = d.rows[:0]
	for range n {
		id := r.u32()
		rel, ok := d.rels[id]
		if !ok {
			return decodeErr("truncate: unknown relation id %d (no Relation message)", id)
		}
		if rel.cols != nil {
			d.rows = append(d.rows, change.Row{Table: rel.table, Op: change.Truncate})
		}
	}
	m.rows = d.rows
	return nil
}

// change decodes an Insert, Update or Delete; ok is false for a table that
// is not captured.
func (d *decoder) change(kind pglogrepl.MessageType, r *reader) (change.Row, bool, error) {
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
	oldKind, err := d.tuples(kind, rel, r)
	if err != nil {
		return change.Row{}, false, err
	}
	return d.row(kind, oldKind, rel), true, nil
}

// tuples reads the old and new tuples of a change into d.oldT and d.newT.
// oldKind is tupleKey or tupleOld when an old tuple came, else 0.
func (d *decoder) tuples(kind pglogrepl.MessageType, rel *relation, r *reader) (oldKind byte, err error) {
	d.oldT, d.newT = d.oldT[:0], d.newT[:0]
	tag := r.byte1()
	switch kind {
	case pglogrepl.MessageTypeInsert:
		if tag != tupleNew {
			return 0, decodeErr("insert into %s: expected 'N', got %q", rel.table, tag)
		}
		d.newT, err = readTuple(r, d.newT)
	case pglogrepl.MessageTypeUpdate:
		if tag == tupleKey || tag == tupleOld {
			oldKind = tag
			if d.oldT, err = readTuple(r, d.oldT); err != nil {
				break
			}
			tag = r.byte1()
		}
		if tag != tupleNew {
			return 0, decodeErr("update of %s: expected 'N', got %q", rel.table, tag)
		}
		d.newT, err = readTuple(r, d.newT)
	case pglogrepl.MessageTypeDelete:
		if tag != tupleKey && tag != tupleOld {
			return 0, decodeErr("delete from %s: expected 'K' or 'O', got %q", rel.table, tag)
		}
		oldKind = tag
		d.oldT, err = readTuple(r, d.oldT)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", rel.table, err)
	}
	if (oldKind != 0 && len(d.oldT) != rel.natts) || (kind != pglogrepl.MessageTypeDelete && len(d.newT) != rel.natts) {
		return 0, decodeErr("%s: tuple columns do not match the relation's %d", rel.table, rel.natts)
	}
	return oldKind, nil
}

// row makes the change.Row of the tuples just read: the configured
// columns, copied.
func (d *decoder) row(kind pglogrepl.MessageType, oldKind byte, rel *relation) change.Row {
	row := change.Row{Table: rel.table, Op: change.Op(kind), Cols: rel.cols}
	n := len(rel.cols)
	var vals []change.Value
	switch {
	case oldKind != 0 && kind == pglogrepl.MessageTypeUpdate:
		vals = make([]change.Value, 2*n)
		row.Old, row.New = vals[:n:n], vals[n:]
	default:
		vals = make([]change.Value, n)
		if kind == pglogrepl.MessageTypeDelete {
			row.Old = vals
		} else {
			row.New = vals
		}
	}
	for i := range rel.attr {
		pos := rel.attr[i].pos
		var old *change.Value
		if row.Old != nil {
			old = &row.Old[i]
			if oldKind == tupleKey && !rel.attr[i].ident {
				// Under a key-only old tuple the other columns are sent as
				// nulls that mean "not sent".
				old.Missing = true
			} else {
				*old = fieldValue(d.oldT[pos])
			}
		}
		if row.New != nil {
			f := d.newT[pos]
			if f.kind == valueUnchanged {
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
	return row
}

func fieldValue(f field) change.Value {
	switch f.kind {
	case valueNull:
		return change.Value{Null: true}
	case valueUnchanged:
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
		case valueNull, valueUnchanged:
		case valueText:
			l := int(int32(r.u32()))
			f.data = r.bytes(l)
		case valueBinary:
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
