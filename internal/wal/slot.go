package wal

import (
	"context"
	"errors"
	"fmt"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// Errors that end capture for good: retrying cannot fix them. Each message
// says what to do; errors.Is tells them apart.
var (
	// ErrSlotMissing: the state dir holds progress for a slot that no longer
	// exists on the server (someone dropped it), so changes since the last
	// confirmed position are gone.
	ErrSlotMissing = errors.New("the replication slot no longer exists, so changes since the last run are lost: run with --resync to start over with a new slot and a full backfill")
	// ErrSlotLost: the server invalidated the slot (wal_status = 'lost',
	// max_slot_wal_keep_size exceeded, or another invalidation).
	ErrSlotLost = errors.New("the replication slot was invalidated by the server (wal_status 'lost': it fell behind max_slot_wal_keep_size, or another invalidation), so changes are lost: run with --resync to start over")
	// ErrSlotUnknown: the slot exists but the state dir has no record of it.
	ErrSlotUnknown = errors.New("the replication slot exists but the state dir has no record of it (another flusso-pg owns it, or the state dir was lost): run with --resync to drop it and start over, or choose another slot name")
	// ErrServerChanged: the state dir belongs to another server (a different
	// system identifier) or another database.
	ErrServerChanged = errors.New("the state dir belongs to another server: point flusso-pg at the server it was following, or run with --resync to start over on this one")
	// ErrPublicationMissing: the publication does not exist (it was dropped).
	ErrPublicationMissing = errors.New("the publication does not exist (it was dropped?): create it again (flusso-pg provisions it on start) and run with --resync, since changes made while it was missing are not in the slot's stream")
	// ErrSlotInUse: another connection is streaming from the slot.
	ErrSlotInUse = errors.New("the replication slot is in use by another connection: stop the other flusso-pg first")
	// ErrBadSlotName: the slot name is not [a-z0-9_]{1,63}.
	ErrBadSlotName = errors.New("a replication slot name has 1 to 63 characters, each a lower-case letter, a digit or an underscore")
)

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// ValidateSlotName reports whether name can be used as a slot name.
func ValidateSlotName(name string) error {
	if !slotNameRE.MatchString(name) {
		return fmt.Errorf("slot %q: %w", name, ErrBadSlotName)
	}
	return nil
}

// Config tells capture where to read and what to keep.
type Config struct {
	DSN         string // connection string; replication=database is added
	Slot        string // logical replication slot, [a-z0-9_]{1,63}
	Publication string // must exist before the slot is created

	// Tables lists, per table, the columns to carry (key columns first).
	// Changes of other tables are dropped.
	Tables map[change.Table][]string
	// MemoryBudget bounds the bytes one transaction's rows take in memory
	// before they spill to a file in TempDir (default 8 MiB).
	MemoryBudget int64
	TempDir      string // "" is os.TempDir()
	// StatusInterval is the period of standby status updates (default 10s);
	// keep it well under the server's wal_sender_timeout.
	StatusInterval time.Duration
	// Coalesce is how long the reader lets a busy stream pile up in the
	// socket after draining it, so it is read in a few large reads rather
	// than one per message (pace.go). Default 1ms; negative turns it off.
	// It engages only while the stream is busy.
	Coalesce time.Duration
	// Store holds the identity record (system id, slot); nil skips the check.
	Store *state.Store
	// Resync drops the slot and the identity record in Open, so a fresh slot
	// and snapshot are made.
	Resync bool
	// OnReconnect, when set, is called each time Run reconnects.
	OnReconnect func()
	// Health, when set, is where the capture reports its outages (a lost
	// connection being retried) and its waits (the slot in use by another
	// client), for /readyz and the metrics. nil reports nowhere.
	Health *fault.Health
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

	wm watermark

	// kick, set while a session streams, pulls its next status update
	// forward after Confirm (see session.kick).
	kick atomic.Pointer[func()]

	tap func([]byte) // tests: sees every pgoutput message (aliasing the read buffer)

	// statistics, read by tests and metrics
	reconnects atomic.Int64
	spills     atomic.Int64
	pace       paceStats
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
	if cfg.Coalesce == 0 {
		cfg.Coalesce = time.Millisecond
	}
	c := &Capture{cfg: cfg, log: log.With(zap.String("component", "wal")), released: make(chan struct{})}
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

// DropSlot drops the logical replication slot over an ordinary connection.
// It reports whether a slot was dropped; a missing slot is not an error. A
// slot still in use by a connection that is going away is waited for a few
// seconds; one in steady use gives ErrSlotInUse.
func DropSlot(ctx context.Context, dsn, slot string) (bool, error) {
	if err := ValidateSlotName(slot); err != nil {
		return false, err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, fmt.Errorf("drop slot: connect: %w", err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		var active bool
		var pid *int32
		err := conn.QueryRow(ctx, `SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active, &pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("drop slot %s: %w", slot, err)
		}
		if !active {
			_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "55006" { // became active meanwhile
				err = nil
			} else if errors.As(err, &pgErr) && pgErr.Code == "42704" { // dropped meanwhile
				return false, nil
			} else if err != nil {
				return false, fmt.Errorf("drop slot %s: %w", slot, err)
			} else {
				return true, nil
			}
		}
		if time.Now().After(deadline) {
			p := int32(0)
			if pid != nil {
				p = *pid
			}
			return false, fmt.Errorf("drop slot %s (used by pid %d): %w", slot, p, ErrSlotInUse)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// connect opens a replication connection (replication=database).
func (c *Capture) connect(ctx context.Context) (*pgconn.PgConn, error) {
	pc, err := pgconn.ParseConfig(c.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	pc.RuntimeParams["replication"] = "database"
	// pgoutput prints values with the walsender's settings: the same text
	// settings as the build sessions, so keys match whatever the role says.
	for k, v := range pgsession.TextParams() {
		pc.RuntimeParams[k] = v
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = 15 * time.Second
	}
	// Under TLS, so that coalescing sees the kernel's receive queue.
	dial := pc.DialFunc
	pc.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newPacedConn(nc, c.cfg.Coalesce, &c.pace), nil
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("replication connect: %w", err)
	}
	return conn, nil
}

// slotInfo is one row of pg_replication_slots.
type slotInfo struct {
	plugin, database, walStatus string
	confirmed                   pglogrepl.LSN
	activePID                   int
}

// prepare checks identity, publication and slot on a fresh replication
// connection, creating the slot when allowed. On a reconnect (create false)
// a missing slot is always an error.
func (c *Capture) prepare(ctx context.Context, conn *pgconn.PgConn, create bool) (*Start, error) {
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("identify system: %w", err)
	}
	start := &Start{SystemID: sys.SystemID, Timeline: sys.Timeline, ServerVersion: serverMajor(conn)}
	var id state.Identity
	known := false
	if c.cfg.Store != nil {
		known, err = c.cfg.Store.Load(state.IdentityRecord, &id)
		if err != nil {
			return nil, err
		}
		if known && id.SystemID != sys.SystemID {
			return nil, fmt.Errorf("state dir %s: system identifier %s, server has %s: %w", c.cfg.Store.Dir, id.SystemID, sys.SystemID, ErrServerChanged)
		}
		if known && id.Database != "" && id.Database != sys.DBName {
			return nil, fmt.Errorf("state dir %s: database %q, connected to %q: %w", c.cfg.Store.Dir, id.Database, sys.DBName, ErrServerChanged)
		}
	}
	if err := c.checkPublication(ctx, conn); err != nil {
		return nil, err
	}
	slot, err := c.slotInfo(ctx, conn, start.ServerVersion)
	if err != nil {
		return nil, err
	}
	switch {
	case slot == nil && (known || !create):
		return nil, fmt.Errorf("slot %s: %w", c.cfg.Slot, ErrSlotMissing)
	case slot == nil:
		return c.createSlot(ctx, conn, start, sys)
	case slot.walStatus == "lost":
		return nil, fmt.Errorf("slot %s: %w", c.cfg.Slot, ErrSlotLost)
	case slot.plugin != "pgoutput":
		return nil, fmt.Errorf("slot %s uses the output plugin %q, flusso-pg needs pgoutput: drop it or choose another slot name", c.cfg.Slot, slot.plugin)
	case slot.database != sys.DBName:
		return nil, fmt.Errorf("slot %s belongs to database %q, not %q: choose another slot name", c.cfg.Slot, slot.database, sys.DBName)
	case c.cfg.Store != nil && !known:
		return nil, fmt.Errorf("slot %s: %w", c.cfg.Slot, ErrSlotUnknown)
	}
	start.Confirmed = slot.confirmed
	if known {
		start.ConsistentPoint = id.ConsistentPoint
	}
	return start, nil
}

func (c *Capture) checkPublication(ctx context.Context, conn *pgconn.PgConn) error {
	rows, err := simpleQuery(ctx, conn, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = "+change.QuoteLiteral(c.cfg.Publication))
	if err != nil {
		return fmt.Errorf("check publication: %w", err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("publication %s: %w", c.cfg.Publication, ErrPublicationMissing)
	}
	return nil
}

func (c *Capture) slotInfo(ctx context.Context, conn *pgconn.PgConn, version int) (*slotInfo, error) {
	walStatus := "wal_status"
	if version < 13 {
		walStatus = "NULL"
	}
	rows, err := simpleQuery(ctx, conn, "SELECT plugin, database, confirmed_flush_lsn, "+walStatus+", active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = "+change.QuoteLiteral(c.cfg.Slot))
	if err != nil {
		return nil, fmt.Errorf("read slot %s: %w", c.cfg.Slot, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	r := rows[0]
	s := &slotInfo{plugin: string(r[0]), database: string(r[1]), walStatus: string(r[3])}
	if r[2] != nil {
		if s.confirmed, err = pglogrepl.ParseLSN(string(r[2])); err != nil {
			return nil, fmt.Errorf("read slot %s: %w", c.cfg.Slot, err)
		}
	}
	if r[4] != nil {
		s.activePID, _ = strconv.Atoi(string(r[4]))
	}
	return s, nil
}

// createSlot creates the permanent pgoutput slot with an exported snapshot
// and records the identity. The connection must stay idle afterwards until
// the snapshot is released.
func (c *Capture) createSlot(ctx context.Context, conn *pgconn.PgConn, start *Start, sys pglogrepl.IdentifySystemResult) (*Start, error) {
	// Never TWO_PHASE: pglogrepl cannot decode the prepare messages, and
	// without it a prepared transaction arrives whole at COMMIT PREPARED.
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, c.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, fmt.Errorf("create slot %s: %w", c.cfg.Slot, err)
	}
	cp, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return nil, fmt.Errorf("create slot %s: consistent point: %w", c.cfg.Slot, err)
	}
	start.Created = true
	start.ConsistentPoint = cp
	start.Confirmed = cp
	start.SnapshotName = res.SnapshotName
	if c.cfg.Store != nil {
		err := c.cfg.Store.Save(state.IdentityRecord, state.Identity{
			SystemID: sys.SystemID, Timeline: sys.Timeline, Database: sys.DBName,
			Slot: c.cfg.Slot, ConsistentPoint: cp, CreatedAt: time.Now().UTC(),
		})
		if err != nil {
			return nil, fmt.Errorf("record identity: %w", err)
		}
	}
	c.log.Info("created replication slot", zap.String("slot", c.cfg.Slot),
		zap.Stringer("consistent_point", cp), zap.String("snapshot", res.SnapshotName))
	return start, nil
}

// simpleQuery runs one SQL statement over the simple protocol (the only one
// a walsender takes) and returns its rows.
func simpleQuery(ctx context.Context, conn *pgconn.PgConn, sql string) ([][][]byte, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(results) != 1 {
		return nil, fmt.Errorf("expected 1 result, got %d", len(results))
	}
	return results[0].Rows, results[0].Err
}

// serverMajor reads the major version from the server_version parameter.
func serverMajor(conn *pgconn.PgConn) int {
	v := conn.ParameterStatus("server_version")
	if i := strings.IndexAny(v, ". "); i > 0 {
		v = v[:i]
	}
	n, _ := strconv.Atoi(v)
	return n
}
