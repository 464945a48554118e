package follow

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// stopper is the two-phase stop: at the signal (ctx's end) stop closes, and
// the pipeline takes no new work; the work in hand (the group of
// transactions being written) goes on under work, which ends timeout later
// at the latest. This is the soft and hard stop of benthos's async reader.
type stopper struct {
	stop    <-chan struct{}
	work    context.Context
	abandon context.CancelFunc // ends work (at the hard stop, or when the pipeline is done)
	timeout time.Duration
	log     *zap.Logger
	expired atomic.Bool // the timer abandoned the work in hand
}

func newStopper(ctx context.Context, timeout time.Duration, log *zap.Logger) *stopper {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &stopper{stop: ctx.Done(), work: work, abandon: cancel, timeout: timeout, log: log}
}

// timer runs under the errgroup: timeout after the signal it ends work.
func (s *stopper) timer() error {
	select {
	case <-s.stop:
	case <-s.work.Done():
		return nil
	}
	s.log.Info("stopping: finishing the transaction in hand, then flushing and confirming", zap.Duration("stop_timeout", s.timeout))
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case <-t.C:
		s.log.Warn("graceful stop took too long: stopping now; the unconfirmed transactions will be delivered again on restart")
		s.expired.Store(true)
		s.abandon()
	case <-s.work.Done():
	}
	return nil
}

// interruptible returns a context of parent that also ends at the signal,
// for work that stops at once (the start, the backfill), and the function
// that ends it, to run under the errgroup.
func (s *stopper) interruptible(parent context.Context) (context.Context, func() error) {
	ctx, cancel := context.WithCancel(parent)
	return ctx, func() error {
		defer cancel()
		select {
		case <-s.stop:
		case <-ctx.Done():
		}
		return nil
	}
}

// stopped reports whether the stop signal came.
func (s *stopper) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}
