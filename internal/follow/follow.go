package follow

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/jetstream"
	"github.com/flusso-pg/flusso-pg/internal/metrics"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/provision"
	"github.com/flusso-pg/flusso-pg/internal/snapshot"
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

// Follower is the daemon: capture → resolve → build → write → confirm.
type Follower struct {
	cfg     *config.Config
	opts    Options
	log     *zap.Logger
	metrics *metrics.Metrics

	pool      *pgxpool.Pool
	plan      *build.Plan
	capture   *wal.Capture
	out       sink
	pub       *jetstream.Publisher // output.kind: jetstream (sink_jetstream.go)
	store     *state.Store
	confirmer *confirmer
	batch     int

	// reused buffers of the writing goroutine
	buf, ordered, held []byte
	lines              []line
	maxLine            pglogrepl.LSN
}

// New prepares a follower; Run does the work.
func New(cfg *config.Config, opts Options, log *zap.Logger) *Follower {
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 10 * time.Second
	}
	return &Follower{cfg: cfg, opts: opts, log: log, metrics: metrics.New(), batch: cfg.Capture.BatchSize}
}

// Metrics returns the follower's metrics (for tests).
func (f *Follower) Metrics() *metrics.Metrics { return f.metrics }

// Run backfills on first start, then streams until ctx is cancelled (a clean
// stop: the transactions in hand are finished, flushed and confirmed, and Run
// returns nil) or a fatal error.
func (f *Follower) Run(ctx context.Context) (err error) {
	openAckCh, err := openAck(f.opts.AckFD, f.opts.AckFile)
	if err != nil {
		return err
	}
	// Work continues for a bounded time after a stop signal, to finish the
	// transaction in hand; stop tells the loop to take no new one.
	stop := ctx.Done()
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var expired atomic.Bool
	defer func() {
		if err == nil && expired.Load() {
			err = ErrStopTimeout
		}
	}()
	go func() {
		select {
		case <-stop:
			f.log.Info("stopping: finishing the transaction in hand, then flushing and confirming", zap.Duration("stop_timeout", f.opts.StopTimeout))
			t := time.NewTimer(f.opts.StopTimeout)
			defer t.Stop()
			select {
			case <-t.C:
				f.log.Warn("graceful stop took too long: stopping now; the unconfirmed transactions will be delivered again on restart")
				expired.Store(true)
				cancelWork()
			case <-work.Done():
			}
		case <-work.Done():
		}
	}()

	// One connection per backfill worker, one to plan with, one for the
	// slot statistics.
	workers := f.cfg.Backfill.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	f.pool, err = pgsession.OpenPool(work, f.cfg.Source.DSN, max(workers+2, 4))
	if err != nil {
		return err
	}
	defer f.pool.Close()
	f.store = state.New(f.cfg.State.Dir, f.cfg.Source.Slot)

	plan, problems, err := build.Compile(work, f.pool, f.cfg)
	if err != nil {
		return err
	}
	if err := build.Problems(problems).Err(); err != nil {
		return err
	}
	f.plan = plan
	for _, ix := range plan.Indexes {
		// Every series exists from the start, so rate() alerts see a 0.
		for _, op := range []string{output.OpUpsert, output.OpDelete} {
			f.metrics.Documents.WithLabelValues(ix.Name(), op)
		}
	}

	if _, err := provision.Ensure(work, pgsession.ReadWrite(f.pool), f.cfg, f.plan, f.store, f.log); err != nil {
		return err
	}

	f.out, err = f.openSink(work)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.out.Close(); err == nil && cerr != nil && !errors.Is(cerr, output.ErrReaderGone) {
			err = cerr
		}
	}()

	f.capture = wal.New(wal.Config{
		DSN:            f.cfg.Source.DSN,
		Slot:           f.cfg.Source.Slot,
		Publication:    f.cfg.Source.Publication,
		Tables:         f.plan.CaptureColumns(),
		OldColumns:     f.plan.OldTupleColumns(),
		MemoryBudget:   f.cfg.Capture.MemoryBudget,
		TempDir:        f.cfg.Capture.SpillDir,
		StatusInterval: f.cfg.Capture.StatusInterval,
		Coalesce:       coalesce(f.cfg.Capture.Coalesce),
		Store:          f.store,
		Resync:         f.opts.Resync,
	}, f.log)
	defer f.capture.Close()
	f.metrics.WatchCapture(f.capture)
	start, err := f.capture.Open(work)
	if err != nil {
		return err
	}
	f.confirmer = newConfirmer(openAckCh != nil || f.pub != nil, func(lsn pglogrepl.LSN) {
		f.capture.Confirm(lsn)
		f.metrics.ConfirmedLSN.Set(float64(lsn))
	})

	g, gctx := errgroup.WithContext(work)
	if f.opts.Listen != "" {
		serve, err := f.metrics.Serve(gctx, f.opts.Listen, f.log)
		if err != nil {
			return fmt.Errorf("--listen %s: %w", f.opts.Listen, err)
		}
		g.Go(serve)
	}
	f.startSink(g, gctx)

	// Backfill first: every index from the slot's exported snapshot on first
	// run, or resumed from its checkpoints. The stream is read only after it,
	// so no stream line can be overtaken by an older backfill line.
	bf := snapshot.New(snapshot.Config{
		Workers:   f.cfg.Backfill.Workers,
		BatchSize: f.cfg.Backfill.BatchSize,
		Fresh:     start.Created,
		Progress:  os.Stderr,
		Acks:      openAckCh != nil,
		// Backfill lines count as documents written, as stream lines do.
		OnLines: func(index string, n int) { f.metrics.Documents.WithLabelValues(index, output.OpUpsert).Add(float64(n)) },
		OnProgress: func(index string, done, estimate int64) {
			f.metrics.BackfillRows.WithLabelValues(index).Set(float64(done))
			f.metrics.BackfillEstimate.WithLabelValues(index).Set(float64(estimate))
		},
	}, f.plan, f.pool, f.backfillOut(work), f.store, f.log)
	if openAckCh != nil {
		// Read acknowledgements from the start: the reader may open its end
		// of a FIFO before it reads a line, and the backfill's progress
		// follows its acknowledgements too.
		g.Go(func() error { return readAcks(gctx, openAckCh, f.confirmer.ack, bf.Ack, f.log) })
	}
	snap := snapshot.Snapshot{}
	if start.Created {
		snap = snapshot.Snapshot{Name: start.SnapshotName, LSN: start.ConsistentPoint}
	}
	released := false
	release := func() {
		if !released {
			released = true
			f.capture.ReleaseSnapshot()
		}
	}
	// A stop signal interrupts the backfill at once: its checkpoints are
	// saved after each flush, and the next start resumes from them.
	bctx, cancelBackfill := context.WithCancel(gctx)
	go func() {
		select {
		case <-stop:
			cancelBackfill()
		case <-bctx.Done():
		}
	}()
	err = bf.Run(bctx, snap, release)
	cancelBackfill()
	release()
	if err != nil {
		cancelWork()
		gerr := g.Wait()
		if isClosed(stop) {
			f.log.Info("stopped during the backfill; the next start resumes it from its checkpoints")
			return nil
		}
		if gerr != nil && !errors.Is(gerr, context.Canceled) {
			return gerr // the ack channel failed: the backfill stopped for it
		}
		return fmt.Errorf("backfill: %w", err)
	}

	// Capture hands out transactions in batches (those read together), so
	// a few batches keep it well ahead; memory stays bounded by the batches'
	// size (see wal.Capture.Run).
	txns := make(chan []*wal.Txn, 4)
	captureCtx, stopCapture := context.WithCancel(gctx)
	defer stopCapture()
	g.Go(func() error { return f.capture.Run(captureCtx, txns) })
	g.Go(func() error {
		defer cancelWork() // the loop ended: stop the other goroutines
		err := f.loop(gctx, stop, txns)
		if err == nil && f.confirmer.acks && f.confirmer.waiting() > 0 {
			f.waitAcks(gctx)
		}
		stopCapture() // capture sends its final status update as it stops
		return err
	})
	g.Go(func() error { return f.watchSlot(gctx, 5*time.Second) })
	f.metrics.SetReady(true)
	f.log.Info("streaming", zap.String("slot", f.cfg.Source.Slot), zap.Int("indexes", len(f.plan.Indexes)))
	err = g.Wait()
	drain(txns)
	if err != nil && !errors.Is(err, context.Canceled) {
		f.metrics.SetFailed(config.Redact(err.Error(), config.Secrets(f.cfg.Source.DSN))) // /healthz quotes no password
		return err
	}
	if isClosed(stop) && !expired.Load() {
		f.log.Info("stopped cleanly: everything written is flushed and confirmed")
	}
	return nil
}

// loop takes committed transactions in commit order, coalescing those that
// are already waiting (flusso-pg is behind), and writes their documents.
func (f *Follower) loop(ctx context.Context, stop <-chan struct{}, txns <-chan []*wal.Txn) error {
	spill := max(f.batch*20, 10000)
	for {
		var held []*wal.Txn
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case held = <-txns:
		}
		started := time.Now()
		// Take what is already waiting (flusso-pg is behind), never wait for more.
		rows := 0
		for _, t := range held {
			rows += t.Rows
		}
	gather:
		for rows < spill {
			select {
			case more := <-txns:
				held = append(held, more...)
				for _, t := range more {
					rows += t.Rows
				}
			default:
				break gather
			}
		}
		err := f.process(ctx, held, spill, started)
		release(held)
		if err != nil {
			return err
		}
	}
}

// process resolves, builds, writes and flushes one group of transactions.
func (f *Follower) process(ctx context.Context, txns []*wal.Txn, spill int, started time.Time) error {
	if err := f.waitVisible(ctx, txns); err != nil {
		return err
	}
	g := newGroup()
	for _, txn := range txns {
		if err := f.collect(ctx, g, txn, spill); err != nil {
			return err
		}
	}
	return f.finish(ctx, g, started)
}

// coalesce maps the config's coalesce (0 is off) to wal.Config's (0 is
// the default, negative is off).
func coalesce(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// drain releases what capture handed out and nobody took (spill files).
func drain(txns chan []*wal.Txn) {
	for {
		select {
		case b := <-txns:
			release(b)
		default:
			return
		}
	}
}

func release(txns []*wal.Txn) {
	for _, t := range txns {
		t.Release()
	}
}

// waitAcks gives the reader a moment to acknowledge what it has read before
// a graceful stop.
func (f *Follower) waitAcks(ctx context.Context) {
	deadline := time.Now().Add(f.opts.StopTimeout / 2)
	for f.confirmer.waiting() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
