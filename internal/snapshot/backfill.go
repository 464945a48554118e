package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// Config tunes a backfill.
type Config struct {
	Workers   int  // parallel readers; 0 = runtime.NumCPU(), as backfill.workers: 0
	BatchSize int  // documents per query; 0 = config.DefaultBatchSize
	Fresh     bool // the slot was just created: discard any old progress and start over
	// Progress receives a progress bar per index when it is a terminal, and
	// nothing otherwise (a log line every 10 s is written instead). nil: no bars.
	Progress io.Writer
	// OnProgress is called about five times a second per index, and once at
	// the end, with the documents written and the estimate (pg_class.reltuples).
	OnProgress func(index string, done, estimate int64)
	Indexes    []string // only these indexes; empty: all
	// OnLines is called with each batch of lines written (the documents
	// counter of the metrics); nil: not called.
	OnLines func(index string, n int)
	// CheckpointInterval is how often progress is flushed and saved; 0 = 1 s.
	CheckpointInterval time.Duration
	// Acks: the reader acknowledges what it stored (--ack-fd/--ack-file):
	// each batch's last line is marked "ack":true and the saved progress
	// follows the acknowledgements passed to Ack (see checkpoint.go).
	Acks bool
	// Health, when set, records a worker's lost connection as an outage of
	// the "backfill" stage while the worker retries its batch.
	Health *fault.Health
	// Rebuild brackets each index's backfill with rebuild_start and
	// rebuild_done lines (follow: at rebuild_done the reader drops what the
	// backfill did not write); a resumed backfill continues its rebuild.
	Rebuild bool
	// NewerSnapshotOK lets a worker whose connection died read on in a
	// newer snapshot when the backfill's snapshot died with it (follow: the
	// stream that follows replays every commit since the snapshot's LSN, so
	// each document reaches its newest state). Without it (the one-shot
	// backfill command) a lost snapshot is an error: the documents would not
	// be one consistent image.
	NewerSnapshotOK bool
}

// Snapshot is where a backfill reads from: a snapshot exported by another
// session (the slot's, when the slot was just created) and its position.
type Snapshot struct {
	Name string        // "": export our own snapshot
	LSN  pglogrepl.LSN // written on every line; 0 with Name "": the exporting transaction's pg_current_wal_lsn()
}

// Output is where the backfill writes (an *output.Writer, or the JetStream
// publisher): Write takes whole lines, one batch per call, and is safe for
// concurrent use; Sync makes everything written before it durable (the
// checkpoints follow it).
type Output interface {
	Write(lines []byte) error
	Sync() error
}

// ErrUnknownIndex is returned when Config.Indexes names an index the plan lacks.
var ErrUnknownIndex = errors.New("no such index in the config")

// Backfill writes every document of the plan's indexes once, from one
// consistent snapshot, with parallel workers reading key ranges.
type Backfill struct {
	cfg   Config
	plan  *build.Plan
	pool  *pgxpool.Pool
	w     Output
	store *state.Store
	log   *zap.Logger

	prog  *progress
	ckpt  *checkpoints
	acked atomic.Pointer[checkpoints] // ckpt, for Ack once loaded
}

// New prepares a backfill. With store nil no progress is kept: Run always
// starts from the beginning (the one-shot `backfill` command).
func New(cfg Config, plan *build.Plan, pool *pgxpool.Pool, w Output, store *state.Store, log *zap.Logger) *Backfill {
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = config.DefaultBatchSize
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Backfill{cfg: cfg, plan: plan, pool: pool, w: w, store: store, log: log.With(zap.String("component", "snapshot"))}
}

// task is one key range of one index, read by one worker.
type task struct {
	ix  *build.Index
	ip  *indexProgress
	r   *keyRange
	bar *bar
	lsn pglogrepl.LSN // written on its lines
}

// Run backfills every selected index that is not already done according to
// the store, writing one upsert line per document tagged with the snapshot's
// LSN. imported is called exactly once, as soon as every worker has imported
// the snapshot, or at once when there is nothing to import; it is called
// even when Run fails. Run returns ctx's error when ctx ends first.
func (b *Backfill) Run(ctx context.Context, snap Snapshot, imported func()) (err error) {
	var once sync.Once
	release := func() {
		once.Do(func() {
			if imported != nil {
				imported()
			}
		})
	}
	defer release()

	todo, err := b.load()
	if err != nil || len(todo) == 0 {
		return err
	}
	tasks, err := b.planTasks(ctx, todo)
	if err != nil {
		return err
	}
	if len(tasks) == 0 {
		return b.ckpt.save(b.ckpt.pending())
	}
	workers := min(b.cfg.Workers, len(tasks))
	if maxConns := int(b.pool.Config().MaxConns); workers > maxConns {
		b.log.Warn("fewer workers than asked: the connection pool is smaller", zap.Int("workers", workers), zap.Int("max_conns", maxConns))
		workers = maxConns
	}
	sessions, v, lsn, err := b.begin(ctx, snap, workers)
	defer func() {
		for _, s := range sessions {
			s.end(ctx)
		}
	}()
	release()
	if err != nil {
		return err
	}
	b.log.Info("backfill started", zap.Int("indexes", len(todo)), zap.Int("ranges", len(tasks)),
		zap.Int("workers", workers), zap.Stringer("lsn", lsn), zap.Bool("exported_by_slot", snap.Name != ""))
	if err := b.begun(todo, tasks, lsn); err != nil {
		return err
	}
	started := time.Now()
	if err := b.read(ctx, sessions, v, tasks); err != nil {
		return err
	}
	b.ckpt.finish()
	if err := b.ckpt.saveAcked(); err != nil {
		return err
	}
	var total int64
	for _, ix := range todo {
		total += b.ckpt.index(ix).Rows
	}
	elapsed := time.Since(started)
	b.log.Info("backfill done", zap.Int64("documents", total), zap.Duration("elapsed", elapsed.Round(time.Millisecond)),
		zap.Int64("docs_per_s", int64(float64(total)/max(elapsed.Seconds(), 1e-3))), zap.Stringer("lsn", lsn))
	return nil
}

// load reads and reconciles the checkpoints, and returns the selected
// indexes not yet done.
func (b *Backfill) load() ([]*build.Index, error) {
	indexes, err := b.selected()
	if err != nil {
		return nil, err
	}
	b.ckpt, err = loadCheckpoints(b.store, b.cfg.Fresh, b.plan, b.log)
	if err != nil {
		return nil, err
	}
	b.cfg.Fresh = false // a second Run (after a failure) resumes this one
	b.ckpt.acks = b.cfg.Acks
	b.acked.Store(b.ckpt)
	// Record the reconciliation (indexes dropped or started over) at once.
	if err := b.ckpt.save(b.ckpt.pending()); err != nil {
		return nil, err
	}
	var todo []*build.Index
	for _, ix := range indexes {
		if ip := b.ckpt.index(ix); ip.Done {
			b.log.Info("index already backfilled", zap.String("index", ix.Name()), zap.Int64("documents", ip.Rows))
		} else {
			todo = append(todo, ix)
		}
	}
	return todo, nil
}

// planTasks cuts every index into key ranges (a resume reuses the recorded
// ones) and returns those left to read. The boundaries are only split
// points: reading them outside the snapshot cannot make a document wrong,
// only ranges a little uneven.
func (b *Backfill) planTasks(ctx context.Context, todo []*build.Index) ([]task, error) {
	b.prog = newProgress(b.cfg.Progress, b.cfg.OnProgress, b.log)
	var tasks []task
	for _, ix := range todo {
		ip := b.ckpt.index(ix)
		estimate, err := estimateRows(ctx, b.pool, ix)
		if err != nil {
			return nil, err
		}
		if ip.Ranges == nil {
			ip.Ranges, err = planRanges(ctx, b.pool, ix, estimate, int64(rangeCount(estimate, b.cfg.Workers, b.cfg.BatchSize)), exactLimit)
			if err != nil {
				return nil, err
			}
			b.log.Debug("key ranges planned", zap.String("index", ix.Name()), zap.Int("ranges", len(ip.Ranges)), zap.Int64("estimate", estimate))
		}
		bar := b.prog.add(ix.Name(), estimate, ip.Rows)
		for _, r := range ip.Ranges {
			if !r.Done {
				tasks = append(tasks, task{ix: ix, ip: ip, r: r, bar: bar})
			}
		}
		if !slices.ContainsFunc(ip.Ranges, func(r *keyRange) bool { return !r.Done }) {
			// Every range was done but the index was not marked: mark it now.
			b.ckpt.finishIndex(ip)
			bar.finish()
			if err := b.rebuildDone(ix, ip); err != nil {
				return nil, err
			}
		}
	}
	return tasks, nil
}

// begun notes the snapshot position each index's lines carry (a resumed
// index keeps its own) and writes the rebuild_start of those beginning.
func (b *Backfill) begun(todo []*build.Index, tasks []task, lsn pglogrepl.LSN) error {
	lsns := map[*indexProgress]pglogrepl.LSN{}
	for _, ix := range todo {
		ip := b.ckpt.index(ix)
		lsns[ip] = b.ckpt.started(ip, lsn)
		if ip.Done {
			continue
		}
		if err := b.rebuildStart(ix, ip); err != nil {
			return err
		}
	}
	for i := range tasks {
		tasks[i].lsn = lsns[tasks[i].ip]
	}
	return nil
}

// selected returns the indexes to backfill, in plan order.
func (b *Backfill) selected() ([]*build.Index, error) {
	if len(b.cfg.Indexes) == 0 {
		return b.plan.Indexes, nil
	}
	var out []*build.Index
	for _, name := range b.cfg.Indexes {
		found := false
		for _, ix := range b.plan.Indexes {
			if ix.Name() == name {
				found = true
				if !slices.Contains(out, ix) {
					out = append(out, ix)
				}
			}
		}
		if !found {
			names := make([]string, len(b.plan.Indexes))
			for i, ix := range b.plan.Indexes {
				names[i] = ix.Name()
			}
			return nil, fmt.Errorf("index %q: %w (the config has %v)", name, ErrUnknownIndex, names)
		}
	}
	return out, nil
}

// checkpointLoop flushes the output and saves the progress every interval
// until stop is closed or ctx ends.
func (b *Backfill) checkpointLoop(ctx context.Context, stop <-chan struct{}) error {
	t := time.NewTicker(b.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := b.checkpoint(); err != nil {
				return err
			}
		}
	}
}

// checkpoint makes every written line durable (in ack mode: hands it to the
// reader), then records how far each range got (checkpoint.go).
func (b *Backfill) checkpoint() error { return b.ckpt.checkpoint(b.w) }
