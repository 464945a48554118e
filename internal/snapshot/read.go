package snapshot

import (
	"context"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

// read runs one worker per session over the tasks, with the checkpoints
// and the progress beside them, and saves the progress of the lines
// written so far, whatever happened: they are flushed first, so a resume
// never skips a line that was not written.
func (b *Backfill) read(ctx context.Context, sessions []*session, v view, tasks []task) error {
	queue := make(chan task, len(tasks))
	for _, t := range tasks {
		queue <- t
	}
	close(queue)
	g, gctx := errgroup.WithContext(ctx)
	ws, wctx := errgroup.WithContext(gctx)
	for _, s := range sessions {
		ws.Go(func() error { return b.work(wctx, s, v, queue) })
	}
	stop := make(chan struct{})
	g.Go(func() error {
		defer close(stop)
		return ws.Wait()
	})
	g.Go(func() error { return b.checkpointLoop(gctx, stop) })
	g.Go(func() error {
		b.prog.run(gctx, stop)
		return nil
	})
	err := g.Wait()
	if serr := b.checkpoint(); serr != nil && err == nil {
		err = serr
	}
	b.prog.final()
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// work reads tasks until none is left, in the worker's snapshot transaction.
func (b *Backfill) work(ctx context.Context, s *session, v view, queue <-chan task) error {
	buf := make([]byte, 0, 256<<10)
	for t := range queue {
		// A transient error (the worker's connection died) reads the range
		// on from its last written batch, on a new connection (reopen).
		err := fault.Retry(ctx, b.cfg.Health, stage, func(ctx context.Context) error {
			if s.tx == nil {
				var err error
				if v, err = b.reopen(ctx, s, v); err != nil {
					return err
				}
			}
			var err error
			buf, err = b.readRange(ctx, s.tx, t, buf)
			if err != nil && fault.Classify(err) != fault.Permanent {
				s.end(ctx)
			}
			return err
		})
		if err != nil {
			return err
		}
		if cap(buf) > 8<<20 {
			buf = make([]byte, 0, 256<<10) // a batch of huge documents: give the memory back
		}
	}
	return nil
}

// readRange reads t's range from where it got, in batches: only one batch's
// lines are held in memory.
func (b *Backfill) readRange(ctx context.Context, tx pgx.Tx, t task, buf []byte) ([]byte, error) {
	name := t.ix.Name()
	after := t.r.resumeAfter()
	for {
		if err := ctx.Err(); err != nil {
			return buf, err
		}
		buf = buf[:0]
		last, n, err := t.ix.Scan(ctx, tx, after, t.r.UpTo, b.cfg.BatchSize, func(d build.Doc) error {
			if d.Doc == nil {
				return nil // a scan only returns rows that match the root's where
			}
			buf = output.AppendUpsert(buf, name, d.Key, d.ID, t.lsn, d.Doc)
			return nil
		})
		if err != nil {
			return buf, err
		}
		// One batch is one Write: never split by another worker's lines.
		done := n < b.cfg.BatchSize
		finished, err := b.ckpt.wrote(b.w, buf, t.lsn, t.ip, t.r, last, int64(n), done)
		if err != nil {
			return buf, fault.MarkPermanent(err)
		}
		if n > 0 && b.cfg.OnLines != nil {
			b.cfg.OnLines(name, n)
		}
		t.bar.add(int64(n))
		if done {
			if finished {
				t.bar.finish()
				return buf, b.rebuildDone(t.ix, t.ip)
			}
			return buf, nil
		}
		after = last
	}
}
