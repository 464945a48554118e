package follow

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

// builtChunk is one chunk's lines, formatted by the goroutine that built
// them and written by emit's: the same bytes, in the same order, as the
// emitter would have made of them.
type builtChunk struct {
	buf   []byte
	lines []line
}

// chunkJob is a chunk handed to the builders, and where its lines come back.
type chunkJob struct {
	keys []*entry
	done chan *builtChunk
}

// builders build a group's chunks (keys of consecutive transactions with no
// event between them) on up to f.workers pool connections at once and write
// their lines strictly in the order the chunks were handed over: the output
// is byte for byte that of one chunk at a time. A builder takes the next
// chunk as soon as it has finished one, whatever is still being written, so
// no connection waits on another's chunk; and the chunks of a fan-out's
// successive spills (resolve.go) follow each other without a pause. What is
// in flight is bounded: at most 2 × f.workers chunks (f.batch keys each) are
// handed over and not yet written, built or being built; past that, add
// writes the oldest first. The first error stops the builds still running
// and is returned by add, flush or stop; the group then runs again as a
// whole (process). They are made per attempt and used by its goroutine only
// (the loop's): writing goes through f.em.
type builders struct {
	f       *Follower
	q       build.Querier
	cancel  context.CancelFunc
	g       *errgroup.Group
	gctx    context.Context
	jobs    chan *chunkJob
	pending []*chunkJob // handed over, not yet written, in order
	window  int
	spare   chan *builtChunk // written chunks' buffers, for the next builds
}

// keptChunk is the largest buffer kept for another chunk once written.
const keptChunk = 4 << 20

// builders for a group reading through q; started at the first chunk.
func (f *Follower) newBuilders(q build.Querier) *builders {
	w := max(1, f.workers)
	return &builders{f: f, q: q, window: 2 * w, spare: make(chan *builtChunk, w)}
}

func (b *builders) start(ctx context.Context) {
	ctx, b.cancel = context.WithCancel(ctx)
	b.g, b.gctx = errgroup.WithContext(ctx)
	b.jobs = make(chan *chunkJob, b.window)
	for range max(1, b.f.workers) {
		b.g.Go(func() error {
			for j := range b.jobs {
				var c *builtChunk
				select {
				case c = <-b.spare:
				default:
					c = &builtChunk{}
				}
				err := b.f.buildChunk(b.gctx, b.q, j.keys, c)
				if err != nil {
					return err
				}
				j.done <- c
			}
			return nil
		})
	}
}

// add hands a chunk to the builders, first writing the chunks already
// built at the head of the order (and, when the window is full, waiting
// for the oldest).
func (b *builders) add(ctx context.Context, keys []*entry) error {
	if b.jobs == nil {
		b.start(ctx)
	}
	for len(b.pending) > 0 {
		full := len(b.pending) >= b.window
		ok, err := b.writeHead(full)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
	}
	j := &chunkJob{keys: keys, done: make(chan *builtChunk, 1)}
	select {
	case b.jobs <- j:
	case <-b.gctx.Done():
		return b.failed(nil)
	}
	b.pending = append(b.pending, j)
	return nil
}

// writeHead writes the oldest chunk handed over when it is built; with
// wait, it waits for it. It reports whether it wrote one.
func (b *builders) writeHead(wait bool) (bool, error) {
	j := b.pending[0]
	var c *builtChunk
	if wait {
		select {
		case c = <-j.done:
		case <-b.gctx.Done():
			return false, b.failed(nil)
		}
	} else {
		select {
		case c = <-j.done:
		default:
			return false, nil
		}
	}
	b.pending[0] = nil
	b.pending = b.pending[1:]
	if err := b.f.writeBuilt(c); err != nil {
		return false, b.failed(err)
	}
	if cap(c.buf) <= keptChunk {
		c.buf, c.lines = c.buf[:0], c.lines[:0] // the emitter's, after writeBuilt
		select {
		case b.spare <- c:
		default:
		}
	}
	return true, nil
}

// flush writes every chunk handed over, in order: afterwards the output
// holds all of them (an event, or the group's end, may follow).
func (b *builders) flush() error {
	for len(b.pending) > 0 {
		if _, err := b.writeHead(true); err != nil {
			return err
		}
	}
	return nil
}

// failed stops the builds still running and returns the first error: err,
// else a builder's, else the context's.
func (b *builders) failed(err error) error {
	gerr := b.stop()
	if err == nil {
		err = gerr
	}
	if err == nil {
		err = context.Canceled
	}
	return err
}

// stop ends the builders (what is not written is dropped) and returns the
// first builder's error. It may be called more than once.
func (b *builders) stop() error {
	if b.jobs == nil {
		return nil
	}
	b.cancel()
	close(b.jobs)
	err := b.g.Wait()
	b.jobs = nil
	b.pending = nil
	if err == context.Canceled {
		err = nil
	}
	return err
}

// buildChunk builds the documents of one chunk of keys, one query per
// index, into b's lines (empty, its buffers reused), each with the LSN of
// its key's newest transaction. It may run on several goroutines at once:
// it touches only its chunk, b, the pool and the metrics.
func (f *Follower) buildChunk(ctx context.Context, q build.Querier, chunk []*entry, b *builtChunk) error {
	byIndex := map[*build.Index][]*entry{}
	var order []*build.Index
	for _, e := range chunk {
		if _, ok := byIndex[e.ix]; !ok {
			order = append(order, e.ix)
		}
		byIndex[e.ix] = append(byIndex[e.ix], e)
	}
	for _, ix := range order {
		es := byIndex[ix]
		keys := make([]build.Key, len(es))
		for i, e := range es {
			keys[i] = e.key
		}
		name := ix.Name()
		err := ix.Build(ctx, q, keys, func(d build.Doc) error {
			lsn := es[d.Input].lsn
			start := len(b.buf)
			if d.Doc == nil {
				b.buf = output.AppendDelete(b.buf, name, d.Key, d.ID, lsn)
				f.metrics.Documents.WithLabelValues(name, output.OpDelete).Inc()
			} else {
				b.buf = output.AppendUpsert(b.buf, name, d.Key, d.ID, lsn, d.Doc)
				f.metrics.Documents.WithLabelValues(name, output.OpUpsert).Inc()
			}
			b.lines = append(b.lines, line{lsn: lsn, start: start, end: len(b.buf)})
			return nil
		})
		if err != nil {
			return err // build names the index
		}
	}
	return nil
}

// writeBuilt writes a built chunk through the emitter, as one chunk; b
// gets the emitter's emptied buffers in exchange for its own.
func (f *Follower) writeBuilt(b *builtChunk) error {
	f.em.begin()
	f.em.take(&b.buf, &b.lines)
	return f.em.end()
}
