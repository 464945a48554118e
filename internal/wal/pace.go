package wal

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Read coalescing.
//
// The walsender sends every pgoutput message as soon as it is decoded, one
// send() each: a single-row transaction is three messages (Begin, the
// change, Commit). A reader that is always waiting for the next byte wakes
// up for each of them, and on a local connection each wake-up costs both
// sides: the reader's read, its scheduler and poller, and in the sender's
// context the TCP work of waking the reader and taking its window update.
// At tens of thousands of transactions a second that is most of the CPU of
// both processes, and the walsender — one core, decoding WAL — is what
// limits the stream.
//
// So when the stream is busy, the reader pauses briefly each time it has
// drained the socket, and reads what piled up in one go: the same data in
// a few large reads instead of many small ones. It engages only after a
// run of drained reads in quick succession (a busy stream) and disengages
// as soon as a pause finds little data waiting, so a quiet database keeps
// its per-message latency and a busy one pays at most one pause (coalesce,
// 1 ms by default) per transaction.
//
// A plain sleep is not enough: Go's network poller watches the socket all
// the time, and each segment that arrives during the sleep wakes one of the
// process's threads (edge-triggered epoll), which costs about as much as
// the read it saved. On Linux TCP the pause is instead a wait for
// readability with SO_RCVLOWAT raised and a deadline at the end of the
// pause: the kernel wakes nobody until that much data is queued or the
// deadline passes. Elsewhere (Unix sockets, other systems) it is a sleep.
const (
	// engageWindow and engageReads: that many drained reads within the
	// window mean a busy stream (8 000 reads a second): pausing turns on.
	engageWindow = time.Millisecond
	engageReads  = 8
	// disengageBelow: a pause that gathered fewer bytes than this turns
	// pausing off (about one small transaction's messages).
	disengageBelow = 256
	// lowWater: during a pause, the reader is woken early once this many
	// bytes are queued.
	lowWater = 32 << 10
)

// pacedConn wraps the replication connection's socket, under TLS when
// there is TLS, so a drained read means the kernel's receive queue is empty.
// It does nothing until streaming(true); pause 0 turns coalescing off.
// Read is only ever called by one goroutine at a time (pgconn's reader);
// deadlines may be set from others.
type pacedConn struct {
	net.Conn
	raw   syscall.RawConn // the socket; nil when it has none (hold is then off)
	lowat bool            // raw is TCP on Linux: pause with SO_RCVLOWAT, not a sleep
	pause time.Duration
	on    atomic.Bool
	// hold, while streaming: true when the reader holds transactions to
	// hand out. Atomic: pgconn's background reader (started by a slow
	// write) may be inside Read when the session ends and clears it.
	hold  atomic.Pointer[func() bool]
	stats *paceStats
	now   func() time.Time    // time.Now; tests replace it
	sleep func(time.Duration) // time.Sleep; tests replace it

	mu       sync.Mutex
	deadline time.Time // the caller's read deadline
	pauseEnd time.Time // while a pause is on: its end, a deadline of our own

	// owned by the reader
	pacing   bool      // pausing after each drained read
	drained  bool      // the last read returned less than it could hold
	window   time.Time // while not pacing: when the current window began
	inWindow int       // drained reads in it
	gathered int       // bytes read since the last pause
}

// paceStats are read by tests and metrics.
type paceStats struct {
	reads  atomic.Int64 // reads of the socket while streaming
	pauses atomic.Int64 // pauses taken
}

func newPacedConn(nc net.Conn, pause time.Duration, stats *paceStats) *pacedConn {
	c := &pacedConn{Conn: nc, pause: pause, stats: stats, now: time.Now, sleep: time.Sleep}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			_, tcp := nc.(*net.TCPConn)
			c.lowat = tcp && lowWaterWorks
		}
	}
	return c
}

// pacerOf finds the pacedConn under a connection (through TLS).
func pacerOf(nc net.Conn) *pacedConn {
	for nc != nil {
		switch c := nc.(type) {
		case *pacedConn:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// errWouldBlock is what Read returns, as a timeout, instead of waiting for
// data while the reader holds transactions: the reader hands them out, then
// reads again. pgconn keeps a connection after a timeout, and resumes a
// message it had begun.
var errWouldBlock = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no data yet (transactions to hand out first)" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// canHold reports whether Read can tell, without waiting, that no data is
// there: only then may the reader hold transactions until the socket is
// drained and hand them out together.
func (c *pacedConn) canHold() bool { return c.raw != nil }

// streaming turns the stream mode on or off: coalescing (when pause is
// positive) and, with hold set, errWouldBlock instead of a wait while hold
// says transactions are waiting to be handed out.
func (c *pacedConn) streaming(on bool, hold func() bool) {
	if !on || !c.canHold() {
		hold = nil
	}
	if hold == nil {
		c.hold.Store(nil)
	} else {
		c.hold.Store(&hold)
	}
	c.on.Store(on)
}

// tryRead reads what is there without waiting: errWouldBlock when nothing is.
func (c *pacedConn) tryRead(p []byte) (int, error) {
	var n int
	var serr error
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			n, serr = syscall.Read(int(fd), p)
			if serr != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil: // the read deadline passed, or the connection closed
		return 0, err
	case serr == syscall.EAGAIN:
		return 0, errWouldBlock
	case serr != nil:
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: serr}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *pacedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return c.applyLocked()
}

func (c *pacedConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.applyLocked()
}

// applyLocked sets the socket's read deadline: the caller's, or the end of
// the pause when that comes first.
func (c *pacedConn) applyLocked() error {
	d := c.deadline
	if !c.pauseEnd.IsZero() && (d.IsZero() || c.pauseEnd.Before(d)) {
		d = c.pauseEnd
	}
	return c.Conn.SetReadDeadline(d)
}

func (c *pacedConn) Read(p []byte) (int, error) {
	if !c.on.Load() {
		c.pacing, c.drained, c.inWindow = false, false, 0
		return c.Conn.Read(p)
	}
	var n int
	var err error
	done := false
	if hold := c.hold.Load(); hold != nil && (*hold)() {
		// Transactions are waiting to be handed out: read only what is
		// there. The pause, if any, comes after they are handed out.
		if n, err = c.tryRead(p); err == errWouldBlock {
			return 0, err
		}
		done = true
	}
	if !done && c.pacing && c.drained && c.pause > 0 {
		c.stats.pauses.Add(1)
		c.gathered = 0
		if c.lowat {
			if err = c.pauseWait(); err != nil {
				// Cut short by the caller's deadline: what piled up is read
				// next, without a second pause.
				c.drained = false
				c.failed(err)
				return 0, err
			}
		} else {
			c.sleep(c.pause)
		}
	}
	if !done {
		n, err = c.Conn.Read(p)
	}
	c.stats.reads.Add(1)
	c.gathered += n
	if err != nil {
		c.failed(err)
		return n, err
	}
	c.drained = n < len(p)
	if !c.drained {
		return n, nil
	}
	if c.pacing {
		if c.gathered < disengageBelow {
			c.pacing, c.inWindow = false, 0
		}
		return n, nil
	}
	if now := c.now(); now.Sub(c.window) >= engageWindow {
		c.window, c.inWindow = now, 0
	}
	c.inWindow++
	if c.inWindow >= engageReads {
		c.pacing = true
	}
	return n, nil
}

// failed forgets the stream's state after a broken read. A timeout (the
// loop's status update is due, or a Confirm brought it forward) says
// nothing about the stream: the state stays.
func (c *pacedConn) failed(err error) {
	if !isTimeout(err) {
		c.pacing, c.drained, c.inWindow = false, false, 0
	}
}

// pauseWait waits, with the low-water mark raised, until lowWater bytes
// are queued or the pause ends; the read that follows takes what piled up.
// It returns the caller's own deadline error, if that came first.
func (c *pacedConn) pauseWait() error {
	if setLowWater(c.raw, lowWater) != nil {
		c.lowat = false // not supported here: sleep from now on
		c.sleep(c.pause)
		return nil
	}
	c.mu.Lock()
	c.pauseEnd = time.Now().Add(c.pause)
	c.applyLocked()
	c.mu.Unlock()

	// Data that came before the mark was raised may have left the socket
	// marked readable: wait again until the queue really holds lowWater
	// bytes (or the deadline ends the wait).
	err := c.raw.Read(func(fd uintptr) bool { return queued(fd) >= lowWater })

	setLowWater(c.raw, 1)
	c.mu.Lock()
	end, deadline := c.pauseEnd, c.deadline
	c.pauseEnd = time.Time{}
	c.applyLocked()
	c.mu.Unlock()
	if err != nil && (!isTimeout(err) || (!deadline.IsZero() && !deadline.After(end))) {
		return err // the caller's deadline, or the connection is gone
	}
	return nil
}
