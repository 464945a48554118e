package wal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Why the loop wakes.
//
// One goroutine owns the replication connection: it reads messages and it
// writes the status updates, since pgconn may not be used from two at once.
// That read blocks, so everything else that needs the loop's attention
// reaches it through the same door: the read returns a timeout error, and
// session.woke looks at what is due. There are three reasons:
//
//	   reason                    how it ends the read            what woke does
//	   ────────────────────────  ──────────────────────────────  ────────────────────────────
//	1. the socket is drained     pacedConn returns errWouldBlock  flush: hand the held
//	   while transactions are    at once instead of waiting       transactions to the consumer
//	   held
//	2. a status update is due    the read deadline (s.due)        status: report the watermark
//	   (StatusInterval, or       passes; kick pulls it forward    to the server
//	   sooner after a Confirm)
//	3. ctx ended                 the watcher goroutine sets the   finish: a last status
//	                             deadline in the past             update, then return
//
//	all three:  conn.ReceiveMessage ──► a timeout error ──► session.woke
//
// A wake-up may have more than one reason; woke looks at them in the order
// drained, stop, status.
// Any other timeout (a deadline not ours: pgconn's own) puts ours back.

// woke handles a timeout of the read: see the diagram above.
func (s *session) woke(ctx context.Context, err error) error {
	if ferr := s.flush(ctx); ferr != nil { // 1. drained (a no-op when nothing is held)
		if ctx.Err() != nil {
			s.finish()
		}
		return ferr
	}
	if ctx.Err() != nil { // 3. stop
		s.finish()
		return ctx.Err()
	}
	if due := time.Unix(0, s.due.Load()); time.Now().Add(time.Millisecond).After(due) { // 2. status
		return s.status(false)
	}
	if !errors.Is(err, errWouldBlock) {
		s.dl.set(time.Unix(0, s.due.Load())) // a deadline that is not ours: put ours back
	}
	return nil
}

// kickGap is the shortest time between two status updates that Confirm
// brings forward.
const kickGap = 100 * time.Millisecond

// kick brings the next status update forward after a Confirm: it is sent
// at most kickGap after the previous one instead of a whole StatusInterval
// later, so the slot (and pg_replication_slots) follows the output closely.
// It runs on the consumer's goroutine and only moves the read deadline;
// the loop goroutine does the rest (reason 2 above).
func (s *session) kick() {
	at := time.Unix(0, s.last.Load()).Add(kickGap)
	if now := time.Now(); at.Before(now) {
		at = now
	}
	for {
		due := s.due.Load()
		if at.UnixNano() >= due {
			return // as early already
		}
		if s.due.CompareAndSwap(due, at.UnixNano()) {
			break
		}
	}
	s.dl.earlier(at)
}

// status sends a standby status update with the watermark as written,
// flushed and applied — all three set, never 0 — and schedules the next.
func (s *session) status(reply bool) error {
	lsn := s.wm.position()
	s.next = time.Now().Add(s.cfg.StatusInterval)
	s.due.Store(s.next.UnixNano())
	s.dl.set(s.next)
	s.last.Store(time.Now().UnixNano())
	if lsn == 0 {
		return nil
	}
	s.conn.Conn().SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn,
		ClientTime: time.Now(), ReplyRequested: reply,
	})
	if err != nil {
		return fmt.Errorf("send status update: %w", err)
	}
	s.wm.raise(&s.wm.reported, lsn)
	return nil
}

// finish sends a last status update as the stream stops, and waits briefly
// for the server's answer so the update is known to be processed.
func (s *session) finish() {
	nc := s.conn.Conn()
	s.watch.Wait() // ctx has ended: the watcher is done with the deadline
	s.dl.stopped()
	if err := s.status(true); err != nil {
		return
	}
	nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		raw, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			return
		}
		m, ok := raw.(*pgproto3.CopyData)
		if !ok || (len(m.Data) > 0 && m.Data[0] == pglogrepl.PrimaryKeepaliveMessageByteID) {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return pgconn.Timeout(err) || (errors.As(err, &ne) && ne.Timeout())
}

// deadline sets the read deadline of the connection from Run's goroutine,
// and lets a watcher pull it into the past to end a blocked read.
type deadline struct {
	mu        sync.Mutex
	nc        net.Conn
	cancelled bool
	at        time.Time // the deadline set
}

// reset points the deadline at a new session's connection. It locks like
// the rest: a Confirm of the previous session may still be calling earlier
// (kick) from the consumer's goroutine.
func (d *deadline) reset(nc net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nc, d.cancelled, d.at = nc, false, time.Time{}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nc != nil && !d.cancelled {
		d.at = t
		d.nc.SetReadDeadline(t)
	}
}

// earlier moves the deadline to t only when t comes first: Confirm calls it
// for every transaction, and most calls would set what is already set.
func (d *deadline) earlier(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nc != nil && !d.cancelled && t.Before(d.at) {
		d.at = t
		d.nc.SetReadDeadline(t)
	}
}

func (d *deadline) cancel() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cancelled = true
	if d.nc != nil {
		d.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// stopped hands the deadline back to the caller (for the last exchange).
func (d *deadline) stopped() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cancelled = true
}
