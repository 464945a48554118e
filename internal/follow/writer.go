package follow

import (
	"context"
	"sync"

	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// writeAhead bounds the bytes handed to the lineWriter and not yet written:
// past it the pipeline waits for the output, as it would for a slow reader.
const writeAhead = 8 << 20

// keepBuffer is the largest buffer kept for reuse: a fan-out's chunk of
// large documents is not held on to once written.
const keepBuffer = 1 << 20

// lineWriter writes the groups' lines on a goroutine of its own, so that the
// next group is resolved and built while one is written to the output (and,
// with --output FILE, fsynced): the write stage of the pipeline. Lines go
// out in the order they are handed over; a group's confirmation is handed
// on (then) only once every line before it is written and synced. At most
// writeAhead bytes wait at once. The first write error is the error of every
// later call, and nothing handed over after it is confirmed. It is a sink:
// the emitter writes to it, from the loop's goroutine only.
type lineWriter struct {
	out sink

	mu     sync.Mutex
	cond   *sync.Cond
	jobs   []writeJob
	queued int   // bytes in jobs and being written
	err    error // the first error of the output (or the stop's)
	closed bool
	free   [][]byte      // buffers of jobs written, for reuse
	failed chan struct{} // closed at the output's first error
	done   chan struct{} // closed when run ends
}

type writeJob struct {
	lines []byte
	sync  bool
	then  func() // after the sync, when every write before it succeeded
}

// newLineWriter starts writing to out; it ends at close, or when ctx ends
// (then what is queued is not written, and Write and Sync fail).
func newLineWriter(ctx context.Context, out sink) *lineWriter {
	w := &lineWriter{out: out, failed: make(chan struct{}), done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	go w.run()
	go func() {
		select {
		case <-ctx.Done():
			w.fail(ctx.Err())
		case <-w.done:
		}
	}()
	return w
}

// Write queues a copy of lines.
func (w *lineWriter) Write(lines []byte) error {
	if len(lines) == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.err == nil && w.queued > 0 && w.queued+len(lines) > writeAhead {
		w.cond.Wait()
	}
	if w.err != nil {
		return w.err
	}
	var b []byte
	if n := len(w.free); n > 0 {
		b, w.free = w.free[n-1][:0], w.free[:n-1]
	}
	w.push(writeJob{lines: append(b, lines...)})
	return nil
}

// SyncThen queues a sync of the output; then runs (on the writer's
// goroutine) once it and every write before it succeeded.
func (w *lineWriter) SyncThen(then func()) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.push(writeJob{sync: true, then: then})
	return nil
}

// Sync waits until everything queued is written and synced.
func (w *lineWriter) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	synced := false
	w.push(writeJob{sync: true, then: func() {
		w.mu.Lock()
		synced = true
		w.mu.Unlock()
	}})
	for !synced && w.err == nil {
		w.cond.Wait()
	}
	return w.err
}

// push queues j; w.mu is held.
func (w *lineWriter) push(j writeJob) {
	w.jobs = append(w.jobs, j)
	w.queued += len(j.lines)
	w.cond.Broadcast()
}

// fail records the first error and wakes every waiter.
func (w *lineWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
}

// close ends the goroutine. What is queued and not being written is
// dropped: after a clean stream's end Sync left nothing queued, and after
// an error nothing queued may be confirmed anyway. It waits for a write in
// progress, but not after an error or the stop's end (a write may be stuck
// on a reader that stopped reading).
func (w *lineWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.jobs, w.queued = nil, 0
	w.cond.Broadcast()
	failed := w.err != nil
	w.mu.Unlock()
	if !failed {
		<-w.done
	}
}

// failure is the output's first error, once there is one: the pipeline
// stops on it even while no group is being written. It returns nil when
// ctx ends or the writer is closed without an error.
func (w *lineWriter) failure(ctx context.Context) error {
	select {
	case <-w.failed:
	case <-w.done:
	case <-ctx.Done():
	}
	select {
	case <-w.failed:
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.err
	default:
		return nil
	}
}

func (w *lineWriter) run() {
	defer close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.jobs) == 0 && !w.closed && w.err == nil {
			w.cond.Wait()
		}
		if w.err != nil || len(w.jobs) == 0 {
			return
		}
		j := w.jobs[0]
		w.jobs[0] = writeJob{}
		w.jobs = w.jobs[1:]
		w.mu.Unlock()
		err := w.write(j)
		if err == nil && j.then != nil {
			j.then()
		}
		w.mu.Lock()
		w.queued = max(0, w.queued-len(j.lines)) // close may have emptied the queue
		if j.lines != nil && cap(j.lines) <= keepBuffer && len(w.free) < 4 {
			w.free = append(w.free, j.lines)
		}
		if err != nil && w.err == nil {
			w.err = err
			close(w.failed)
		}
		w.cond.Broadcast()
	}
}

// write does one job on the output; its errors are permanent, as the
// emitter's own (writing again would not help).
func (w *lineWriter) write(j writeJob) error {
	if len(j.lines) > 0 {
		if err := w.out.Write(j.lines); err != nil {
			return fault.MarkPermanent(err)
		}
	}
	if j.sync {
		if err := w.out.Sync(); err != nil {
			return fault.MarkPermanent(err)
		}
	}
	return nil
}
