package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// errStreamEnded: the server ended the copy stream (it is shutting down).
var errStreamEnded = errors.New("the server ended the replication stream")

// errServerStopping: the server is shutting down and waits for us to
// confirm positions we cannot confirm yet.
var errServerStopping = errors.New("the server is shutting down and waits for confirmations still pending: disconnecting so it can stop; unconfirmed transactions will be delivered again")

// Confirm reports that every transaction up to lsn (a Txn.EndLSN) is
// durably written. The slot's confirmed position follows on the next status
// update; it never moves past lsn while a transaction handed out is
// unconfirmed.
func (c *Capture) Confirm(lsn pglogrepl.LSN) {
	c.wm.confirm(lsn)
	if k := c.kick.Load(); k != nil {
		(*k)()
	}
}

// Reported is the last position sent to the server as flushed.
func (c *Capture) Reported() pglogrepl.LSN { return pglogrepl.LSN(c.wm.reported.Load()) }

// Reconnects counts the reconnections Run made.
func (c *Capture) Reconnects() int64 { return c.reconnects.Load() }

// Spills counts the transactions whose rows went to a temporary file.
func (c *Capture) Spills() int64 { return c.spills.Load() }

// SocketReads counts the reads of the replication socket while streaming.
func (c *Capture) SocketReads() int64 { return c.pace.reads.Load() }

// ReadPauses counts the coalescing pauses taken (see pace.go).
func (c *Capture) ReadPauses() int64 { return c.pace.pauses.Load() }

// Run streams committed transactions, in commit order, into out until ctx
// ends (nil error) or a fatal error. It waits for ReleaseSnapshot first.
// Transactions come in batches: those read from the socket together, at
// most maxBatch or a memory budget's worth, so a busy stream costs one
// hand-off per read rather than per transaction; a lone commit comes alone
// and at once. Network errors and server restarts are retried with
// backoff, resuming from the confirmed position: transactions handed out
// but not confirmed are delivered again. The receiver owns each Txn and
// must Release it.
func (c *Capture) Run(ctx context.Context, out chan<- []*Txn) error {
	select {
	case <-c.released:
	case <-ctx.Done():
		return nil
	}
	// A dropped publication ends the stream with an error on most servers,
	// but PG18 skips it and goes on: a watcher checks for it now and then.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wg.Go(func() { c.watchPublication(ctx, cancel) })
	stopped := func() error {
		if err := context.Cause(ctx); errors.Is(err, ErrPublicationMissing) {
			return err
		}
		return nil
	}
	c.mu.Lock()
	conn, start, closed := c.conn, c.start, c.closed
	c.conn = nil
	c.mu.Unlock()
	if start == nil {
		return errors.New("capture: Run before Open")
	}
	if closed {
		return errors.New("capture: closed")
	}
	dir := c.cfg.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	s := &session{
		c:   c,
		out: out,
		dec: newDecoder(c.cfg.Tables),
		asm: newAssembler(c.cfg.MemoryBudget, dir, func() { c.spills.Add(1) }),
	}
	defer s.asm.reset()
	delay := backoff{min: 200 * time.Millisecond, max: 30 * time.Second}
	for {
		if conn == nil {
			var err error
			conn, err = c.reconnect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return stopped()
				}
				if fatal(err) {
					return err
				}
				c.log.Warn("reconnect failed; retrying", zap.Error(err))
				if !delay.sleep(ctx) {
					return stopped()
				}
				continue
			}
			c.reconnects.Add(1)
			if c.cfg.OnReconnect != nil {
				c.cfg.OnReconnect()
			}
		}
		received, err := s.run(ctx, conn)
		closeConn(conn)
		conn = nil
		s.asm.reset()
		if ctx.Err() != nil {
			return stopped()
		}
		if fatal(err) {
			return err
		}
		if received {
			delay.reset()
		}
		c.log.Warn("replication stream interrupted; reconnecting", zap.Error(err))
		if !delay.sleep(ctx) {
			return stopped()
		}
	}
}

// watchPublication checks every few status intervals, over an ordinary
// connection, that the publication still exists; when it does not, it
// cancels ctx with ErrPublicationMissing.
func (c *Capture) watchPublication(ctx context.Context, cancel context.CancelCauseFunc) {
	every := min(max(5*c.cfg.StatusInterval, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	sql := "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = " + change.QuoteLiteral(c.cfg.Publication)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn == nil {
			var err error
			if conn, err = pgconn.Connect(ctx, c.cfg.DSN); err != nil {
				conn = nil
				continue // the stream's own reconnects report connection trouble
			}
		}
		qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
		rows, err := simpleQuery(qctx, conn, sql)
		qcancel()
		if err != nil {
			closeConn(conn)
			conn = nil
			continue
		}
		if len(rows) == 0 {
			cancel(fmt.Errorf("publication %s: %w", c.cfg.Publication, ErrPublicationMissing))
			return
		}
	}
}

// reconnect opens a new replication connection and checks that the server,
// publication and slot are still the ones we follow.
func (c *Capture) reconnect(ctx context.Context) (*pgconn.PgConn, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := c.prepare(ctx, conn, false); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

func closeConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn.Close(ctx)
}

// fatal reports whether err cannot be fixed by reconnecting.
func fatal(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrSlotMissing), errors.Is(err, ErrSlotLost), errors.Is(err, ErrServerChanged),
		errors.Is(err, ErrPublicationMissing), errors.Is(err, ErrSlotUnknown), errors.Is(err, ErrDecode),
		errors.Is(err, ErrColumnMissing):
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"), // insufficient resources (too many connections)
			strings.HasPrefix(pgErr.Code, "57"), // shutdown, starting up, cancelled
			pgErr.Code == "55006":               // the slot is still active for the last connection
			return false
		}
		return true
	}
	return false // network errors, EOF, connection refused
}

// session is one Run: the decoder and assembler survive reconnects (both are
// reset), and hold the transactions being built.
type session struct {
	c   *Capture
	out chan<- []*Txn
	dec *decoder
	asm *assembler

	conn  *pgconn.PgConn
	pings []time.Time  // recent reply-requested keepalives while something was pending
	next  time.Time    // when the next status update is due
	due   atomic.Int64 // unix nanoseconds: next, or earlier after a Confirm (kick)
	dl    deadline
	last  atomic.Int64   // unix nanoseconds of the last status update
	watch sync.WaitGroup // the goroutine that cancels reads when ctx ends

	// committed transactions not yet handed out (see handle)
	pending    []*Txn
	pendingMem int64
	held       atomic.Bool // len(pending) > 0, for pacedConn's goroutine
	canHold    bool        // the connection can say it is drained without waiting
}

// pluginArgs are the pgoutput options for a server major version: protocol
// 2 with streaming from PG14, so a huge transaction arrives in blocks as it
// is decoded instead of after the server spilled all of it. Never two_phase.
func pluginArgs(version int, publication string) []string {
	pub := `"` + strings.ReplaceAll(publication, `"`, `""`) + `"`
	args := []string{"publication_names '" + strings.ReplaceAll(pub, "'", "''") + "'"}
	if version >= 14 {
		return append([]string{"proto_version '2'", "streaming 'on'"}, args...)
	}
	return append([]string{"proto_version '1'"}, args...)
}

// run starts replication on conn and reads it until an error or ctx ends.
// received reports whether any data arrived (the backoff then resets).
func (s *session) run(ctx context.Context, conn *pgconn.PgConn) (received bool, err error) {
	c := s.c
	s.conn = conn
	s.dec.reset()
	s.asm.reset()
	from := s.c.wm.position()
	err = pglogrepl.StartReplication(ctx, conn, c.cfg.Slot, from,
		pglogrepl.StartReplicationOptions{PluginArgs: pluginArgs(serverMajor(conn), c.cfg.Publication)})
	if err != nil {
		return false, fmt.Errorf("start replication: %w", classifyServer(err))
	}
	c.log.Debug("streaming", zap.String("slot", c.cfg.Slot), zap.Stringer("from", from))
	s.canHold = false
	if p := pacerOf(conn.Conn()); p != nil {
		s.canHold = p.canHold()
		p.streaming(true, s.holding)
		defer p.streaming(false, nil)
	}
	defer s.drop()

	// The read deadline wakes the loop for status updates; cancelling ctx
	// pulls it into the past. Only this goroutine reads and writes conn.
	s.dl = deadline{nc: conn.Conn()}
	stop := make(chan struct{})
	s.watch.Go(func() {
		select {
		case <-ctx.Done():
			s.dl.cancel()
		case <-stop:
		}
	})
	defer func() {
		close(stop)
		s.watch.Wait()
	}()
	s.next = time.Now().Add(c.cfg.StatusInterval)
	s.due.Store(s.next.UnixNano())
	s.dl.set(s.next)
	kick := s.kick
	c.kick.Store(&kick)
	defer c.kick.Store(nil)
	for {
		raw, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if !isTimeout(err) {
				return received, classifyServer(err)
			}
			// The socket is drained (transactions are waiting), a status
			// update is due, or ctx ended.
			if err := s.flush(ctx); err != nil {
				if ctx.Err() != nil {
					s.finish()
				}
				return received, err
			}
			if ctx.Err() != nil {
				s.finish()
				return received, ctx.Err()
			}
			if due := time.Unix(0, s.due.Load()); time.Now().Add(time.Millisecond).After(due) {
				if err := s.status(false); err != nil {
					return received, err
				}
			} else if !errors.Is(err, errWouldBlock) {
				s.dl.set(due) // a deadline that is not ours: put ours back
			}
			continue
		}
		switch m := raw.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return received, decodeErr("empty copy data")
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				if len(m.Data) < 18 {
					return received, decodeErr("keepalive is truncated")
				}
				walEnd := pglogrepl.LSN(binary.BigEndian.Uint64(m.Data[1:]))
				c.wm.idle(walEnd, s.asm.open())
				if m.Data[17] != 0 {
					if s.stopping(walEnd) {
						return received, errServerStopping
					}
					if err := s.status(false); err != nil {
						return received, err
					}
				}
			case pglogrepl.XLogDataByteID:
				if len(m.Data) < 25 {
					return received, decodeErr("xlogdata is truncated")
				}
				received = true
				if err := s.handle(ctx, m.Data[25:]); err != nil {
					if ctx.Err() != nil {
						s.finish()
					}
					return received, err
				}
			}
		case *pgproto3.ErrorResponse:
			return received, classifyServer(pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone, *pgproto3.CommandComplete:
			return received, errStreamEnded
		}
	}
}

// stopping recognises a server in shutdown that waits for our confirmation.
// A stopping walsender (walsender.c WalSndDone) asks for a reply again
// each time it gets one, until the flush position we report reaches what
// it has sent. When nothing is pending the watermark moves there and the
// server stops; when a transaction handed out is still unconfirmed it can
// not, and would wait forever since our replies keep its timeout away.
// Normal keepalives ask for a reply at most every wal_sender_timeout/2, so
// a burst of requests means shutdown: we disconnect and let it stop.
func (s *session) stopping(walEnd pglogrepl.LSN) bool {
	if !s.c.wm.pending() && !s.asm.open() {
		s.pings = s.pings[:0]
		return false
	}
	now := time.Now()
	keep := s.pings[:0]
	for _, p := range s.pings {
		if now.Sub(p) < 2*time.Second {
			keep = append(keep, p)
		}
	}
	s.pings = append(keep, now)
	return len(s.pings) >= 8
}

// handle decodes one pgoutput message and hands out a committed transaction.
// data aliases pgconn's buffer: the decoder copies what it keeps.
func (s *session) handle(ctx context.Context, data []byte) error {
	if s.c.tap != nil {
		s.c.tap(data)
	}
	m, err := s.dec.decode(data)
	if err != nil {
		return err
	}
	txn, err := s.asm.handle(&m)
	if err != nil || txn == nil {
		return err
	}
	if txn.Rows == 0 {
		// Nothing for us (other tables, or everything rolled back to a
		// savepoint): no need to hand it out, and when nothing else is
		// pending the slot may move past it.
		txn.Release()
		s.c.wm.idle(txn.EndLSN, s.asm.open())
		return nil
	}
	// Committed transactions are held until the socket is drained, and
	// handed out together: one hand-off (one wake-up of the consumer) per
	// read of the socket rather than per transaction.
	s.c.wm.hand(txn.EndLSN)
	s.pending = append(s.pending, txn)
	s.pendingMem += txn.buf.mem
	s.held.Store(true)
	if !s.canHold || len(s.pending) >= maxBatch || s.pendingMem >= s.c.cfg.MemoryBudget {
		return s.flush(ctx)
	}
	return nil
}

// maxBatch bounds the transactions handed out together.
const maxBatch = 256

// holding reports whether committed transactions wait to be handed out
// (pacedConn then returns errWouldBlock rather than wait for data).
func (s *session) holding() bool { return s.held.Load() }

// flush hands the held transactions to the consumer.
func (s *session) flush(ctx context.Context) error {
	if len(s.pending) == 0 {
		return nil
	}
	batch := s.pending
	s.pending, s.pendingMem = nil, 0
	s.held.Store(false)
	return s.emit(ctx, batch)
}

// drop releases transactions never handed out (the stream ended; they are
// unconfirmed, so the server sends them again).
func (s *session) drop() {
	for _, t := range s.pending {
		t.Release()
	}
	s.pending, s.pendingMem = nil, 0
	s.held.Store(false)
}

// emit hands a batch to the consumer. While the consumer is busy, status
// updates keep going out so the walsender does not time out.
func (s *session) emit(ctx context.Context, batch []*Txn) error {
	select {
	case s.out <- batch:
		return nil
	default:
	}
	for {
		t := time.NewTimer(time.Until(s.next))
		select {
		case s.out <- batch:
			t.Stop()
			return nil
		case <-t.C:
			if err := s.status(false); err != nil {
				releaseAll(batch)
				return err
			}
		case <-ctx.Done():
			t.Stop()
			releaseAll(batch)
			return ctx.Err()
		}
	}
}

func releaseAll(batch []*Txn) {
	for _, t := range batch {
		t.Release()
	}
}

// kickGap is the shortest time between two status updates that Confirm
// brings forward.
const kickGap = 100 * time.Millisecond

// kick brings the next status update forward after a Confirm: it is sent
// at most kickGap after the previous one instead of a whole StatusInterval
// later, so the slot (and pg_replication_slots) follows the output closely.
// It only moves the read deadline, which the loop goroutine owns the effect
// of: the read times out and the loop sends the update.
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
	lsn := s.c.wm.position()
	s.next = time.Now().Add(s.c.cfg.StatusInterval)
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
	s.c.wm.raise(&s.c.wm.reported, lsn)
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
		if m, ok := raw.(*pgproto3.CopyData); ok && len(m.Data) > 0 && m.Data[0] == pglogrepl.PrimaryKeepaliveMessageByteID {
			return
		}
		if _, ok := raw.(*pgproto3.CopyData); !ok {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return pgconn.Timeout(err) || (errors.As(err, &ne) && ne.Timeout())
}

// classifyServer turns the server's word for a missing publication or slot
// into our sentinel errors.
func classifyServer(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == "42704" && strings.Contains(pgErr.Message, "publication"):
		return fmt.Errorf("%w (%s)", ErrPublicationMissing, pgErr.Message)
	case pgErr.Code == "42704" && strings.Contains(pgErr.Message, "replication slot"):
		return fmt.Errorf("%w (%s)", ErrSlotMissing, pgErr.Message)
	case pgErr.Code == "55000" && strings.Contains(pgErr.Message, "invalidated"):
		return fmt.Errorf("%w (%s)", ErrSlotLost, pgErr.Message)
	}
	return err
}

// deadline sets the read deadline of the connection from Run's goroutine,
// and lets a watcher pull it into the past to end a blocked read.
type deadline struct {
	mu        sync.Mutex
	nc        net.Conn
	cancelled bool
	at        time.Time // the deadline set
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

// backoff is exponential with full jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) sleep(ctx context.Context) bool {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
