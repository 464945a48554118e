package follow

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// collect resolves the rows of txn into the group. When the group grows past
// spill keys, the keys gathered so far are written first (in LSN order), so
// one transaction that touches a million documents never holds them all.
func (f *Follower) collect(ctx context.Context, g *group, txn *wal.Txn, spill int) error {
	g.last = txn
	g.txns++
	var inner error // an error of the work below, not of reading the rows
	err := txn.Each(f.batch, func(rows []change.Row) error {
		if inner = f.fill(txn, rows); inner != nil {
			return inner
		}
		inner = f.resolve(ctx, g, txn, rows, spill)
		return inner
	})
	if cerr := f.commitKeyMap(err == nil); err == nil {
		err = cerr
	}
	if err != nil && inner == nil {
		// Reading a spilled transaction back from its local file failed:
		// running the group again would read the same file.
		return fault.MarkPermanent(err)
	}
	return err
}

// fanoutLog is the number of documents from which a group's fan-out is
// logged: when it reaches it, and its rate once it is written.
const fanoutLog = 10000

// resolve adds the root keys and truncations one batch of txn's rows
// affects. The keys are streamed (build.ResolveEach): whenever the group
// holds spill keys, those gathered so far are written, in LSN order, while
// the resolution reads on, so a row shared by a million documents (a tag
// renamed) is resolved and written in chunks of spill keys and never held
// whole. The batch's truncations are in the group before any of its keys,
// so they are written first. A key the group has already written in an
// earlier chunk is built again if another row reaches it (at the same or a
// newer LSN: the fold keeps the newest); within a chunk it is built once.
func (f *Follower) resolve(ctx context.Context, g *group, txn *wal.Txn, rows []change.Row, spill int) error {
	truncated, rebuild := f.plan.Events(rows)
	for _, ix := range truncated {
		g.events = append(g.events, event{kind: truncateEvent, ix: ix, lsn: txn.CommitLSN})
	}
	for _, ix := range rebuild {
		g.events = append(g.events, event{kind: rebuildEvent, ix: ix, lsn: txn.CommitLSN})
	}
	var inner error // an error of writing a chunk, not of the resolution
	err := f.plan.ResolveEach(ctx, g.q, rows, func(ix *build.Index, k build.Key) error {
		g.addKey(ix, k, txn.CommitLSN)
		if g.nkeys < spill {
			return nil
		}
		if !g.announced && g.documents() >= fanoutLog {
			g.announced = true
			f.log.Info("a large fan-out: its documents are written in chunks as they are resolved",
				zap.Uint32("xid", txn.Xid), zap.Stringer("commit", txn.CommitLSN),
				zap.Int("resolved", g.documents()), zap.Int("chunk", spill))
			f.bar.begin(txn.Xid, time.Now())
		}
		f.metrics.FanoutDocuments.Set(float64(g.documents()))
		inner = f.emit(ctx, g)
		f.bar.update(g.written, time.Now())
		return inner
	})
	if err != nil {
		if inner != nil && err == inner {
			return err
		}
		return fmt.Errorf("transaction %d (commit %s): %w", txn.Xid, txn.CommitLSN, err)
	}
	f.metrics.FanoutDocuments.Set(float64(g.documents()))
	return nil
}

// written records a group written and flushed: its size in the histogram,
// and for a large fan-out its size and rate in the log.
func (f *Follower) written(g *group, started time.Time) {
	n := g.documents()
	f.metrics.GroupDocuments.Observe(float64(n))
	f.metrics.FanoutDocuments.Set(0)
	if n < fanoutLog {
		return
	}
	took := time.Since(started)
	f.bar.end(n, time.Now())
	f.log.Info("fan-out written", zap.Int("documents", n), zap.Int("chunks", g.chunks), zap.Int("most_held", g.held),
		zap.Int("transactions", g.txns), zap.Duration("took", took), zap.Float64("docs_per_s", float64(n)/took.Seconds()))
}
