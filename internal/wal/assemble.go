package wal

import "github.com/jackc/pglogrepl"

// assembler turns the decoded messages into committed transactions. A
// transaction arrives either whole, between Begin and Commit, or (protocol
// 2, when it outgrows the server's logical_decoding_work_mem) in streamed
// blocks between Stream Start and Stream Stop that may interleave with
// other transactions, ended by Stream Commit or Stream Abort. Rolled-back
// work is never handed out.
type assembler struct {
	budget  int64
	dir     string
	onSpill func()

	cur     *Txn            // open whole transaction, between Begin and Commit
	streams map[uint32]*Txn // streamed transactions in progress, by top-level xid
	stream  *Txn            // the one the current streamed block belongs to
}

func newAssembler(budget int64, dir string, onSpill func()) *assembler {
	return &assembler{budget: budget, dir: dir, onSpill: onSpill, streams: map[uint32]*Txn{}}
}

// open reports whether any transaction has begun and not ended.
func (a *assembler) open() bool { return a.cur != nil || len(a.streams) > 0 }

// reset drops every unfinished transaction (the connection was lost: the
// server sends them again from the start).
func (a *assembler) reset() {
	if a.cur != nil {
		a.cur.Release()
		a.cur = nil
	}
	for xid, t := range a.streams {
		t.Release()
		delete(a.streams, xid)
	}
	a.stream = nil
}

func (a *assembler) newTxn(xid uint32) *Txn {
	t := &Txn{Xid: xid}
	t.buf.init(a.budget, a.dir)
	t.buf.spilled = a.onSpill
	return t
}

// handle applies one message; it returns a transaction when one committed.
func (a *assembler) handle(m *msg) (*Txn, error) {
	switch m.kind {
	case kindSkip:
		return nil, nil
	case pglogrepl.MessageTypeBegin:
		return nil, a.begin(m)
	case pglogrepl.MessageTypeCommit:
		t := a.cur
		if t == nil {
			return nil, decodeErr("commit without begin")
		}
		a.cur = nil
		return a.committed(t, m), nil
	case pglogrepl.MessageTypeStreamStart:
		return nil, a.streamStart(m)
	case pglogrepl.MessageTypeStreamStop:
		a.stream = nil
	case pglogrepl.MessageTypeStreamCommit:
		if a.stream != nil {
			return nil, decodeErr("stream commit inside a streamed block")
		}
		t, ok := a.streams[m.xid]
		if !ok {
			return nil, decodeErr("stream commit of unknown transaction %d", m.xid)
		}
		delete(a.streams, m.xid)
		return a.committed(t, m), nil
	case pglogrepl.MessageTypeStreamAbort:
		return nil, a.streamAbort(m)
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete, pglogrepl.MessageTypeTruncate:
		return nil, a.change(m)
	}
	return nil, nil
}

func (a *assembler) begin(m *msg) error {
	if a.cur != nil {
		return decodeErr("begin of xid %d inside transaction %d", m.xid, a.cur.Xid)
	}
	if a.stream != nil {
		return decodeErr("begin inside a streamed block")
	}
	a.cur = a.newTxn(m.xid)
	a.cur.CommitLSN = m.commitLSN
	a.cur.CommitTime = m.commitTime
	return nil
}

// committed finishes t at its Commit or Stream Commit m.
func (a *assembler) committed(t *Txn, m *msg) *Txn {
	t.CommitLSN = m.commitLSN
	t.EndLSN = m.endLSN
	t.CommitTime = m.commitTime
	t.Rows = t.buf.n
	return t
}

func (a *assembler) streamStart(m *msg) error {
	if a.cur != nil {
		return decodeErr("stream start inside transaction %d", a.cur.Xid)
	}
	t, ok := a.streams[m.xid]
	switch {
	case ok && m.first:
		return decodeErr("first stream block of transaction %d came twice", m.xid)
	case !ok && !m.first:
		return decodeErr("stream block of transaction %d without its first block", m.xid)
	case !ok:
		t = a.newTxn(m.xid)
		a.streams[m.xid] = t
	}
	a.stream = t
	return nil
}

// streamAbort drops a streamed transaction, or cuts a subtransaction's
// rows out of it.
func (a *assembler) streamAbort(m *msg) error {
	if a.stream != nil {
		return decodeErr("stream abort inside a streamed block")
	}
	t, ok := a.streams[m.xid]
	if !ok {
		// A transaction whose blocks held nothing for us may still be
		// aborted; there is nothing to drop.
		return nil
	}
	if m.subXid == m.xid || m.subXid == 0 {
		delete(a.streams, m.xid)
		t.Release()
		return nil
	}
	return t.buf.cut(m.subXid)
}

// change adds a change's rows to the transaction it belongs to.
func (a *assembler) change(m *msg) error {
	t := a.cur
	if a.stream != nil {
		t = a.stream
		if m.xid != t.Xid {
			t.buf.mark(m.xid)
		}
	}
	if t == nil {
		return decodeErr("change outside a transaction")
	}
	for i := range m.rows {
		if err := t.buf.add(&m.rows[i]); err != nil {
			return err
		}
	}
	return nil
}
