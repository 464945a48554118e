package follow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/jetstream"
	"github.com/flusso-pg/flusso-pg/internal/metrics"
	"github.com/flusso-pg/flusso-pg/internal/state"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// Options are the follow command's settings beyond the config file.
type Options struct {
	Listen  string // --listen: health and metrics address; "" for none
	AckFD   int    // --ack-fd
	AckFile string // --ack-file
	Resync  bool   // --resync: drop the slot and progress, start over
	// StopTimeout bounds the graceful stop after SIGINT/SIGTERM.
	StopTimeout time.Duration
}

// ErrStopTimeout reports a stop that did not finish within the stop timeout:
// the work in hand was abandoned, nothing more confirmed (exit code 1).
var ErrStopTimeout = errors.New("the graceful stop did not finish within the stop timeout: the unconfirmed transactions are delivered again on restart")

// Follower is the daemon. Its stages, each in the file named for it:
// open (open.go: pool, plan, provision, output, slot), backfill
// (backfill.go), then stream (stream.go): capture → resolve (resolve.go) →
// build (build.go) → write (emitter.go) → confirm (confirm.go).
type Follower struct {
	cfg     *config.Config
	opts    Options
	log     *zap.Logger
	metrics *metrics.Metrics
	health  *fault.Health // every stage's outages and waits, capture's too

	pool      *pgxpool.Pool
	plan      *build.Plan
	capture   *wal.Capture
	out       outputSink
	pub       *jetstream.Publisher // output.kind: jetstream (sink_jetstream.go)
	store     *state.Store
	confirmer *confirmer
	em        *emitter
	lw        *lineWriter // writes the groups' lines (writer.go); nil with JetStream
	batch     int
	workers   int     // chunks of a group built at once (parallel.go)
	km        *keyMap // nil when no table needs the key map (keymap.go)

	// lineLSN is the commit LSN of the last group written (the slot's
	// position before the first): where an inline rebuild's lines go.
	lineLSN pglogrepl.LSN
	parts   map[string]string // per index, the partitions it was last rebuilt with (partitions.go)
	// partitioned holds the tables of the plan that have partitions, as
	// the last look found them: a group changing one looks again (partitions.go)
	partitioned map[string]bool
	// columns of the tables the indexes read, as the plan was compiled
	// with them (schema.go); columnsRead is false until the first check
	columns     string
	columnsRead bool
	// replans counts, since replansSince, the groups that failed on a
	// column gone while a new compile gave the same plan (schema.go)
	replans      int
	replansSince time.Time
	rebuilds     rebuilds      // recorded by the publication watcher (readd.go)
	ackedSaves   []ackedSave   // records saved once their rebuild is acknowledged (afterack.go)
	kmSync       *keyMapSyncer // syncs the key map off the pipeline's path (keymapsync.go)
	bar          *fanoutBar    // a large fan-out's progress on a terminal (fanoutbar.go)
}

// New prepares a follower; Run does the work.
func New(cfg *config.Config, opts Options, log *zap.Logger) *Follower {
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 10 * time.Second
	}
	f := &Follower{cfg: cfg, opts: opts, log: log, metrics: metrics.New(), health: fault.NewHealth(log), batch: cfg.Capture.BatchSize, workers: cfg.Capture.BuildWorkers, bar: newFanoutBar(os.Stderr)}
	f.metrics.WatchHealth(f.health)
	return f
}

// Run backfills on first start, then streams until ctx is cancelled (a clean
// stop: the transactions in hand are finished, flushed and confirmed, and Run
// returns nil) or a permanent error. Transient errors (fault.Classify) never
// end it: the unit of work in hand runs again after a backoff.
func (f *Follower) Run(ctx context.Context) (err error) {
	acks, err := openAck(f.opts.AckFD, f.opts.AckFile)
	if err != nil {
		return err
	}
	f.store = state.New(f.cfg.State.Dir, f.cfg.Source.Slot)
	lock, err := f.store.Acquire()
	if err != nil {
		return err
	}
	defer lock.Release()

	s := newStopper(ctx, f.opts.StopTimeout, f.log)
	defer s.abandon()
	g, gctx := errgroup.WithContext(s.work)
	g.Go(s.timer)
	g.Go(func() error {
		defer s.abandon() // the pipeline ended: end the timer and the server
		return f.pipeline(gctx, g, s, acks)
	})
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		f.metrics.SetFailed(config.Redact(err.Error(), config.Secrets(f.cfg.Source.DSN))) // /healthz quotes no password
		return err
	}
	if s.expired.Load() {
		return ErrStopTimeout
	}
	if s.stopped() {
		f.log.Info("stopped cleanly: everything written is flushed and confirmed")
	}
	return nil
}

// pipeline runs the stages in order: open → backfill → stream.
func (f *Follower) pipeline(ctx context.Context, g *errgroup.Group, s *stopper, acks func(context.Context) (io.ReadCloser, error)) (err error) {
	if err := f.serve(ctx, g); err != nil {
		return err
	}
	// Start and backfill stop at once on a signal: nothing is confirmed
	// yet, and the backfill resumes from its checkpoints.
	now, interrupt := s.interruptible(ctx)
	g.Go(interrupt)
	start, err := f.open(now)
	defer f.close(&err)
	if err != nil {
		if s.stopped() {
			return nil
		}
		return err
	}
	f.startSink(g, ctx)
	f.lineLSN = start.Confirmed
	if err := f.loadRebuilds(); err != nil {
		return err
	}
	if err := f.loadPartitions(now); err != nil {
		if s.stopped() {
			return nil
		}
		return err
	}
	bf := f.newBackfill(ctx, start)
	if acks != nil {
		// Read acknowledgements from the start: the reader may open its end
		// of a FIFO before it reads a line, and the backfill's progress
		// follows its acknowledgements too.
		g.Go(func() error { return readAcks(ctx, acks, f.confirmer.ack, bf.Ack, f.log) })
	}
	if err := f.backfill(now, bf, start); err != nil {
		if s.stopped() {
			f.log.Info("stopped during the backfill; the next start resumes it from its checkpoints")
			return nil
		}
		return err
	}
	err = f.stream(ctx, s.stop)
	if err != nil && s.expired.Load() && fault.Classify(err) != fault.Permanent {
		// The stop timer abandoned a unit of work that was being retried.
		return fmt.Errorf("%w (%w)", ErrStopTimeout, err)
	}
	return err
}

// serve starts the health and metrics server (--listen) under g.
func (f *Follower) serve(ctx context.Context, g *errgroup.Group) error {
	if f.opts.Listen == "" {
		return nil
	}
	serve, err := f.metrics.Serve(ctx, f.opts.Listen, f.log)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.opts.Listen, err)
	}
	g.Go(serve)
	return nil
}
