package wal

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
)

// session is the replication stream of one Run: it starts replication on a
// connection, reads it, decodes and assembles the messages and hands the
// committed transactions out. The decoder and assembler survive reconnects
// (both are reset). It knows its Capture only through what it is given:
// the settings, the watermark and the hooks.
type session struct {
	cfg   *Config
	log   *zap.Logger
	wm    *watermark
	hooks hooks
	out   chan<- []*Txn
	dec   *decoder
	asm   *assembler

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
	readAt     time.Time   // when the last ReceiveMessage returned (Txn.Received)
	sentAt     time.Time   // the server time of the last XLogData (Txn.Sent)
}

// hooks are the session's ways back to its Capture and to Run.
type hooks struct {
	// kick is where the session publishes its kick while it streams, for
	// Confirm to call (see session.kick).
	kick *atomic.Pointer[func()]
	// streaming is called once START_REPLICATION has succeeded.
	streaming func()
	// tap, in tests, sees every pgoutput message (aliasing the read buffer).
	tap func([]byte)
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
// received reports whether the server sent anything (the backoff then
// resets).
func (s *session) run(ctx context.Context, conn *pgconn.PgConn) (received bool, err error) {
	s.conn = conn
	s.dec.reset()
	s.asm.reset()
	from := s.wm.position()
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, from,
		pglogrepl.StartReplicationOptions{PluginArgs: pluginArgs(serverMajor(conn), s.cfg.Publication)})
	if err != nil {
		return false, fmt.Errorf("start replication: %w", classifyServer(s.cfg.Slot, err))
	}
	s.log.Debug("streaming", zap.String("slot", s.cfg.Slot), zap.Stringer("from", from))
	if s.hooks.streaming != nil {
		s.hooks.streaming()
	}
	s.canHold = false
	if p := pacerOf(conn.Conn()); p != nil {
		s.canHold = p.canHold()
		p.streaming(true, s.holding)
		defer p.streaming(false, nil)
	}
	defer s.drop()

	// The read deadline wakes the loop for status updates; cancelling ctx
	// pulls it into the past (status.go). Only this goroutine reads and
	// writes conn.
	s.dl.reset(conn.Conn())
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
	s.next = time.Now().Add(s.cfg.StatusInterval)
	s.due.Store(s.next.UnixNano())
	s.dl.set(s.next)
	kick := s.kick
	s.hooks.kick.Store(&kick)
	defer s.hooks.kick.Store(nil)
	return s.read(ctx)
}

// read is the loop: one message at a time, until an error.
func (s *session) read(ctx context.Context) (received bool, err error) {
	for {
		raw, err := s.conn.ReceiveMessage(context.Background())
		s.readAt = time.Now()
		if err != nil {
			if !isTimeout(err) {
				return received, classifyServer(s.cfg.Slot, err)
			}
			if err := s.woke(ctx, err); err != nil {
				return received, err
			}
			continue
		}
		switch m := raw.(type) {
		case *pgproto3.CopyData:
			received = true
			if err := s.copyData(ctx, m.Data); err != nil {
				return received, err
			}
		case *pgproto3.ErrorResponse:
			return received, classifyServer(s.cfg.Slot, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone, *pgproto3.CommandComplete:
			return received, errStreamEnded
		}
	}
}

// copyData handles one message of the copy stream: a keepalive or an
// XLogData carrying one pgoutput message.
func (s *session) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return decodeErr("empty copy data")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return decodeErr("keepalive: %v", err)
		}
		s.wm.idle(ka.ServerWALEnd, s.asm.open())
		if !ka.ReplyRequested {
			return nil
		}
		if s.stopping() {
			return errServerStopping
		}
		return s.status(false)
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return decodeErr("xlogdata: %v", err)
		}
		s.sentAt = x.ServerTime
		if err := s.handle(ctx, x.WALData); err != nil {
			if ctx.Err() != nil {
				s.finish()
			}
			return err
		}
	}
	return nil
}

// stopping recognises a server in shutdown that waits for our confirmation.
// A stopping walsender (walsender.c WalSndDone) asks for a reply again
// each time it gets one, until the flush position we report reaches what
// it has sent. When nothing is pending the watermark moves there and the
// server stops; when a transaction handed out is still unconfirmed it can
// not, and would wait forever since our replies keep its timeout away.
// Normal keepalives ask for a reply at most every wal_sender_timeout/2, so
// a burst of requests means shutdown: we disconnect and let it stop.
func (s *session) stopping() bool {
	if !s.wm.pending() && !s.asm.open() {
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
	if s.hooks.tap != nil {
		s.hooks.tap(data)
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
		s.wm.idle(txn.EndLSN, s.asm.open())
		return nil
	}
	// Committed transactions are held until the socket is drained, and
	// handed out together: one hand-off (one wake-up of the consumer) per
	// read of the socket rather than per transaction.
	s.wm.hand(txn.EndLSN)
	txn.Received = s.readAt
	txn.Sent = s.sentAt
	s.pending = append(s.pending, txn)
	s.pendingMem += txn.buf.mem
	s.held.Store(true)
	if !s.canHold || len(s.pending) >= maxBatch || s.pendingMem >= s.cfg.MemoryBudget {
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
	now := time.Now()
	for _, t := range batch {
		t.Handed = now
	}
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
