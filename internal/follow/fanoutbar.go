package follow

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/flusso-pg/flusso-pg/internal/snapshot"
)

// fanoutBar draws a large fan-out's progress on a terminal (stderr, when it
// is one), like the backfill's bars: the documents written so far, the
// rate and the time taken, redrawn at most five times a second as chunks
// are written, and a last line once the group is flushed. How many
// documents a fan-out reaches is not known before its resolution ends (the
// keys are streamed), so the bar counts instead of filling. Without a
// terminal the log lines of resolve.go say the same.
type fanoutBar struct {
	tty io.Writer // nil: draw nothing

	xid   uint32
	start time.Time
	drawn time.Time // last redraw
	on    bool      // a fan-out is being drawn
}

const fanoutDrawEvery = 200 * time.Millisecond

// newFanoutBar draws on w when it is a terminal.
func newFanoutBar(w io.Writer) *fanoutBar {
	b := &fanoutBar{}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b.tty = w
	}
	return b
}

// begin starts drawing the fan-out of transaction xid.
func (b *fanoutBar) begin(xid uint32, now time.Time) {
	if b == nil || b.tty == nil {
		return
	}
	b.xid, b.start, b.on = xid, now, true
	b.drawn = time.Time{}
}

// update redraws with done documents written, unless it drew a moment ago.
func (b *fanoutBar) update(done int, now time.Time) {
	if b == nil || !b.on || now.Sub(b.drawn) < fanoutDrawEvery {
		return
	}
	b.drawn = now
	b.draw(done, now, false)
}

// end draws the last line: the fan-out is written and flushed.
func (b *fanoutBar) end(done int, now time.Time) {
	if b == nil || !b.on {
		return
	}
	b.draw(done, now, true)
	b.on = false
}

func (b *fanoutBar) draw(done int, now time.Time, finished bool) {
	took := now.Sub(b.start)
	rate := 0.0
	if s := took.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	state := "writing"
	if finished {
		state = "written"
	}
	// \r and erase-line: the line is drawn over itself until the end.
	line := fmt.Sprintf("\r\x1b[2Kfan-out of transaction %d: %s documents %s, %s docs/s, %s",
		b.xid, snapshot.Count(int64(done)), state, snapshot.Count(int64(rate)), took.Round(100*time.Millisecond))
	if finished {
		line += "\n"
	}
	io.WriteString(b.tty, line)
}
