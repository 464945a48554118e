package wal

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// Failover slots and timelines.
//
// A logical slot lives on one server. From PostgreSQL 17 a slot created (or
// altered) with FAILOVER true is copied to standbys that run with
// sync_replication_slots = on (the slot sync worker), so after a promotion
// the new primary has it, at a confirmed position no further than the old
// primary's (synchronized_standby_slots on the primary makes logical
// walsenders wait for the standby, so the copy is never behind what was
// sent). A promotion starts a new timeline: same system identifier, timeline
// ID plus one. Reconnecting through a multi-host DSN with
// target_session_attrs=primary lands on the new primary; Capture checks the
// system identifier (the same cluster), records the new timeline, checks the
// slot survived and is not past what we confirmed, and goes on.

// Failover modes, as source.failover takes them.
const (
	FailoverAuto = "auto"
	FailoverOn   = "on"
	FailoverOff  = "off"
)

var (
	// ErrFailoverUnsupported: source.failover is on but the server cannot
	// keep a failover slot (older than 17, or a standby).
	ErrFailoverUnsupported = errors.New("failover slots are not available here")
	// ErrSlotNotSurvived: after a failover (a new timeline) the slot is not
	// on the new primary.
	ErrSlotNotSurvived = errors.New("the replication slot did not survive the failover")
	// ErrSlotAhead: the slot's confirmed position is past what flusso-pg
	// confirmed, so transactions in between would be skipped.
	ErrSlotAhead = errors.New("the replication slot's confirmed position is past what flusso-pg wrote")
)

// failoverWanted decides whether the slot is to be a failover slot on a
// server of major version and recovery state, for mode (source.failover;
// "" is auto).
func failoverWanted(mode string, version int, inRecovery bool) (bool, error) {
	switch mode {
	case FailoverOff:
		return false, nil
	case FailoverOn:
		if version < 17 {
			return false, fault.MarkPermanent(fmt.Errorf("source.failover is on, but PostgreSQL %d has no failover slots (they are new in 17): %w; upgrade to 17, or set source.failover: off (a failover then loses the slot, and flusso-pg must start over with --resync)", version, ErrFailoverUnsupported))
		}
		if inRecovery {
			return false, fault.MarkPermanent(fmt.Errorf("source.failover is on, but source.dsn is a standby, where a slot cannot be a failover slot: %w; set source.failover: off (or auto) to read on the standby, or point source.dsn at the primary", ErrFailoverUnsupported))
		}
		return true, nil
	}
	return version >= 17 && !inRecovery, nil
}

// inRecovery reports whether the server is a standby.
func inRecovery(ctx context.Context, conn *pgconn.PgConn) (bool, error) {
	rows, err := simpleQuery(ctx, conn, "SELECT pg_catalog.pg_is_in_recovery()")
	if err != nil {
		return false, fmt.Errorf("pg_is_in_recovery: %w", err)
	}
	return len(rows) == 1 && string(rows[0][0]) == "t", nil
}

// snapshotAction is the CREATE_REPLICATION_SLOT option: an exported
// snapshot, with FAILOVER when the slot is to be a failover slot (the
// parenthesized syntax; PostgreSQL 17 has both).
func (c *Capture) snapshotAction(ctx context.Context, conn *pgconn.PgConn, version int) (string, error) {
	on, err := c.failoverHere(ctx, conn, version)
	if err != nil || !on {
		return "EXPORT_SNAPSHOT", err
	}
	return "(SNAPSHOT 'export', FAILOVER true)", nil
}

// failoverHere is failoverWanted for the server conn is connected to.
func (c *Capture) failoverHere(ctx context.Context, conn *pgconn.PgConn, version int) (bool, error) {
	standby := false
	if version >= 17 {
		var err error
		if standby, err = inRecovery(ctx, conn); err != nil {
			return false, err
		}
	}
	return failoverWanted(c.cfg.Failover, version, standby)
}

// ensureFailover makes an existing slot a failover slot when source.failover
// wants one and it is not yet (a slot created by an older flusso-pg, or
// before the server was upgraded to 17): ALTER_REPLICATION_SLOT ...
// (FAILOVER true). With source.failover: off an existing flag is left as it
// is.
func (c *Capture) ensureFailover(ctx context.Context, conn *pgconn.PgConn, version int) error {
	if c.cfg.Failover == FailoverOff {
		return nil
	}
	on, err := c.failoverHere(ctx, conn, version)
	if err != nil || !on {
		return err
	}
	rows, err := simpleQuery(ctx, conn, "SELECT failover FROM pg_catalog.pg_replication_slots WHERE slot_name = "+change.QuoteLiteral(c.cfg.Slot))
	if err != nil {
		return fmt.Errorf("read slot %s: %w", c.cfg.Slot, err)
	}
	if len(rows) == 0 || string(rows[0][0]) == "t" {
		return nil
	}
	if _, err := simpleQuery(ctx, conn, "ALTER_REPLICATION_SLOT "+c.cfg.Slot+" (FAILOVER true)"); err != nil {
		return fmt.Errorf("make slot %s a failover slot (ALTER_REPLICATION_SLOT %s (FAILOVER true)): %w", c.cfg.Slot, c.cfg.Slot, err)
	}
	c.log.Info("made the replication slot a failover slot, so standbys that synchronize slots keep a copy", zap.String("slot", c.cfg.Slot))
	return nil
}

// followTimeline is called once the state dir's identity (when known) is
// found to match the server's system identifier. A different timeline means a failover (or a
// point-in-time recovery) happened: it is recorded, counted, and the slot
// must have come along (slotFound) at a position no further than ours.
// reconnect is true within Run (we know what we confirmed).
func (c *Capture) followTimeline(known bool, id *state.Identity, sys pglogrepl.IdentifySystemResult, slot *slotInfo, reconnect bool) error {
	c.ha.timeline.Store(sys.Timeline)
	if !known {
		return nil
	}
	if id.Timeline == sys.Timeline || id.Timeline == 0 {
		// No failover. The slot may well be ahead of us: another instance
		// with this state dir (a standby process waiting for the slot)
		// streamed and confirmed meanwhile, which is no loss.
		return nil
	}
	old := id.Timeline
	if slot == nil {
		return fault.MarkPermanent(fmt.Errorf("the server %s is on timeline %d, the state dir's progress was made on timeline %d: a failover (promotion of a standby) happened, and slot %s is not on this server: %w. "+
			"On PostgreSQL 17 and newer, make it a failover slot (source.failover: auto or on) and run the standbys with sync_replication_slots = on, hot_standby_feedback = on, a primary_slot_name and a dbname in primary_conninfo, so it survives the next one (flusso-pg check --standby DSN checks them); "+
			"on PostgreSQL 16 and older slots do not survive a failover. Changes since the last confirmed position are not on this server's slot: run flusso-pg follow --resync to start over with a new slot and a full backfill",
			sys.SystemID, sys.Timeline, old, c.cfg.Slot, ErrSlotNotSurvived))
	}
	if reconnect {
		if err := c.notAhead(slot); err != nil {
			return err
		}
	}
	id.Timeline = sys.Timeline
	if c.cfg.Store != nil {
		if err := c.cfg.Store.Save(state.IdentityRecord, *id); err != nil {
			return fmt.Errorf("record the new timeline: %w", err)
		}
	}
	c.ha.failovers.Add(1)
	if c.cfg.OnFailover != nil {
		c.cfg.OnFailover(old, sys.Timeline)
	}
	c.log.Warn("the server is on a new timeline: a failover happened; the slot survived it, following on",
		zap.Int32("old_timeline", old), zap.Int32("timeline", sys.Timeline), zap.String("slot", c.cfg.Slot),
		zap.Stringer("slot_confirmed", slot.confirmed), zap.Stringer("ours", c.wm.position()), zap.Time("at", time.Now().UTC()))
	return nil
}

// notAhead checks, on a reconnect to a new timeline, that the slot's
// confirmed position is not past ours: the server would start from its own
// and skip the transactions in between. A synced copy is never ahead of the
// old primary's slot, which is never ahead of what we confirmed; one that is
// was moved by another consumer (or is another slot of the same name).
func (c *Capture) notAhead(slot *slotInfo) error {
	ours := c.wm.position()
	if ours != 0 && slot.confirmed > ours {
		return fault.MarkPermanent(fmt.Errorf("slot %s is confirmed up to %s, flusso-pg wrote up to %s: %w, so the transactions in between would be skipped (did another consumer read the slot?): run flusso-pg follow --resync to start over",
			c.cfg.Slot, slot.confirmed, ours, ErrSlotAhead))
	}
	return nil
}

// Timeline is the server's timeline at the last (re)connection; 0 before
// Open.
func (c *Capture) Timeline() int32 { return c.ha.timeline.Load() }

// Failovers counts the timeline changes followed.
func (c *Capture) Failovers() int64 { return c.ha.failovers.Load() }

// failoverState is what Capture keeps about timelines.
type failoverState struct {
	timeline  atomic.Int32
	failovers atomic.Int64
}

// nudgePrimary helps a slot being created on a standby (standby mode): the
// standby's decoding waits for the primary to log its running transactions
// (the bgwriter does it every 15 s, and only while the primary writes), so
// while CREATE_REPLICATION_SLOT runs, pg_log_standby_snapshot() is called on
// cfg.PrimaryDSN every second. It returns the function that stops it. With
// no PrimaryDSN, on a primary or before 16, it does nothing.
func (c *Capture) nudgePrimary(ctx context.Context, conn *pgconn.PgConn, version int) func() {
	if c.cfg.PrimaryDSN == "" || version < 16 {
		return func() {}
	}
	if standby, err := inRecovery(ctx, conn); err != nil || !standby {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var pc *pgconn.PgConn
		defer func() {
			if pc != nil {
				closeConn(pc)
			}
		}()
		for {
			if pc == nil {
				pc, _ = pgconn.Connect(ctx, c.cfg.PrimaryDSN)
			}
			if pc != nil {
				if _, err := simpleQuery(ctx, pc, "SELECT pg_catalog.pg_log_standby_snapshot()"); err != nil {
					closeConn(pc)
					pc = nil
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return func() { cancel(); <-done }
}
