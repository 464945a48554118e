package wal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// This file is the Capture and its API: New, Open, ReleaseSnapshot, Run,
// Confirm, Close, and the counters. The slot is slot.go's, the stream
// session.go's, what is retried retry.go's.

// Config tells capture where to read and what to keep.
type Config struct {
	DSN         string // connection string; replication=database is added
	Slot        string // logical replication slot, [a-z0-9_]{1,63}
	Publication string // must exist before the slot is created

	// Tables lists, per table, the columns to carry (key columns first).
	// Changes of other tables are dropped.
	Tables map[change.Table][]string
	// OldColumns lists, per table, the columns of Tables that the old row of
	// a Delete (or of an Update changing them) must carry: the replica
	// identity must include them. A Relation message whose identity no
	// longer does stops Run (ErrSchemaChanged). nil checks nothing.
	OldColumns map[change.Table][]string
	// MemoryBudget bounds the bytes one transaction's rows take in memory
	// before they spill to a file in TempDir (default 8 MiB).
	MemoryBudget int64
	TempDir      string // "" is os.TempDir()
	// StatusInterval is the period of standby status updates (default 10s);
	// keep it well under the server's wal_sender_timeout.
	StatusInterval time.Duration
	// Coalesce is how long the reader lets a busy stream pile up in the
	// socket after draining it, so it is read in a few large reads rather
	// than one per message (pace.go). It engages only while the stream is
	// busy. 0 (or less) turns it off, as capture.coalesce: 0 does: the
	// value is used as given, the default (1ms) is config's.
	Coalesce time.Duration
	// Readd, when set (source.provision: auto), is called before the
	// publication watcher adds back a captured table someone removed from
	// the publication (added false: the caller records that the indexes
	// reading it must be rebuilt, their changes meanwhile never arrived),
	// and again once it is added (added true: the rebuild may run). Nil:
	// the watcher stops capture naming the fix.
	Readd func(t change.Table, added bool) error
	// Store holds the identity record (system id, slot); nil skips the check.
	Store *state.Store
	// Resync drops the slot and the identity record in Open, so a fresh slot
	// and snapshot are made.
	Resync bool
	// Health is where the capture reports its outages (a lost connection
	// being retried: one WARN per episode, one INFO with its length) and
	// its waits (the slot in use by another client), for /readyz and the
	// metrics. nil: a tracker of its own, logging to the capture's logger.
	Health *fault.Health
	// Failover is source.failover: auto | on | off ("" is auto); see failover.go.
	Failover string
	// PrimaryDSN is source.primary_dsn: in standby mode, the primary, nudged
	// while the slot is created on the standby (failover.go).
	PrimaryDSN string
	// OnFailover, when set, is called when the server is found on a new timeline.
	OnFailover func(oldTimeline, timeline int32)
}

// Start is what Open found or made.
type Start struct {
	SystemID string
	Timeline int32
	// Created is true when Open created the slot: SnapshotName is then an
	// exported snapshot showing exactly the data before ConsistentPoint,
	// and the stream carries exactly the commits after it.
	Created         bool
	ConsistentPoint pglogrepl.LSN
	SnapshotName    string
	// Confirmed is the position streaming resumes from: the slot's
	// confirmed_flush_lsn, or ConsistentPoint for a new slot.
	Confirmed pglogrepl.LSN
	// ServerVersion is the server's major version (14, 15, ...).
	ServerVersion int
}

// Capture reads one logical replication slot. New, Open, then Run.
type Capture struct {
	cfg Config
	log *zap.Logger

	mu       sync.Mutex
	conn     *pgconn.PgConn // held between Open and Run; Run owns it afterwards
	start    *Start
	released chan struct{} // closed by ReleaseSnapshot
	relOnce  sync.Once
	closed   bool

	wm  watermark
	pub publicationWatch // what the publication must go on publishing (publication.go)

	// kick, set while a session streams, pulls its next status update
	// forward after Confirm (see session.kick).
	kick atomic.Pointer[func()]

	tap func([]byte) // tests: sees every pgoutput message (aliasing the read buffer)

	// statistics, read by tests and metrics
	reconnects atomic.Int64
	spills     atomic.Int64
	pace       paceStats
	ha         failoverState
}

// New returns a capture for cfg; log gets a component field.
func New(cfg Config, log *zap.Logger) *Capture {
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.MemoryBudget <= 0 {
		cfg.MemoryBudget = 8 << 20
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	log = log.With(zap.String("component", "wal"))
	if cfg.Health == nil {
		cfg.Health = fault.NewHealth(log)
	}
	c := &Capture{cfg: cfg, log: log, released: make(chan struct{})}
	c.pub.cfg = &c.cfg
	c.pub.log = log
	return c
}

// Open connects in replication mode, runs IDENTIFY_SYSTEM, checks the state
// store's identity, the publication and the slot, and creates the slot when
// it is missing (and no progress was recorded) with an exported snapshot.
// The snapshot stays valid until ReleaseSnapshot: the replication
// connection runs no command before that.
func (c *Capture) Open(ctx context.Context) (*Start, error) {
	if err := ValidateSlotName(c.cfg.Slot); err != nil {
		return nil, err
	}
	if c.cfg.Publication == "" {
		return nil, errors.New("capture: no publication configured")
	}
	if c.cfg.Resync {
		if err := c.Resync(ctx); err != nil {
			return nil, err
		}
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	start, err := c.prepare(ctx, conn, true)
	if err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	c.mu.Lock()
	c.conn = conn
	c.start = start
	c.mu.Unlock()
	if !start.Created {
		c.ReleaseSnapshot()
	}
	c.wm.init(start.Confirmed)
	return start, nil
}

// ReleaseSnapshot tells capture that every importer has run SET TRANSACTION
// SNAPSHOT: the replication connection may run commands again. Run waits
// for it. Calling it more than once, or without a snapshot, is harmless.
func (c *Capture) ReleaseSnapshot() {
	c.relOnce.Do(func() { close(c.released) })
}

// Close closes the replication connection when Run does not own it.
func (c *Capture) Close() error {
	c.ReleaseSnapshot()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := c.conn.Close(ctx)
		c.conn = nil
		return err
	}
	return nil
}

// Resync drops the slot (when it exists) and forgets the identity record, so
// the next Open creates a fresh slot and snapshot.
func (c *Capture) Resync(ctx context.Context) error {
	if _, err := DropSlot(ctx, c.cfg.DSN, c.cfg.Slot); err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	if c.cfg.Store != nil {
		if err := c.cfg.Store.Remove(state.IdentityRecord); err != nil {
			return fmt.Errorf("resync: forget identity: %w", err)
		}
	}
	c.log.Info("resync: dropped the slot and the identity record", zap.String("slot", c.cfg.Slot))
	return nil
}

// Run streams committed transactions, in commit order, into out until ctx
// ends (nil error) or a permanent error. It waits for ReleaseSnapshot
// first. Transactions come in batches: those read from the socket
// together, at most maxBatch or a memory budget's worth, so a busy stream
// costs one hand-off per read rather than per transaction; a lone commit
// comes alone and at once. Transient errors (retry.go) never end it: it
// reconnects after a backoff, however long the server is away, and resumes
// from the confirmed position, so transactions handed out but not
// confirmed are delivered again. A slot in use by another client is
// waited for. The receiver owns each Txn and must Release it.
func (c *Capture) Run(ctx context.Context, out chan<- []*Txn) error {
	select {
	case <-c.released:
	case <-ctx.Done():
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wg.Go(func() { c.watchPublication(ctx, cancel) })
	conn, err := c.takeConn()
	if err != nil {
		return err
	}
	r := newRetrier(c.cfg.Health, c.log, c.cfg.Slot)
	s := c.newSession(out, r.streaming)
	defer s.asm.reset()
	for {
		if conn == nil {
			if conn, err = c.reconnect(ctx); err != nil {
				if err := r.failed(ctx, err); err != nil {
					return c.stopped(ctx, err)
				}
				continue
			}
			c.reconnects.Add(1)
		}
		r.current = int(conn.PID())
		received, err := s.run(ctx, conn)
		closeConn(conn)
		conn = nil
		s.asm.reset()
		if received {
			r.received()
		}
		if err := r.failed(ctx, err); err != nil {
			return c.stopped(ctx, err)
		}
	}
}

// takeConn takes the connection Open made (Run owns it from now on).
func (c *Capture) takeConn() (*pgconn.PgConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.start == nil:
		return nil, errors.New("capture: Run before Open")
	case c.closed:
		return nil, errors.New("capture: closed")
	}
	conn := c.conn
	c.conn = nil
	return conn, nil
}

func (c *Capture) newSession(out chan<- []*Txn, streaming func()) *session {
	dir := c.cfg.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	dec := newDecoder(c.cfg.Tables)
	dec.old = c.cfg.OldColumns
	return &session{
		cfg:   &c.cfg,
		log:   c.log,
		wm:    &c.wm,
		hooks: hooks{kick: &c.kick, streaming: streaming, tap: c.tap},
		out:   out,
		dec:   dec,
		asm:   newAssembler(c.cfg.MemoryBudget, dir, func() { c.spills.Add(1) }),
	}
}

// stopped is what Run returns for err: nil when ctx ended, unless the
// publication watcher ended it (publication.go).
func (c *Capture) stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrPublicationMissing) || errors.Is(cause, ErrPublicationChanged) {
		return cause
	}
	return nil
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

// The counters, for tests and metrics (metrics.CaptureStats).

// Reconnects counts the reconnections Run made.
func (c *Capture) Reconnects() int64 { return c.reconnects.Load() }

// Spills counts the transactions whose rows went to a temporary file.
func (c *Capture) Spills() int64 { return c.spills.Load() }

// SocketReads counts the reads of the replication socket while streaming.
func (c *Capture) SocketReads() int64 { return c.pace.reads.Load() }

// ReadPauses counts the coalescing pauses taken (see pace.go).
func (c *Capture) ReadPauses() int64 { return c.pace.pauses.Load() }
