package wal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// ValidateSlotName reports whether name can be used as a slot name.
func ValidateSlotName(name string) error {
	if !slotNameRE.MatchString(name) {
		return fmt.Errorf("slot %q: %w", name, ErrBadSlotName)
	}
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
	if err := c.checkPublication(ctx, conn, create); err != nil {
		return nil, err
	}
	slot, err := c.slotInfo(ctx, conn, start.ServerVersion)
	if err != nil {
		return nil, err
	}
	if err := c.followTimeline(known, &id, sys, slot, !create); err != nil { // failover.go
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
	case c.cfg.Store != nil && !known && slot.activePID != 0:
		// Another instance streams from it with a state dir of its own:
		// taking over would start from its position without this state
		// dir's backfill, so this is no standby.
		return nil, fmt.Errorf("slot %s is in use by another client (server pid %d) and the state dir %s has no record of it: %w",
			c.cfg.Slot, slot.activePID, c.cfg.Store.Dir, ErrSlotUnknown)
	case c.cfg.Store != nil && !known:
		return nil, fmt.Errorf("slot %s: %w", c.cfg.Slot, ErrSlotUnknown)
	}
	if err := c.ensureFailover(ctx, conn, start.ServerVersion); err != nil { // failover.go
		return nil, err
	}
	start.Confirmed = slot.confirmed
	if known {
		start.ConsistentPoint = id.ConsistentPoint
	}
	return start, nil
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
	action, err := c.snapshotAction(ctx, conn, start.ServerVersion) // failover.go
	if err != nil {
		return nil, err
	}
	defer c.nudgePrimary(ctx, conn, start.ServerVersion)()
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, c.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{SnapshotAction: action})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object: another client made it just now
		return nil, fmt.Errorf("create slot %s: another client created it at the same moment: %w", c.cfg.Slot, ErrSlotUnknown)
	}
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

func closeConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn.Close(ctx)
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
