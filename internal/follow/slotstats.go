package follow

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// stageSlotStats is the slot statistics' name in fault.Health.
const stageSlotStats = "slot_stats"

// watchSlot samples the slot's retained WAL and lag for the metrics: one
// cheap catalog query every interval. It never ends follow: a transient
// error is an outage of its own stage (seen on /readyz), anything else is
// logged, and the next interval tries again.
func (f *Follower) watchSlot(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var retained, lag *float64
		err := f.pool.QueryRow(ctx, `
			SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8,
			       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8
			  FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Source.Slot).Scan(&retained, &lag)
		switch {
		case err == nil:
			f.health.Recovered(stageSlotStats)
			if retained != nil {
				f.metrics.RetainedWALBytes.Set(*retained)
			}
			if lag != nil {
				f.metrics.LagBytes.Set(*lag)
			}
		case ctx.Err() != nil:
		case fault.Classify(err) != fault.Permanent:
			f.health.Failed(stageSlotStats, fault.Classify(err), err)
		default:
			f.log.Debug("sample slot statistics", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
