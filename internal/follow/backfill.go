package follow

import (
	"context"
	"fmt"
	"os"

	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/snapshot"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// stageBackfill is the backfill's name in fault.Health.
const stageBackfill = "backfill"

// backfill writes every index from the slot's exported snapshot on first
// run, or resumes it from its checkpoints. The stream is read only after it,
// so no stream line can be overtaken by an older backfill line.
//
// A worker whose connection dies re-reads its batch on a new one (inside
// snapshot). When the whole backfill fails on a transient error (the server
// restarted under it), it runs again from its checkpoints in a snapshot of
// its own, its lines still tagged with the slot's consistent point: the
// stream replays every commit since that point, so each document read from
// the later snapshot is brought to its newest state (docs/backfill.md).
func (f *Follower) backfill(ctx context.Context, bf *snapshot.Backfill, start *wal.Start) error {
	snap := snapshot.Snapshot{}
	if start.Created {
		snap = snapshot.Snapshot{Name: start.SnapshotName, LSN: start.ConsistentPoint}
	}
	if err := f.loadKeyMap(ctx, start); err != nil {
		f.capture.ReleaseSnapshot()
		return fmt.Errorf("backfill: load the key map (the next start recreates the slot and loads it again): %w", err)
	}
	err := f.retry(ctx, stageBackfill, func(ctx context.Context) error {
		err := bf.Run(ctx, snap, f.capture.ReleaseSnapshot)
		// A second run cannot import the slot's snapshot: the replication
		// connection may run commands once the first has imported it.
		snap.Name = ""
		return err
	})
	f.capture.ReleaseSnapshot()
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	return nil
}

// newBackfill prepares the backfill of the plan's indexes.
func (f *Follower) newBackfill(ctx context.Context, start *wal.Start) *snapshot.Backfill {
	return snapshot.New(snapshot.Config{
		Workers:   f.cfg.Backfill.Workers,
		BatchSize: f.cfg.Backfill.BatchSize,
		Fresh:     start.Created,
		Progress:  os.Stderr,
		Acks:      f.em.acks,
		// Backfill lines count as documents written, as stream lines do.
		OnLines: func(index string, n int) { f.metrics.Documents.WithLabelValues(index, output.OpUpsert).Add(float64(n)) },
		OnProgress: func(index string, done, estimate int64) {
			f.metrics.BackfillRows.WithLabelValues(index).Set(float64(done))
			f.metrics.BackfillEstimate.WithLabelValues(index).Set(float64(estimate))
		},
		Health:          f.health,
		NewerSnapshotOK: true,
		Rebuild:         true,
	}, f.plan, f.pool, f.backfillOut(ctx), f.store, f.log)
}
