package provision

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/build"
)

// SlotInfo is what pg_replication_slots says about one slot.
type SlotInfo struct {
	Name      string
	Plugin    string // "" for a physical slot
	Type      string // logical | physical
	Database  string // "" for a physical slot
	Active    bool
	ActivePID int32 // 0 when not active
	// WALStatus is reserved, extended, unreserved or lost (PostgreSQL 13+).
	WALStatus string
	// Retained is the WAL the slot holds back, in bytes (-1 when unknown).
	Retained int64
	// SafeWALSize is how many more bytes may be written before the slot is
	// in danger of losing WAL (-1 when unlimited or unknown).
	SafeWALSize int64
	// InvalidationReason is why the slot was invalidated (PostgreSQL 17+; "" when it was not).
	InvalidationReason string
}

const slotSQL = `SELECT coalesce(plugin::text, ''), slot_type, coalesce(database::text, ''), active, coalesce(active_pid, 0),
  coalesce(wal_status, ''),
  coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::bigint, -1),
  coalesce(safe_wal_size, -1), %s
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`

// ReadSlot returns the slot called name, or nil when there is none.
func ReadSlot(ctx context.Context, q build.Querier, name string, version int) (*SlotInfo, error) {
	reason := "''"
	if version >= 17 {
		reason = "coalesce(invalidation_reason, '')"
	}
	s := SlotInfo{Name: name}
	err := q.QueryRow(ctx, fmt.Sprintf(slotSQL, reason), name).Scan(&s.Plugin, &s.Type, &s.Database, &s.Active, &s.ActivePID,
		&s.WALStatus, &s.Retained, &s.SafeWALSize, &s.InvalidationReason)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

func (in *inspection) slot(ctx context.Context, q build.Querier) error {
	r, name := in.r, in.cfg.Source.Slot
	s, err := ReadSlot(ctx, q, name, r.Version)
	if err != nil {
		return err
	}
	var keep string
	if err := q.QueryRow(ctx, `SELECT current_setting('max_slot_wal_keep_size')`).Scan(&keep); err != nil {
		return err
	}
	switch {
	case s == nil:
		r.add(Finding{Check: CheckSlot, Status: Info, Message: fmt.Sprintf("slot %s does not exist yet: flusso-pg follow creates it, after the publication", name)})
	case s.Type != "logical" || s.Plugin != "pgoutput":
		r.add(Finding{Check: CheckSlot, Status: Fail,
			Message: fmt.Sprintf("slot %s is a %s slot with plugin %q, not a logical pgoutput slot: it is not flusso-pg's", name, s.Type, s.Plugin),
			Fix:     "choose another name in source.slot"})
	case s.Database != r.Database:
		r.add(Finding{Check: CheckSlot, Status: Fail,
			Message: fmt.Sprintf("slot %s belongs to database %s, not %s", name, s.Database, r.Database),
			Fix:     "choose another name in source.slot"})
	case s.WALStatus == "lost" || s.InvalidationReason != "":
		why := "the WAL it needs is gone (wal_status lost)"
		if s.InvalidationReason != "" {
			why = "invalidation reason: " + s.InvalidationReason
		}
		r.add(Finding{Check: CheckSlot, Status: Fail,
			Message: fmt.Sprintf("slot %s is invalidated (%s): it cannot stream again, and changes since it was last read are lost", name, why),
			Fix:     "flusso-pg follow --resync  -- a fresh slot and a full backfill; or: flusso-pg drop, then flusso-pg follow"})
	default:
		msg := fmt.Sprintf("slot %s exists (pgoutput, wal_status %s, retains %s of WAL)", name, s.WALStatus, bytes(s.Retained))
		switch {
		case s.Active:
			r.add(Finding{Check: CheckSlot, Status: Warn,
				Message: fmt.Sprintf("%s and is in use by process %d (a running flusso-pg follow?); a second follow cannot use it at the same time", msg, s.ActivePID),
				Fix:     fmt.Sprintf("stop that process; or end it: SELECT pg_terminate_backend(%d);", s.ActivePID)})
		case s.WALStatus == "unreserved":
			r.add(Finding{Check: CheckSlot, Status: Warn,
				Message: fmt.Sprintf("%s: it holds more WAL than max_slot_wal_keep_size = %s allows and will be invalidated at the next checkpoint unless flusso-pg follow catches up now", msg, keep),
				Fix:     "run flusso-pg follow now"})
		case s.WALStatus == "extended":
			r.add(Finding{Check: CheckSlot, Status: Warn,
				Message: fmt.Sprintf("%s: it holds more WAL than max_wal_size; run flusso-pg follow so it catches up", msg)})
		default:
			r.add(Finding{Check: CheckSlot, Status: OK, Message: msg + ", not in use"})
		}
	}
	if keep == "-1" {
		r.add(Finding{Check: CheckWalKeep, Status: Info,
			Message: "max_slot_wal_keep_size is -1 (unlimited): while flusso-pg is stopped, the slot keeps WAL until the disk fills",
			Fix:     "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();  -- a slot past the limit is invalidated and needs flusso-pg follow --resync"})
	} else {
		r.add(Finding{Check: CheckWalKeep, Status: OK, Message: fmt.Sprintf("max_slot_wal_keep_size is %s: a slot that falls further behind is invalidated (then flusso-pg follow --resync)", keep)})
	}
	return nil
}

// bytes formats a byte count for people.
func bytes(n int64) string {
	switch {
	case n < 0:
		return "an unknown amount"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	}
}
