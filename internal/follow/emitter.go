package follow

import (
	"slices"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

// sink is where the lines go: an *output.Writer.
type sink interface {
	Write(lines []byte) error
	Sync() error
}

// emitter writes the lines of the groups of transactions, chunk by chunk:
// each chunk's lines in non-decreasing LSN order (stable), the group's last
// line held back until the group ends, and marked "ack":true when the
// reader acknowledges, so the reader knows it has every line of the LSNs it
// acknowledges. It is used by the writing goroutine only.
type emitter struct {
	out  sink
	acks bool

	// reused buffers: the chunk's lines as built, the same in LSN order,
	// and the held last line
	buf, ordered, held []byte
	lines              []line
	maxLine            pglogrepl.LSN // newest "lsn" written in the group
	written            pglogrepl.LSN // newest "lsn" ever written (kept by reset)
}

// line is one line of the chunk in buf.
type line struct {
	lsn        pglogrepl.LSN
	start, end int
}

func newEmitter(out sink, acks bool) *emitter {
	return &emitter{out: out, acks: acks}
}

// begin starts a chunk.
func (e *emitter) begin() {
	e.buf = e.buf[:0]
	e.lines = e.lines[:0]
}

func (e *emitter) add(start int, lsn pglogrepl.LSN) {
	e.lines = append(e.lines, line{lsn: lsn, start: start, end: len(e.buf)})
}

// take is put for lines whose buffers the emitter may keep: into a chunk
// just begun, it swaps them for its own (emptied), saving the copy.
func (e *emitter) take(buf *[]byte, lines *[]line) {
	if len(e.buf) != 0 || len(e.lines) != 0 {
		e.put(*buf, *lines)
		return
	}
	e.buf, *buf = *buf, e.buf[:0]
	e.lines, *lines = *lines, e.lines[:0]
}

// put adds lines formatted elsewhere (buildChunk, on another goroutine) to
// the chunk: buf holds them, lines their LSNs and offsets in buf.
func (e *emitter) put(buf []byte, lines []line) {
	off := len(e.buf)
	e.buf = append(e.buf, buf...)
	for _, l := range lines {
		e.lines = append(e.lines, line{lsn: l.lsn, start: l.start + off, end: l.end + off})
	}
}

// upsert adds an upsert line to the chunk.
func (e *emitter) upsert(index string, key []byte, id string, lsn pglogrepl.LSN, doc []byte) {
	start := len(e.buf)
	e.buf = output.AppendUpsert(e.buf, index, key, id, lsn, doc)
	e.add(start, lsn)
}

// delete adds a delete line to the chunk.
func (e *emitter) delete(index string, key []byte, id string, lsn pglogrepl.LSN) {
	start := len(e.buf)
	e.buf = output.AppendDelete(e.buf, index, key, id, lsn)
	e.add(start, lsn)
}

// truncate adds a truncate line to the chunk.
func (e *emitter) truncate(index string, lsn pglogrepl.LSN) {
	start := len(e.buf)
	e.buf = output.AppendTruncate(e.buf, index, lsn)
	e.add(start, lsn)
}

// rebuildStart adds a rebuild_start line to the chunk.
func (e *emitter) rebuildStart(index string, lsn pglogrepl.LSN) {
	start := len(e.buf)
	e.buf = output.AppendRebuildStart(e.buf, index, lsn)
	e.add(start, lsn)
}

// rebuildDone adds a rebuild_done line to the chunk.
func (e *emitter) rebuildDone(index string, lsn pglogrepl.LSN) {
	start := len(e.buf)
	e.buf = output.AppendRebuildDone(e.buf, index, lsn)
	e.add(start, lsn)
}

// end writes the chunk's lines in LSN order, but for the last one, which
// is held back until more lines come or the group ends.
func (e *emitter) end() error {
	if len(e.lines) == 0 {
		return nil
	}
	byLSN := func(a, b line) int { return cmpLSN(a.lsn, b.lsn) }
	lines, last := e.buf, e.lines[len(e.lines)-1].start
	if !slices.IsSortedFunc(e.lines, byLSN) {
		slices.SortStableFunc(e.lines, byLSN)
		ordered := e.ordered[:0]
		for _, l := range e.lines {
			last = len(ordered)
			ordered = append(ordered, e.buf[l.start:l.end]...)
		}
		e.ordered, lines = ordered, ordered
	}
	e.maxLine = max(e.maxLine, e.lines[len(e.lines)-1].lsn)
	e.written = max(e.written, e.maxLine)
	if len(e.held) > 0 {
		if err := e.write(e.held); err != nil {
			return err
		}
	}
	if err := e.write(lines[:last]); err != nil {
		return err
	}
	e.held = append(e.held[:0], lines[last:]...)
	return nil
}

// flush ends the group: it writes the held line (marked as the group's last
// when acks are on) and makes every line durable. It returns the newest
// "lsn" written in the group (0: no line), what the reader must acknowledge
// before the group may be confirmed.
func (e *emitter) flush() (pglogrepl.LSN, error) {
	need, err := e.endGroup()
	if err != nil {
		return 0, err
	}
	if err := e.out.Sync(); err != nil {
		return 0, fault.MarkPermanent(err)
	}
	return need, nil
}

// flushThen ends the group as flush does, but does not wait for the
// output: then(need) runs once every line of the group is written and
// synced (on the lineWriter's goroutine, in the order of the groups), or
// at once on an output that writes as it is called.
func (e *emitter) flushThen(then func(need pglogrepl.LSN)) error {
	need, err := e.endGroup()
	if err != nil {
		return err
	}
	if w, ok := e.out.(interface{ SyncThen(func()) error }); ok {
		return fault.MarkPermanent(w.SyncThen(func() { then(need) }))
	}
	if err := e.out.Sync(); err != nil {
		return fault.MarkPermanent(err)
	}
	then(need)
	return nil
}

// endGroup writes the held line (marked as the group's last when acks are
// on) and returns the newest "lsn" written in the group.
func (e *emitter) endGroup() (pglogrepl.LSN, error) {
	if len(e.held) > 0 {
		l := e.held
		if e.acks {
			l = output.AppendAckMark(l)
		}
		e.held = l[:0]
		if err := e.write(l); err != nil {
			return 0, err
		}
	}
	need := e.maxLine
	e.maxLine = 0
	return need, nil
}

// reset forgets the group in hand, its held line and newest LSN, when the
// group is to be written again from its start.
func (e *emitter) reset() {
	e.held = e.held[:0]
	e.maxLine = 0
}

// write hands lines to the output. Its errors are permanent whatever they
// wrap (a reader gone, a full disk, a closed socket as stdout): writing the
// group again would not help.
func (e *emitter) write(lines []byte) error {
	if len(lines) == 0 {
		return nil
	}
	return fault.MarkPermanent(e.out.Write(lines))
}

func cmpLSN(a, b pglogrepl.LSN) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
