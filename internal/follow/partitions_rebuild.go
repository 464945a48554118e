package follow

import (
	"context"
	"maps"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// A rebuild of an index that reads a partitioned table checks, page by
// page, that it read the partitions it was to be built from
// (partitions.go has the looks).

// partsUnsure is the fingerprint of an index whose last rebuild read other
// partitions than it was to be built from: it equals no fingerprint read,
// so the next look rebuilds the index again.
const partsUnsure = "?"

// scanPage scans one page of a rebuild of ix. When ix reads a partitioned
// table, the page runs in a transaction that reads the index's partitions
// after the scan (saw), while it still holds the lock of every leaf it
// scanned: no leaf it read can be detached, dropped or truncated before
// that read, so a leaf the page read that is not in the fingerprint the
// rebuild was to use (attached during the rebuild, and perhaps dropped
// right after, which no later look could see) shows as a difference.
func (f *Follower) scanPage(ctx context.Context, q build.Querier, ix *build.Index, after build.Key, fn func(build.Doc) error) (build.Key, int, string, error) {
	if f.parts[ix.Name()] == "" {
		last, n, err := ix.Scan(ctx, q, after, nil, f.batch, fn)
		return last, n, "", err
	}
	// The page reads in a transaction of its own: a group's visibility
	// check goes first.
	if err := passGate(ctx, q); err != nil {
		return nil, 0, "", err
	}
	tx, err := f.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, 0, "", err
	}
	defer tx.Rollback(context.Background())
	last, n, err := ix.Scan(ctx, tx, after, nil, f.batch, fn)
	if err != nil {
		return nil, 0, "", err
	}
	fps, err := f.partitionsOf(ctx, tx)
	if err != nil {
		return nil, 0, "", err
	}
	return last, n, fps[ix.Name()], nil
}

// partitionsUnsure marks ix to be rebuilt at the next look: a page of its
// rebuild read partitions (saw) other than those it was to be built from
// (want). Saved at once: one rebuild more is never wrong.
func (f *Follower) partitionsUnsure(ix *build.Index, want, saw string) error {
	if f.parts[ix.Name()] == partsUnsure {
		return nil
	}
	f.log.Info("the partitions changed while the index was rebuilt: it is rebuilt again at the next look",
		zap.String("index", ix.Name()), zap.String("wanted", want), zap.String("read", saw))
	f.parts[ix.Name()] = partsUnsure
	return f.store.Save(state.PartitionsRecord, f.parts)
}

// saveParts saves the fingerprints once it is safe (afterack.go); an index
// marked unsure meanwhile stays so.
func (f *Follower) saveParts() error {
	parts := maps.Clone(f.parts)
	return f.saveWhenSafe(func() error {
		for name, fp := range f.parts {
			if fp == partsUnsure {
				parts[name] = fp
			}
		}
		return f.store.Save(state.PartitionsRecord, parts)
	})
}

// passGate runs the visibility check of q now when q is a group's gate
// that has not passed it yet (visible.go).
func passGate(ctx context.Context, q build.Querier) error {
	g, ok := q.(*gate)
	if !ok || g.passed.Load() {
		return nil
	}
	var one int
	return g.QueryRow(ctx, "SELECT 1").Scan(&one)
}
