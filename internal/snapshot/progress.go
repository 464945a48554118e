package snapshot

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/term"
)

const (
	drawEvery = 200 * time.Millisecond // at most five redraws a second
	logEvery  = 10 * time.Second       // without a terminal: a log line instead
	barWidth  = 30
)

// progress shows how far each index got: bars on a terminal, log lines
// otherwise, and the OnProgress callback for metrics. It never writes to
// stdout unless told to (Config.Progress).
type progress struct {
	tty io.Writer // the terminal to draw on; nil: log lines
	on  func(index string, done, estimate int64)
	log *zap.Logger

	mu    sync.Mutex
	bars  []*bar
	drawn int // lines drawn last time, to move back over them
}

// bar is one index's progress.
type bar struct {
	name     string
	estimate int64 // pg_class.reltuples at the start
	base     int64 // done before this run (a resume)
	start    time.Time
	done     atomic.Int64
	finished atomic.Int64 // unix nanoseconds when done; 0 while running
}

func (b *bar) add(n int64) { b.done.Add(n) }

func (b *bar) finish() { b.finished.CompareAndSwap(0, time.Now().UnixNano()) }

// newProgress draws on w when it is a terminal.
func newProgress(w io.Writer, on func(string, int64, int64), log *zap.Logger) *progress {
	p := &progress{on: on, log: log}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = w
	}
	return p
}

func (p *progress) add(name string, estimate, done int64) *bar {
	b := &bar{name: name, estimate: estimate, base: done, start: time.Now()}
	b.done.Store(done)
	p.mu.Lock()
	p.bars = append(p.bars, b)
	p.mu.Unlock()
	return b
}

// run redraws until stop is closed or ctx ends.
func (p *progress) run(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(drawEvery)
	defer t.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.report()
			if p.tty != nil {
				p.draw()
			} else if now.Sub(lastLog) >= logEvery {
				lastLog = now
				p.logLines(false)
			}
		}
	}
}

// final reports and draws one last time.
func (p *progress) final() {
	p.report()
	if p.tty != nil {
		p.draw()
	} else {
		p.logLines(true)
	}
}

func (p *progress) report() {
	if p.on == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.bars {
		done := b.done.Load()
		p.on(b.name, done, max(b.estimate, done))
	}
}

// stats gives a bar's figures: documents done, the estimate (never below
// done), the rate of this run and the time left.
func (b *bar) stats(now time.Time) (done, estimate int64, rate float64, eta time.Duration, finished bool) {
	done = b.done.Load()
	estimate = max(b.estimate, done)
	end := now
	if f := b.finished.Load(); f != 0 {
		// Done: the estimate was only an estimate.
		end, finished, estimate = time.Unix(0, f), true, done
	}
	if secs := end.Sub(b.start).Seconds(); secs > 0 {
		rate = float64(done-b.base) / secs
	}
	if rate > 0 && !finished {
		eta = time.Duration(float64(estimate-done) / rate * float64(time.Second))
	}
	return
}

func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	width := 0
	for _, b := range p.bars {
		width = max(width, len(b.name))
	}
	var s strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&s, "\x1b[%dA", p.drawn)
	}
	for _, b := range p.bars {
		done, estimate, rate, eta, finished := b.stats(now)
		frac := 1.0
		if estimate > 0 {
			frac = float64(done) / float64(estimate)
		}
		if !finished {
			frac = min(frac, 0.999)
		}
		fill := int(frac * barWidth)
		fmt.Fprintf(&s, "\r\x1b[2K%-*s [%s%s] %5.1f%%  %s/%s  %s docs/s", width, b.name,
			strings.Repeat("#", fill), strings.Repeat("-", barWidth-fill), frac*100, Count(done), Count(estimate), Count(int64(rate)))
		if finished {
			fmt.Fprintf(&s, "  done in %s\n", time.Unix(0, b.finished.Load()).Sub(b.start).Round(time.Second))
		} else {
			fmt.Fprintf(&s, "  ETA %s\n", eta.Round(time.Second))
		}
	}
	p.drawn = len(p.bars)
	io.WriteString(p.tty, s.String())
}

// logLines writes one log line per index still running (or, at the end,
// per index).
func (p *progress) logLines(all bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, b := range p.bars {
		done, estimate, rate, eta, finished := b.stats(now)
		if finished && !all {
			continue
		}
		p.log.Info("backfill progress", zap.String("index", b.name), zap.Int64("documents", done),
			zap.Int64("estimate", estimate), zap.Int64("docs_per_s", int64(rate)),
			zap.Duration("eta", eta.Round(time.Second)), zap.Bool("done", finished))
	}
}

// Count formats n with thousands separators: 1,234,567.
func Count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
