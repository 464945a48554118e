package follow

import (
	"context"
	"fmt"

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

// resolve adds the root keys and truncations one batch of txn's rows affects.
func (f *Follower) resolve(ctx context.Context, g *group, txn *wal.Txn, rows []change.Row, spill int) error {
	aff, err := f.plan.Resolve(ctx, f.pool, rows)
	if err != nil {
		return fmt.Errorf("transaction %d (commit %s): %w", txn.Xid, txn.CommitLSN, err)
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
}
