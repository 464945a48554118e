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

// emit hands the group's keys to its builders in LSN order and empties it
// (keeping last). Keys are built in chunks of f.batch with one query per
// index and chunk, up to f.workers chunks at once, and written in the order
// they were handed over (parallel.go); the last chunks may still be in
// flight when emit returns: g.b.flush writes them. An event at LSN t comes
// after every chunk before it and before the documents of t (they were
// built after it). Within a transaction and index, keys go in the
// order of their text values, not the map's: the same group gives the same
// chunks, hence the same lines, whatever the process. The output's "lsn" never decreases within a group,
// which is what makes acknowledgements exact.
func (f *Follower) emit(ctx context.Context, g *group) error {
	entries := make([]*entry, 0, g.nkeys)
	for _, m := range g.keys {
		for _, e := range m {
			entries = append(entries, e)
		}
	}
	// (A total order: the group holds one entry per index and key.)
	slices.SortFunc(entries, func(a, b *entry) int {
		return cmp.Or(cmpLSN(a.lsn, b.lsn), cmp.Compare(a.ix.Name(), b.ix.Name()), slices.Compare(a.key, b.key))
	})
	events := g.events
	slices.SortStableFunc(events, func(a, b event) int { return cmpLSN(a.lsn, b.lsn) })

	for len(entries) > 0 || len(events) > 0 {
		if len(events) > 0 && (len(entries) == 0 || events[0].lsn <= entries[0].lsn) {
			if err := g.b.flush(); err != nil {
				return err
			}
			if err := f.writeEvent(ctx, g.q, events[0]); err != nil {
				return err
			}
			events = events[1:]
			continue
		}
		// The keys before the next event (all of them when none), in
		// chunks of f.batch, built in parallel and written in order: no
		// chunk overlaps an event.
		n := len(entries)
		if len(events) > 0 {
			n = slices.IndexFunc(entries, func(e *entry) bool { return e.lsn >= events[0].lsn })
			if n < 0 {
				n = len(entries)
			}
		}
		for run := entries[:n]; len(run) > 0; {
			c := min(f.batch, len(run))
			if err := g.b.add(ctx, run[:c]); err != nil {
				return err
			}
			run = run[c:]
		}
		entries = entries[n:]
	}
	g.clear()
	return nil
}

// writeEvent writes a truncate line, or every document of an index again.
func (f *Follower) writeEvent(ctx context.Context, q build.Querier, e event) error {
	name := e.ix.Name()
	if e.kind == truncateEvent {
		f.em.begin()
		f.em.truncate(name, e.lsn)
		f.metrics.Documents.WithLabelValues(name, output.OpTruncate).Inc()
		return f.em.end()
	}
	f.log.Info("a table the index reads was truncated: writing every document again", zap.String("index", name))
	return f.rebuildWith(ctx, q, e.ix, e.lsn, f.parts[name])
}

// rebuild writes every document of ix again at lsn. The scan is a rebuild
// (SPEC): bracketed by rebuild_start and rebuild_done, so a reader drops
// whatever the scan did not write. A group run again after a fault starts
// the rebuild again. want is the partitions' fingerprint the documents are
// to be built from (partitions.go: a page that saw others marks the index
// unsure, to be rebuilt at the next look).
func (f *Follower) rebuild(ctx context.Context, ix *build.Index, lsn pglogrepl.LSN) error {
	return f.rebuildWith(ctx, f.pool, ix, lsn, f.parts[ix.Name()])
}

// rebuildFrom is rebuild from the partitions want.
func (f *Follower) rebuildFrom(ctx context.Context, ix *build.Index, lsn pglogrepl.LSN, want string) error {
	return f.rebuildWith(ctx, f.pool, ix, lsn, want)
}

// rebuildWith is rebuild reading through q (a group's gate).
func (f *Follower) rebuildWith(ctx context.Context, q build.Querier, ix *build.Index, lsn pglogrepl.LSN, want string) error {
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
		var saw string
		err := f.retry(ctx, stageRebuild, func(ctx context.Context) (err error) {
			f.em.begin()
			last, n, saw, err = f.scanPage(ctx, q, ix, after, func(d build.Doc) error {
				f.em.upsert(name, d.Key, d.ID, lsn, d.Doc)
				return nil
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("rebuild of index %s: %w", name, err)
		}
		if saw != want {
			if err := f.partitionsUnsure(ix, want, saw); err != nil {
				return err
			}
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
