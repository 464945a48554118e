package follow

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

// stageRebuild is the name in fault.Health of the scan that writes every
// document of an index again after a table it reads was truncated.
const stageRebuild = "rebuild"

// emit builds and writes the group's lines in LSN order and empties it
// (keeping last). Keys are built in chunks of f.batch with one query per
// index and chunk; an event at LSN t comes before the documents of t (they
// were built after it). The output's "lsn" never decreases within a group,
// which is what makes acknowledgements exact.
func (f *Follower) emit(ctx context.Context, g *group) error {
	entries := make([]*entry, 0, g.nkeys)
	for _, m := range g.keys {
		for _, e := range m {
			entries = append(entries, e)
		}
	}
	slices.SortStableFunc(entries, func(a, b *entry) int {
		return cmp.Or(cmpLSN(a.lsn, b.lsn), cmp.Compare(a.ix.Name(), b.ix.Name()))
	})
	events := g.events
	slices.SortStableFunc(events, func(a, b event) int { return cmpLSN(a.lsn, b.lsn) })

	for len(entries) > 0 || len(events) > 0 {
		if len(events) > 0 && (len(entries) == 0 || events[0].lsn <= entries[0].lsn) {
			if err := f.writeEvent(ctx, events[0]); err != nil {
				return err
			}
			events = events[1:]
			continue
		}
		n := min(f.batch, len(entries))
		if len(events) > 0 {
			// Stop the chunk before the event's transaction.
			if i := slices.IndexFunc(entries[:n], func(e *entry) bool { return e.lsn >= events[0].lsn }); i >= 0 {
				n = i
			}
		}
		if err := f.writeChunk(ctx, entries[:n]); err != nil {
			return err
		}
		entries = entries[n:]
	}
	g.clear()
	return nil
}

// writeChunk builds the documents of one chunk of keys, one query per
// index, and writes their lines, each with the LSN of its key's newest
// transaction.
func (f *Follower) writeChunk(ctx context.Context, chunk []*entry) error {
	byIndex := map[*build.Index][]*entry{}
	var order []*build.Index
	for _, e := range chunk {
		if _, ok := byIndex[e.ix]; !ok {
			order = append(order, e.ix)
		}
		byIndex[e.ix] = append(byIndex[e.ix], e)
	}
	f.em.begin()
	for _, ix := range order {
		es := byIndex[ix]
		keys := make([]build.Key, len(es))
		for i, e := range es {
			keys[i] = e.key
		}
		name := ix.Name()
		err := ix.Build(ctx, f.pool, keys, func(d build.Doc) error {
			lsn := es[d.Input].lsn
			if d.Doc == nil {
				f.em.delete(name, d.Key, d.ID, lsn)
				f.metrics.Documents.WithLabelValues(name, output.OpDelete).Inc()
			} else {
				f.em.upsert(name, d.Key, d.ID, lsn, d.Doc)
				f.metrics.Documents.WithLabelValues(name, output.OpUpsert).Inc()
			}
			return nil
		})
		if err != nil {
			return err // build names the index
		}
	}
	return f.em.end()
}

// writeEvent writes a truncate line, or every document of an index again.
func (f *Follower) writeEvent(ctx context.Context, e event) error {
	name := e.ix.Name()
	if e.kind == truncateEvent {
		f.em.begin()
		f.em.truncate(name, e.lsn)
		f.metrics.Documents.WithLabelValues(name, output.OpTruncate).Inc()
		return f.em.end()
	}
	f.log.Info("a table the index reads was truncated: writing every document again", zap.String("index", name))
	return f.rebuild(ctx, e.ix, e.lsn)
}

// rebuild writes every document of ix again at lsn. The scan is a rebuild
// (SPEC): bracketed by rebuild_start and rebuild_done, so a reader drops
// whatever the scan did not write. A group run again after a fault starts
// the rebuild again.
func (f *Follower) rebuild(ctx context.Context, ix *build.Index, lsn pglogrepl.LSN) error {
	name := ix.Name()
	f.em.begin()
	f.em.rebuildStart(name, lsn)
	if err := f.em.end(); err != nil {
		return err
	}
	var after build.Key
	for {
		// One page is the unit of work: a connection lost in the middle
		// of a rebuild scans on from the page it was reading.
		var last build.Key
		var n int
		err := f.retry(ctx, stageRebuild, func(ctx context.Context) (err error) {
			f.em.begin()
			last, n, err = ix.Scan(ctx, f.pool, after, nil, f.batch, func(d build.Doc) error {
				f.em.upsert(name, d.Key, d.ID, lsn, d.Doc)
				return nil
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("rebuild of index %s: %w", name, err)
		}
		f.metrics.Documents.WithLabelValues(name, output.OpUpsert).Add(float64(n))
		if err := f.em.end(); err != nil {
			return err
		}
		if n < f.batch {
			f.em.begin()
			f.em.rebuildDone(name, lsn)
			return f.em.end()
		}
		after = last
	}
}
