package follow

import (
	"sync"

	"github.com/jackc/pglogrepl"
)

// confirmer decides how far the slot may be confirmed. A group of
// transactions becomes confirmable when its lines are flushed and, when the
// reader acknowledges (--ack-fd / --ack-file), once the reader has written
// back an LSN at or past the newest line LSN of the group. A group that wrote
// no line needs no acknowledgement of its own: it is confirmed as soon as the
// groups before it are.
type confirmer struct {
	mu      sync.Mutex
	acks    bool
	acked   pglogrepl.LSN
	queue   []pending
	confirm func(pglogrepl.LSN)
}

type pending struct {
	need pglogrepl.LSN // newest "lsn" written on a line of the group; 0: no line
	end  pglogrepl.LSN // the last transaction's end LSN: what the slot may confirm
}

func newConfirmer(acks bool, confirm func(pglogrepl.LSN)) *confirmer {
	return &confirmer{acks: acks, confirm: confirm}
}

// flushed records a group whose lines are flushed to the output.
func (c *confirmer) flushed(need, end pglogrepl.LSN) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, pending{need: need, end: end})
	c.advance()
}

// ack records an LSN the reader wrote back.
func (c *confirmer) ack(lsn pglogrepl.LSN) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if lsn > c.acked {
		c.acked = lsn
	}
	c.advance()
}

// ackedLSN is the newest LSN acknowledged (0 without acknowledgements).
func (c *confirmer) ackedLSN() pglogrepl.LSN {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// waiting reports whether flushed groups still wait for an acknowledgement.
func (c *confirmer) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func (c *confirmer) advance() {
	var last pglogrepl.LSN
	n := 0
	for _, p := range c.queue {
		if c.acks && p.need != 0 && p.need > c.acked {
			break
		}
		last = p.end
		n++
	}
	if n == 0 {
		return
	}
	c.queue = append(c.queue[:0], c.queue[n:]...)
	c.confirm(last)
}
