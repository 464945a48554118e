package follow

import (
	"context"

	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// retry runs fn, one unit of work of stage, until it succeeds or fails
// permanently (fault.Retry: backoff with jitter, the episode logged once and
// counted in the metrics). After a transient failure the pool's connections
// are reopened: a server restart leaves every idle one dead, and each would
// otherwise fail one more attempt.
func (f *Follower) retry(ctx context.Context, stage string, fn func(context.Context) error) error {
	return fault.Retry(ctx, f.health, stage, func(ctx context.Context) error {
		err := fn(ctx)
		if err != nil && f.pool != nil && fault.Classify(err) != fault.Permanent {
			f.pool.Reset()
		}
		return err
	})
}
