package follow

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// visibleSQL counts the transactions of $1 (32-bit xids, as pgoutput sends
// them) that a new snapshot would not yet see. Each xid is widened to an
// xid8 with the epoch of the current snapshot's xmax (one epoch earlier when
// its low bits are past xmax's: it was assigned before the wrap).
const visibleSQL = `
SELECT count(*) FILTER (WHERE NOT pg_visible_in_snapshot(
         ((GREATEST(0, (pg_snapshot_xmax(s)::text::bigint >> 32)
                       - CASE WHEN x > (pg_snapshot_xmax(s)::text::bigint & 4294967295) THEN 1 ELSE 0 END) << 32) | x)::text::xid8,
         s))
  FROM pg_current_snapshot() AS s, unnest($1::bigint[]) AS x`

// waitVisible returns once every transaction of txns is visible to new
// snapshots. Postgres writes a commit to the WAL — and the walsender may
// send it — a moment before the transaction becomes visible to other
// sessions (the commit record is flushed before the transaction leaves the
// proc array). Building documents in that moment would read the state before
// the commit and write it as the newest; so the group waits, usually not at
// all, for a few microseconds at worst.
func (f *Follower) waitVisible(ctx context.Context, txns []*wal.Txn) error {
	xids := make([]int64, 0, len(txns))
	for _, t := range txns {
		if t.Xid != 0 {
			xids = append(xids, int64(t.Xid))
		}
	}
	if len(xids) == 0 {
		return nil
	}
	began := time.Now()
	delay := 200 * time.Microsecond
	for {
		var invisible int64
		if err := f.pool.QueryRow(ctx, visibleSQL, xids).Scan(&invisible); err != nil {
			return fmt.Errorf("check that the transactions are visible: %w", err)
		}
		if invisible == 0 {
			return nil
		}
		if time.Since(began) > 10*time.Second {
			// A commit the WAL holds cannot stay invisible; do not hang on a
			// miscomputed xid, but say so.
			f.log.Warn("transactions still not visible after 10 s; building anyway",
				zap.Int64("invisible", invisible), zap.Int("transactions", len(xids)))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}
