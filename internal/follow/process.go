package follow

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// group is the work of one or more committed transactions, coalesced while
// flusso-pg is behind: the root keys they affect (each with the commit LSN of
// the newest transaction that touched it) and the truncations they carry.
type group struct {
	keys   map[*build.Index]map[string]*entry
	events []event
	nkeys  int
	last   *wal.Txn
	txns   int
}

type entry struct {
	ix  *build.Index
	key build.Key
	lsn pglogrepl.LSN
}

type eventKind int

const (
	truncateEvent eventKind = iota // the root table was truncated: a truncate line
	rebuildEvent                   // another table was truncated: every document again
)

type event struct {
	kind eventKind
	ix   *build.Index
	lsn  pglogrepl.LSN
}

func newGroup() *group {
	return &group{keys: map[*build.Index]map[string]*entry{}}
}

func keyID(k build.Key) string {
	// \x00 cannot appear in a Postgres text value, so this is unambiguous.
	n := 0
	for _, v := range k {
		n += len(v) + 1
	}
	b := make([]byte, 0, n)
	for i, v := range k {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, v...)
	}
	return string(b)
}

func (g *group) addKey(ix *build.Index, k build.Key, lsn pglogrepl.LSN) {
	m := g.keys[ix]
	if m == nil {
		m = map[string]*entry{}
		g.keys[ix] = m
	}
	id := keyID(k)
	if e, ok := m[id]; ok {
		e.lsn = lsn // commit order: the newest transaction wins
		return
	}
	m[id] = &entry{ix: ix, key: k, lsn: lsn}
	g.nkeys++
}

// collect resolves the rows of txn into the group. When the group grows past
// spill keys, the keys gathered so far are written first (in LSN order), so
// one transaction that touches a million documents never holds them all.
func (f *Follower) collect(ctx context.Context, g *group, txn *wal.Txn, spill int) error {
	g.last = txn
	g.txns++
	return txn.Each(f.batch, func(rows []change.Row) error {
		aff, err := f.plan.Resolve(ctx, f.pool, rows)
		if err != nil {
			return fmt.Errorf("resolve changes of transaction %d (commit %s): %w", txn.Xid, txn.CommitLSN, err)
		}
		for _, ix := range aff.Truncated {
			g.events = append(g.events, event{kind: truncateEvent, ix: ix, lsn: txn.CommitLSN})
		}
		for _, ix := range aff.Rebuild {
			g.events = append(g.events, event{kind: rebuildEvent, ix: ix, lsn: txn.CommitLSN})
		}
		for ix, keys := range aff.Keys {
			for _, k := range keys {
				g.addKey(ix, k, txn.CommitLSN)
			}
		}
		if g.nkeys >= spill {
			return f.emit(ctx, g)
		}
		return nil
	})
}

// emit writes the group's lines in LSN order and empties it (keeping last).
// Keys are built in chunks of f.batch with one query per index and chunk;
// each chunk's lines are ordered by LSN before they are written, so the
// output's "lsn" never decreases — which is what makes acknowledgements exact.
func (f *Follower) emit(ctx context.Context, g *group) error {
	entries := make([]*entry, 0, g.nkeys)
	for _, m := range g.keys {
		for _, e := range m {
			entries = append(entries, e)
		}
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].lsn != entries[j].lsn {
			return entries[i].lsn < entries[j].lsn
		}
		return entries[i].ix.Name() < entries[j].ix.Name()
	})
	events := g.events
	sort.SliceStable(events, func(i, j int) bool { return events[i].lsn < events[j].lsn })

	for len(entries) > 0 || len(events) > 0 {
		// An event at LSN t comes before the documents of t: they were built after it.
		if len(events) > 0 && (len(entries) == 0 || events[0].lsn <= entries[0].lsn) {
			if err := f.writeEvent(ctx, events[0]); err != nil {
				return err
			}
			events = events[1:]
			continue
		}
		n := min(f.batch, len(entries))
		if len(events) > 0 {
			for i := 0; i < n; i++ {
				if entries[i].lsn >= events[0].lsn {
					n = i
					break
				}
			}
		}
		if err := f.writeChunk(ctx, entries[:n]); err != nil {
			return err
		}
		entries = entries[n:]
	}
	g.keys = map[*build.Index]map[string]*entry{}
	g.events = nil
	g.nkeys = 0
	return nil
}

type line struct {
	lsn        pglogrepl.LSN
	start, end int
}

// writeChunk builds the documents of one chunk of keys and writes their lines.
func (f *Follower) writeChunk(ctx context.Context, chunk []*entry) error {
	byIndex := map[*build.Index][]*entry{}
	var order []*build.Index
	for _, e := range chunk {
		if _, ok := byIndex[e.ix]; !ok {
			order = append(order, e.ix)
		}
		byIndex[e.ix] = append(byIndex[e.ix], e)
	}
	buf := f.buf[:0]
	lines := f.lines[:0]
	for _, ix := range order {
		es := byIndex[ix]
		keys := make([]build.Key, len(es))
		lsnOf := make(map[string]pglogrepl.LSN, len(es))
		for i, e := range es {
			keys[i] = e.key
			lsnOf[keyID(e.key)] = e.lsn
		}
		name := ix.Name()
		err := ix.Build(ctx, f.pool, keys, func(d build.Doc) error {
			lsn, ok := lsnOf[keyID(d.Values)]
			if !ok {
				lsn = es[len(es)-1].lsn
			}
			start := len(buf)
			if d.Doc == nil {
				buf = output.AppendDelete(buf, name, d.Key, d.ID, lsn)
				f.metrics.Documents.WithLabelValues(name, output.OpDelete).Inc()
			} else {
				buf = output.AppendUpsert(buf, name, d.Key, d.ID, lsn, d.Doc)
				f.metrics.Documents.WithLabelValues(name, output.OpUpsert).Inc()
			}
			lines = append(lines, line{lsn: lsn, start: start, end: len(buf)})
			return nil
		})
		if err != nil {
			return fmt.Errorf("index %q: build documents: %w", name, err)
		}
	}
	f.buf, f.lines = buf, lines
	if len(lines) == 0 {
		return nil
	}
	f.maxLine = max(f.maxLine, lines0(lines))
	if sort.SliceIsSorted(lines, func(i, j int) bool { return lines[i].lsn < lines[j].lsn }) {
		return f.put(buf, lines[len(lines)-1].start)
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].lsn < lines[j].lsn })
	ordered := f.ordered[:0]
	last := 0
	for _, l := range lines {
		last = len(ordered)
		ordered = append(ordered, buf[l.start:l.end]...)
	}
	f.ordered = ordered
	return f.put(ordered, last)
}

// put writes lines, except the last one (starting at last), which is held
// back until more lines come or the group ends: the last line of a group is
// marked "ack":true when the reader acknowledges, so it knows when it has
// every line of the LSNs it acknowledges.
func (f *Follower) put(lines []byte, last int) error {
	if len(f.held) > 0 {
		if err := f.out.Write(f.held); err != nil {
			return err
		}
	}
	if err := f.out.Write(lines[:last]); err != nil {
		return err
	}
	f.held = append(f.held[:0], lines[last:]...)
	return nil
}

// putLast writes the held line, marked as the group's last when acks are on.
func (f *Follower) putLast() error {
	if len(f.held) == 0 {
		return nil
	}
	line := f.held
	if f.confirmer.acks && f.pub == nil {
		// Every line ends with "}\n": add the field before the closing brace.
		line = append(line[:len(line)-2], `,"ack":true}`+"\n"...)
	}
	err := f.out.Write(line)
	f.held = f.held[:0]
	return err
}

func lines0(ls []line) pglogrepl.LSN {
	var m pglogrepl.LSN
	for _, l := range ls {
		m = max(m, l.lsn)
	}
	return m
}

// writeEvent writes a truncate line, or every document of an index again.
func (f *Follower) writeEvent(ctx context.Context, e event) error {
	name := e.ix.Name()
	switch e.kind {
	case truncateEvent:
		f.buf = output.AppendTruncate(f.buf[:0], name, e.lsn)
		f.metrics.Documents.WithLabelValues(name, output.OpTruncate).Inc()
		f.maxLine = max(f.maxLine, e.lsn)
		return f.put(f.buf, 0)
	case rebuildEvent:
		f.log.Info("a table the index reads was truncated: writing every document again")
		var after build.Key
		for {
			buf := f.buf[:0]
			lastLine := 0
			last, n, err := e.ix.Scan(ctx, f.pool, after, nil, f.batch, func(d build.Doc) error {
				lastLine = len(buf)
				buf = output.AppendUpsert(buf, name, d.Key, d.ID, e.lsn, d.Doc)
				return nil
			})
			if err != nil {
				return fmt.Errorf("index %q: rebuild after truncate: %w", name, err)
			}
			f.metrics.Documents.WithLabelValues(name, output.OpUpsert).Add(float64(n))
			f.buf = buf
			if n > 0 {
				if err := f.put(buf, lastLine); err != nil {
					return err
				}
			}
			if n > 0 {
				f.maxLine = max(f.maxLine, e.lsn)
			}
			if n < f.batch {
				return nil
			}
			after = last
		}
	}
	return nil
}

// finish writes what the group still holds, flushes the output and hands the
// group to the confirmer.
func (f *Follower) finish(ctx context.Context, g *group, started time.Time) error {
	if err := f.emit(ctx, g); err != nil {
		return err
	}
	if err := f.putLast(); err != nil {
		return err
	}
	if err := f.out.Sync(); err != nil {
		return err
	}
	f.metrics.Transactions.Add(float64(g.txns))
	f.metrics.BuildSeconds.Observe(time.Since(started).Seconds())
	if ce := f.log.Check(zap.DebugLevel, "group written"); ce != nil {
		ce.Write(zap.Int("transactions", g.txns), zap.Stringer("end", g.last.EndLSN),
			zap.Duration("took", time.Since(started)), zap.Duration("waited", started.Sub(g.last.CommitTime)))
	}
	if !g.last.CommitTime.IsZero() {
		f.metrics.LagSeconds.Set(time.Since(g.last.CommitTime).Seconds())
	}
	f.confirmer.flushed(f.maxLine, g.last.EndLSN)
	f.maxLine = 0
	return nil
}
