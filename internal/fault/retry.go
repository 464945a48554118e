package fault

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Backoff is a bounded exponential backoff with jitter: each wait is drawn
// from [d/2, d], d doubling from Min to Max. The zero value uses the defaults.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// The defaults: 100 ms doubling to 30 s.
const (
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultAuthGrace is how long an auth error is retried before it is
	// treated as permanent.
	DefaultAuthGrace = 30 * time.Second
)

// Next returns the next wait and advances the backoff.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi <= 0 {
		hi = DefaultMaxBackoff
	}
	if b.cur == 0 {
		b.cur = lo
	} else {
		b.cur = min(b.cur*2, hi)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// Reset starts the backoff again from Min (after a success).
func (b *Backoff) Reset() { b.cur = 0 }

// Wait sleeps for the next wait, or until ctx ends (then it returns ctx's
// error).
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retry runs fn until it succeeds, returns a permanent error, or ctx ends.
// A transient error is recorded on h (which logs the episode once and counts
// the retry) and fn runs again after the backoff; an Auth error likewise
// until it has persisted for DefaultAuthGrace. On success the stage's
// episode, if any, ends. fn must be safe to run again: it re-runs the unit of
// work from its start. h may be nil.
func Retry(ctx context.Context, h *Health, stage string, fn func(context.Context) error) error {
	var b Backoff
	var authSince time.Time
	for {
		err := fn(ctx)
		if err == nil {
			h.Recovered(stage)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		class := Classify(err)
		switch class {
		case Permanent:
			return err
		case Auth:
			if authSince.IsZero() {
				authSince = time.Now()
			} else if time.Since(authSince) > DefaultAuthGrace {
				return err
			}
		default:
			authSince = time.Time{}
		}
		h.Failed(stage, class, err)
		if werr := b.Wait(ctx); werr != nil {
			return err
		}
	}
}

// Health tracks which stages are failing (degraded) or waiting, for /readyz,
// the flusso_degraded gauge and the log. Its methods are safe for concurrent
// use and on a nil *Health (they do nothing).
type Health struct {
	log *zap.Logger

	// OnRetry, when set before use, is called for every transient failure
	// recorded (flusso_retries_total{stage,class}).
	OnRetry func(stage string, class Class)
	// OnChange, when set before use, is called with the new state whenever
	// a stage starts or stops being degraded or waiting.
	OnChange func(degraded bool)

	mu     sync.Mutex
	stages map[string]*episode
}

type episode struct {
	since   time.Time
	cause   string
	waiting bool // a wait, not a failure (a standby waiting for the slot)
	retries int
}

// NewHealth returns a tracker logging to log.
func NewHealth(log *zap.Logger) *Health {
	if log == nil {
		log = zap.NewNop()
	}
	return &Health{log: log, stages: map[string]*episode{}}
}

// Failed records a transient failure of stage. The first of an episode logs
// one WARN naming the stage and the cause; later ones only count.
func (h *Health) Failed(stage string, class Class, err error) {
	if h == nil {
		return
	}
	if h.OnRetry != nil {
		h.OnRetry(stage, class)
	}
	h.mu.Lock()
	e, ok := h.stages[stage]
	if !ok || e.waiting {
		e = &episode{since: time.Now()}
		h.stages[stage] = e
	}
	e.cause = err.Error()
	e.retries++
	first := e.retries == 1
	h.mu.Unlock()
	if first {
		h.log.Warn(stage+" is failing; retrying with backoff until it recovers",
			zap.String("stage", stage), zap.String("class", class.String()), zap.Error(err))
		h.changed()
	}
}

// Waiting records that stage is waiting for something that is not a fault
// (why says what), logged once at INFO; Recovered ends it.
func (h *Health) Waiting(stage, why string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	e, ok := h.stages[stage]
	if ok && e.waiting && e.cause == why {
		h.mu.Unlock()
		return
	}
	h.stages[stage] = &episode{since: time.Now(), cause: why, waiting: true}
	h.mu.Unlock()
	h.log.Info(why, zap.String("stage", stage))
	h.changed()
}

// Recovered ends stage's episode, if it has one, with one INFO line giving
// its length.
func (h *Health) Recovered(stage string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	e, ok := h.stages[stage]
	if ok {
		delete(h.stages, stage)
	}
	h.mu.Unlock()
	if !ok {
		return
	}
	if e.waiting {
		h.log.Info(stage+" is no longer waiting", zap.String("stage", stage),
			zap.Duration("waited", time.Since(e.since).Round(time.Millisecond)))
	} else {
		h.log.Info(stage+" recovered", zap.String("stage", stage),
			zap.Duration("outage", time.Since(e.since).Round(time.Millisecond)), zap.Int("retries", e.retries))
	}
	h.changed()
}

// Degraded reports whether any stage is failing or waiting, and a one-line
// reason naming each (for /readyz).
func (h *Health) Degraded() (bool, string) {
	if h == nil {
		return false, ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.stages) == 0 {
		return false, ""
	}
	var why string
	for _, stage := range slices.Sorted(maps.Keys(h.stages)) {
		e := h.stages[stage]
		if why != "" {
			why += "; "
		}
		if e.waiting {
			why += fmt.Sprintf("%s: %s (for %s)", stage, e.cause, time.Since(e.since).Round(time.Second))
		} else {
			why += fmt.Sprintf("%s: failing for %s, %d retries: %s", stage,
				time.Since(e.since).Round(time.Second), e.retries, e.cause)
		}
	}
	return true, why
}

// StageDegraded reports whether stage is failing or waiting.
func (h *Health) StageDegraded(stage string) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.stages[stage]
	return ok
}

func (h *Health) changed() {
	if h.OnChange != nil {
		d, _ := h.Degraded()
		h.OnChange(d)
	}
}
