package follow

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// stageBuild is the name in fault.Health of the work on a group of
// transactions: visibility wait, resolve, build, write.
const stageBuild = "build"

// stream runs the pipeline until stop (or a permanent error): capture hands
// committed transactions to loop, which writes their documents and confirms
// them; the reader's acks and the slot statistics run beside it.
func (f *Follower) stream(ctx context.Context, stop <-chan struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	// Capture hands out transactions in batches (those read together), so
	// a few batches keep it well ahead; memory stays bounded by the batches'
	// size (see wal.Capture.Run).
	txns := make(chan []*wal.Txn, 4)
	defer drain(txns)
	captureCtx, stopCapture := context.WithCancel(gctx)
	defer stopCapture()
	g.Go(func() error { return f.capture.Run(captureCtx, txns) })
	g.Go(func() error {
		defer cancel() // the loop ended: stop the other goroutines
		err := f.loop(gctx, stop, txns)
		if err == nil && f.lw != nil {
			err = f.lw.Sync() // every group written is handed on
		}
		f.stopKeyMapSyncer() // what it holds is confirmed before the wait for acks
		if err == nil && f.confirmer.acks && f.confirmer.waiting() > 0 {
			f.waitAcks(gctx)
		}
		if err == nil {
			// The rebuild records the acknowledgements now allow
			// (afterack.go), not left to the next start.
			err = f.runAckedSaves()
		}
		stopCapture() // capture sends its final status update as it stops
		return err
	})
	g.Go(func() error { return f.watchSlot(gctx, 5*time.Second) })
	f.metrics.SetReady(true)
	f.log.Info("streaming", zap.String("slot", f.cfg.Source.Slot), zap.Int("indexes", len(f.plan.Indexes)))
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// backlogWait is how long the loop waits for capture's next batch while
// the server sends a backlog, to make the group larger; backlogLag is how
// long after its commit a transaction was sent for the server to be
// sending a backlog (both times the server's clock: no skew).
const (
	backlogWait = 20 * time.Millisecond
	backlogLag  = 100 * time.Millisecond
)

// sentLate reports whether the last transaction of the batch was sent
// backlogLag or more after its commit.
func sentLate(batch []*wal.Txn) bool {
	if len(batch) == 0 {
		return false
	}
	t := batch[len(batch)-1]
	return !t.CommitTime.IsZero() && !t.Sent.IsZero() && t.Sent.Sub(t.CommitTime) >= backlogLag
}

// loop takes committed transactions in commit order, coalescing those that
// are already waiting (flusso-pg is behind), and writes their documents.
func (f *Follower) loop(ctx context.Context, stop <-chan struct{}, txns <-chan []*wal.Txn) error {
	spill := max(f.batch*20, 10000)
	// Partitions or default columns changed while flusso-pg was stopped,
	// or during the backfill, are rebuilt first; then every few seconds
	// (partitions.go, schema.go).
	if err := f.checkCatalog(ctx); err != nil {
		return err
	}
	parts := time.NewTicker(f.partitionEvery())
	defer parts.Stop()
	for {
		var held []*wal.Txn
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-parts.C:
			if err := f.checkCatalog(ctx); err != nil {
				return err
			}
			continue
		case held = <-txns:
		}
		started := time.Now()
		// Take what is already waiting (flusso-pg is behind), never wait for more.
		rows := 0
		for _, t := range held {
			rows += t.Rows
		}
		behind := sentLate(held)
	gather:
		for rows < spill {
			var more []*wal.Txn
			select {
			case more = <-txns:
			default:
				if !behind {
					break gather
				}
				// The walsender is sending a backlog: the rest of it
				// comes within moments. Waiting for it makes groups of
				// up to spill rows, so that a key changed many times in
				// the backlog is built once, not once per batch read.
				select {
				case more = <-txns:
				case <-time.After(backlogWait):
					break gather
				case <-stop:
					break gather
				}
			}
			held = append(held, more...)
			behind = sentLate(more)
			for _, t := range more {
				rows += t.Rows
			}
		}
		err := f.process(ctx, held, spill, started)
		release(held)
		if err != nil {
			return err
		}
	}
}

// process resolves the group's changes to root keys, builds and writes the
// documents, flushes them and hands the group to the confirmer; its first
// read waits until the group's transactions are visible (visible.go). A
// transient error runs all of it again (after a backoff, on fresh
// connections): lines already written for part of the group are written
// again, which the fold absorbs; nothing is confirmed before the whole group
// is flushed. So does a commit not visible yet, after a shorter backoff.
func (f *Follower) process(ctx context.Context, txns []*wal.Txn, spill int, started time.Time) error {
	tr := &trace{taken: started}
	v := newVisibility(txns)
	return f.retry(ctx, stageBuild, func(ctx context.Context) error {
		for {
			err := f.attempt(ctx, txns, spill, v, tr)
			if !errors.Is(err, errInvisible) {
				return err
			}
			tr.retries++
			if err := v.backoff(ctx, f.log); err != nil {
				return err
			}
		}
	})
}

// attempt runs the group once, its reads through a new gate.
func (f *Follower) attempt(ctx context.Context, txns []*wal.Txn, spill int, v *visibility, tr *trace) error {
	f.em.reset()
	tr.attempt = time.Now()
	if tr.first.IsZero() {
		tr.first = tr.attempt
	}
	g := newGroup(newGate(f.pool, v))
	g.b = f.newBuilders(g.q)
	defer g.b.stop() // an attempt that failed: the builds still running
	// Its first read, behind the visibility check (partitions.go).
	if err := f.lookBeforeBuild(ctx, g.q, txns); err != nil {
		return err
	}
	for _, txn := range txns {
		if err := f.collect(ctx, g, txn, spill); err != nil {
			return f.replanned(ctx, err)
		}
	}
	tr.resolved = time.Now()
	return f.replanned(ctx, f.finish(ctx, g, tr))
}

// finish writes what the group still holds, flushes the output and hands the
// group to the confirmer.
func (f *Follower) finish(ctx context.Context, g *group, tr *trace) error {
	if err := f.emit(ctx, g); err != nil {
		return err
	}
	if err := g.b.flush(); err != nil {
		return err
	}
	tr.built = time.Now()
	s, err := f.prepareConfirm()
	if err != nil {
		return err
	}
	// The lines are written while the next group is built (writer.go); the
	// key map is durable up to the group's end before it is confirmed.
	end := g.last.EndLSN
	if err := f.em.flushThen(func(need pglogrepl.LSN) { f.confirmWhenSynced(s, need, end) }); err != nil {
		return err
	}
	tr.flushed = time.Now()
	tr.visible = g.q.took
	started := tr.taken
	f.metrics.Transactions.Add(float64(g.txns))
	f.metrics.BuildSeconds.Observe(time.Since(started).Seconds())
	if !g.last.CommitTime.IsZero() {
		f.metrics.LagSeconds.Set(time.Since(g.last.CommitTime).Seconds())
	}
	if ce := f.log.Check(zap.DebugLevel, "group written"); ce != nil {
		now := time.Now()
		ce.Write(append([]zap.Field{zap.Int("transactions", g.txns), zap.Stringer("end", g.last.EndLSN),
			zap.Duration("took", now.Sub(started)), zap.Duration("waited", started.Sub(g.last.CommitTime))},
			tr.fields(g.last, now)...)...)
	}
	f.lineLSN = max(f.lineLSN, g.last.CommitLSN)
	f.written(g, started)
	return nil
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
