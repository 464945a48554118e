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

// writeChunks builds the chunks (keys of consecutive transactions with no
// event between them) with up to f.workers document queries at once, each
// on its own pool connection, and writes their lines strictly in chunk
// order: the output is byte for byte that of one chunk at a time. A chunk
// is started only once an earlier one is written, so at most f.workers
// chunks' documents (f.workers × f.batch) are in memory, built or being
// built. The first error cancels the other builds and is returned; the
// group runs again as a whole (process).
func (f *Follower) writeChunks(ctx context.Context, q build.Querier, chunks [][]*entry) error {
	w := max(1, min(f.workers, len(chunks)))
	if w == 1 {
		for _, c := range chunks {
			b, err := f.buildChunk(ctx, q, c)
			if err != nil {
				return err
			}
			if err := f.writeBuilt(b); err != nil {
				return err
			}
		}
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	results := make([]chan *builtChunk, len(chunks))
	start := func(i int) {
		results[i] = make(chan *builtChunk, 1)
		g.Go(func() error {
			b, err := f.buildChunk(gctx, q, chunks[i])
			if err != nil {
				return err
			}
			results[i] <- b
			return nil
		})
	}
	for i := range w {
		start(i)
	}
	// failed stops the builds still running and returns the first error.
	failed := func(err error) error {
		cancel()
		if gerr := g.Wait(); gerr != nil && err == nil {
			err = gerr
		}
		if err == nil {
			err = parent.Err()
		}
		return err
	}
	for i := range chunks {
		var b *builtChunk
		select {
		case b = <-results[i]:
		case <-gctx.Done():
			return failed(nil)
		}
		if err := f.writeBuilt(b); err != nil {
			return failed(err)
		}
		results[i] = nil
		if i+w < len(chunks) {
			start(i + w)
		}
	}
	return g.Wait()
}

// buildChunk builds the documents of one chunk of keys, one query per
// index, into lines each with the LSN of its key's newest transaction. It
// may run on several goroutines at once: it touches only its chunk, the
// pool and the metrics.
func (f *Follower) buildChunk(ctx context.Context, q build.Querier, chunk []*entry) (*builtChunk, error) {
	byIndex := map[*build.Index][]*entry{}
	var order []*build.Index
	for _, e := range chunk {
		if _, ok := byIndex[e.ix]; !ok {
			order = append(order, e.ix)
		}
		byIndex[e.ix] = append(byIndex[e.ix], e)
	}
	b := &builtChunk{}
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
			return nil, err // build names the index
		}
	}
	return b, nil
}

// writeBuilt writes a built chunk through the emitter, as one chunk.
func (f *Follower) writeBuilt(b *builtChunk) error {
	f.em.begin()
	f.em.put(b.buf, b.lines)
	return f.em.end()
}
