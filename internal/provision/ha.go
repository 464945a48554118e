package provision

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// High availability: failover slots (PostgreSQL 17+) on a primary, and
// standby mode (source.dsn a hot standby, PostgreSQL 16+).
//
// A failover slot survives the promotion of a standby only when the
// standby synchronizes slots: sync_replication_slots = on,
// hot_standby_feedback = on, a primary_slot_name, and a dbname in
// primary_conninfo (the slot sync worker connects to a database). Without
// synchronized_standby_slots on the primary naming the standbys' physical
// slots, the primary may send flusso-pg changes a standby has not received
// yet; after a promotion the new primary's slot would then be behind what
// flusso-pg confirmed, on a timeline that never had those changes.
//
// On a standby (standby mode) the slot is created and decoded there, and
// the exported snapshot works as on a primary (checked on 16, 17, 18), but
// the standby is read-only: the publication is created on the primary
// (source.primary_dsn) and reaches the standby by replication.

// Checks of high availability.
const (
	CheckFailoverSlot       = "failover_slot"
	CheckSyncStandbySlots   = "synchronized_standby_slots"
	CheckStandby            = "standby"
	CheckHotStandbyFeedback = "hot_standby_feedback"
	CheckPrimaryWalLevel    = "primary_wal_level"
)

// ErrStandbyReadOnly: source.dsn is a standby and the publication must be
// created or extended, which only the primary can do.
var ErrStandbyReadOnly = errors.New("source.dsn is a hot standby, which is read-only: the publication can only be created or extended on the primary")

// InRecovery reports whether the server q is connected to is a standby.
func InRecovery(ctx context.Context, q build.Querier) (bool, error) {
	var standby bool
	err := q.QueryRow(ctx, `SELECT pg_catalog.pg_is_in_recovery()`).Scan(&standby)
	return standby, err
}

// ha adds the verdicts about failover slots (on a primary of 17+) or about
// standby mode (on a standby).
func (in *inspection) ha(ctx context.Context, q build.Querier) error {
	standby, err := InRecovery(ctx, q)
	if err != nil {
		return err
	}
	in.standby = standby
	if standby {
		return in.standbyMode(ctx, q)
	}
	if in.r.Version < 17 {
		if in.cfg.Source.Failover == config.FailoverOn {
			in.r.add(Finding{Check: CheckFailoverSlot, Status: Fail,
				Message: fmt.Sprintf("source.failover is on, but PostgreSQL %d has no failover slots (new in 17): a failover loses the slot", in.r.Version),
				Fix:     "upgrade to PostgreSQL 17, or set source.failover: off"})
		}
		return nil
	}
	return in.failoverSlot(ctx, q)
}

func (in *inspection) failoverSlot(ctx context.Context, q build.Querier) error {
	r, name := in.r, in.cfg.Source.Slot
	var failover *bool
	err := q.QueryRow(ctx, `SELECT failover FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, name).Scan(&failover)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	off := in.cfg.Source.Failover == config.FailoverOff
	switch {
	case failover == nil && off:
		r.add(Finding{Check: CheckFailoverSlot, Status: Info, Message: fmt.Sprintf("source.failover is off: slot %s will be created without FAILOVER, so a promoted standby will not have it", name)})
	case failover == nil:
		r.add(Finding{Check: CheckFailoverSlot, Status: OK, Message: fmt.Sprintf("slot %s will be created as a failover slot (FAILOVER true)", name)})
	case *failover:
		r.add(Finding{Check: CheckFailoverSlot, Status: OK, Message: fmt.Sprintf("slot %s is a failover slot: standbys with sync_replication_slots = on keep a copy", name)})
	case off:
		r.add(Finding{Check: CheckFailoverSlot, Status: Info, Message: fmt.Sprintf("slot %s is not a failover slot (source.failover is off): a promoted standby will not have it", name),
			Fix: fmt.Sprintf("set source.failover: auto (follow then alters it), or on the primary over a replication connection: ALTER_REPLICATION_SLOT %s (FAILOVER true)", name)})
	default:
		r.add(Finding{Check: CheckFailoverSlot, Status: Warn, Message: fmt.Sprintf("slot %s is not a failover slot yet: flusso-pg follow makes it one (source.failover: %s)", name, in.cfg.Source.Failover),
			Fix: fmt.Sprintf("flusso-pg follow does it, or on the primary over a replication connection (psql \"dbname=... replication=database\"): ALTER_REPLICATION_SLOT %s (FAILOVER true)", name)})
	}
	var sss string
	if err := q.QueryRow(ctx, `SELECT current_setting('synchronized_standby_slots')`).Scan(&sss); err != nil {
		return err
	}
	in.syncStandbySlots = splitList(sss)
	if sss == "" {
		r.add(Finding{Check: CheckSyncStandbySlots, Status: Info,
			Message: "synchronized_standby_slots is empty: if a standby is to take over with the slot, the primary may send flusso-pg changes that standby has not received, and after a promotion they would be neither on the new primary nor sent again",
			Fix:     "ALTER SYSTEM SET synchronized_standby_slots = '<the standbys'' physical slots>'; SELECT pg_reload_conf();"})
	} else {
		r.add(Finding{Check: CheckSyncStandbySlots, Status: OK, Message: fmt.Sprintf("synchronized_standby_slots is %s: changes reach flusso-pg only after those standbys have them", sss)})
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.Trim(strings.TrimSpace(p), `"`); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// standbyMode checks source.dsn as a standby: logical decoding there needs
// PostgreSQL 16, hot_standby_feedback (or vacuum on the primary removes
// catalog rows the slot needs and the slot is invalidated), and
// wal_level = logical on the primary.
func (in *inspection) standbyMode(ctx context.Context, q build.Querier) error {
	r := in.r
	if r.Version < 16 {
		r.add(Finding{Check: CheckStandby, Status: Fail,
			Message: fmt.Sprintf("source.dsn is a standby, and PostgreSQL %d cannot decode on a standby (logical decoding on a standby is new in 16)", r.Version),
			Fix:     "point source.dsn at the primary, or upgrade to PostgreSQL 16"})
		return nil
	}
	r.add(Finding{Check: CheckStandby, Status: Info, Message: "source.dsn is a hot standby: the slot, the stream, the backfill and every document query run there (standby mode); the publication is created on the primary"})
	if in.cfg.Source.Failover == config.FailoverOn {
		r.add(Finding{Check: CheckFailoverSlot, Status: Fail,
			Message: "source.failover is on, but a slot on a standby cannot be a failover slot",
			Fix:     "set source.failover: auto or off"})
	}
	var hsf string
	if err := q.QueryRow(ctx, `SELECT current_setting('hot_standby_feedback')`).Scan(&hsf); err != nil {
		return err
	}
	if hsf == "on" {
		r.add(Finding{Check: CheckHotStandbyFeedback, Status: OK, Message: "hot_standby_feedback is on"})
	} else {
		r.add(Finding{Check: CheckHotStandbyFeedback, Status: Fail,
			Message: "hot_standby_feedback is off on the standby: vacuum on the primary can remove catalog rows the slot still needs, and the server then invalidates the slot",
			Fix:     "ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();  -- on the standby; and give it a physical slot on the primary (primary_slot_name)"})
	}
	if in.cfg.Source.PrimaryDSN == "" {
		r.add(Finding{Check: CheckPrimaryWalLevel, Status: Info,
			Message: "the primary's wal_level cannot be read from a standby (decoding there fails if it is not logical); set source.primary_dsn so check reads it and follow can create the publication there"})
		return nil
	}
	conn, err := pgx.Connect(ctx, in.cfg.Source.PrimaryDSN)
	if err != nil {
		r.add(Finding{Check: CheckPrimaryWalLevel, Status: Fail,
			Message: fmt.Sprintf("cannot connect to source.primary_dsn %s: %v", config.RedactDSN(in.cfg.Source.PrimaryDSN), err),
			Fix:     "check source.primary_dsn"})
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var level string
	var recovery bool
	if err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), pg_is_in_recovery()`).Scan(&level, &recovery); err != nil {
		return fmt.Errorf("primary: %w", err)
	}
	switch {
	case recovery:
		r.add(Finding{Check: CheckPrimaryWalLevel, Status: Fail,
			Message: "source.primary_dsn is a standby too: it must be the primary", Fix: "point source.primary_dsn at the primary"})
	case level != "logical":
		r.add(Finding{Check: CheckPrimaryWalLevel, Status: Fail,
			Message: fmt.Sprintf("wal_level is %s on the primary: decoding on a standby needs wal_level = logical on the primary", level),
			Fix:     "on the primary: ALTER SYSTEM SET wal_level = logical;  -- then restart it"})
	default:
		r.add(Finding{Check: CheckPrimaryWalLevel, Status: OK, Message: "wal_level is logical on the primary"})
	}
	return nil
}

// ensureOnStandby makes the publication ready when source.dsn is a standby:
// on the primary (source.primary_dsn) as Ensure would, then it waits until
// the standby has replayed it. Without a primary_dsn it returns
// ErrStandbyReadOnly with the SQL to run on the primary.
func (in *inspection) ensureOnStandby(ctx context.Context, standby Conn, plan *build.Plan, store *state.Store, log *zap.Logger) ([]string, error) {
	if len(in.missing()) == 0 && in.pub != nil {
		return nil, nil
	}
	if in.cfg.Source.PrimaryDSN == "" {
		var sql string
		if in.pub == nil {
			sql = createSQL(in.cfg.Source.Publication, in.missing(), false)
		} else {
			sql = addSQL(in.cfg.Source.Publication, in.missing())
		}
		return nil, fmt.Errorf("%w; run on the primary: %s  -- or set source.primary_dsn and flusso-pg does it", ErrStandbyReadOnly, sql)
	}
	primary, err := pgx.Connect(ctx, in.cfg.Source.PrimaryDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to source.primary_dsn %s: %w", config.RedactDSN(in.cfg.Source.PrimaryDSN), err)
	}
	defer primary.Close(context.WithoutCancel(ctx))
	pin, err := inspect(ctx, primary, in.cfg, plan)
	if err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	actions, err := pin.apply(ctx, primary, store, log)
	if err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	// The standby sees the publication once it has replayed the commit.
	var lsn string
	if err := primary.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		return actions, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var replayed bool
		if err := standby.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, lsn).Scan(&replayed); err != nil {
			return actions, err
		}
		if replayed {
			return actions, nil
		}
		if time.Now().After(deadline) {
			return actions, fmt.Errorf("the standby has not replayed the publication made on the primary (at %s) within 2 minutes: is it streaming from that primary?", lsn)
		}
		select {
		case <-ctx.Done():
			return actions, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// InspectStandby checks one standby that is to take over with the slot
// (check --standby DSN): it must synchronize failover slots, and hold the
// slot, synced and not behind the primary's. primary is the connection to
// source.dsn (the primary). The findings go into r.
func InspectStandby(ctx context.Context, r *Report, primary build.Querier, cfg *config.Config, dsn string) {
	s := &standbyCheck{r: r, primary: primary, where: config.RedactDSN(dsn)}
	if pc, err := pgconn.ParseConfig(dsn); err == nil {
		s.where = fmt.Sprintf("%s:%d", pc.Host, pc.Port)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		s.add(Fail, fmt.Sprintf("cannot connect: %v", err), "check the --standby connection string and pg_hba.conf on that server")
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	s.conn = conn
	if !s.canSync(ctx) {
		return
	}
	settings, err := s.settings(ctx)
	if err != nil {
		s.add(Fail, fmt.Sprintf("cannot read its settings: %v", err), "")
		return
	}
	physical := s.settingVerdicts(settings)
	s.standbySlots(ctx, physical)
	s.slot(ctx, cfg.Source.Slot)
}

// standbyCheck is one InspectStandby: the standby's connection, the
// primary's, and where the findings go.
type standbyCheck struct {
	r       *Report
	where   string    // the standby's host:port (its DSN redacted when it does not parse)
	conn    *pgx.Conn // the standby
	primary build.Querier
}

func (s *standbyCheck) add(status Status, msg, fix string) {
	s.r.add(Finding{Check: CheckStandby, Status: status, Message: "standby " + s.where + ": " + msg, Fix: fix})
}

// canSync reports whether the server is a standby of PostgreSQL 17 or
// newer (which synchronizes slots); a failing finding says why not.
func (s *standbyCheck) canSync(ctx context.Context) bool {
	var recovery bool
	var version int
	if err := s.conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('server_version_num')::int / 10000`).Scan(&recovery, &version); err != nil {
		s.add(Fail, fmt.Sprintf("cannot read it: %v", err), "")
		return false
	}
	if !recovery {
		s.add(Fail, "is not a standby (pg_is_in_recovery() is false)", "pass the standbys with --standby, the primary as source.dsn")
		return false
	}
	if version < 17 {
		s.add(Fail, fmt.Sprintf("PostgreSQL %d does not synchronize replication slots (new in 17): after its promotion the slot is gone and flusso-pg must start over with --resync", version),
			"upgrade the cluster to PostgreSQL 17")
		return false
	}
	return true
}

// settings reads the standby's settings that slot synchronization needs.
func (s *standbyCheck) settings(ctx context.Context) (map[string]string, error) {
	settings := map[string]string{}
	rows, err := s.conn.Query(ctx, `SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN ('sync_replication_slots', 'hot_standby_feedback', 'primary_slot_name', 'primary_conninfo')`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k, v string
		if rows.Scan(&k, &v) == nil {
			settings[k] = v
		}
	}
	rows.Close()
	return settings, rows.Err()
}

// settingVerdicts reports on each of those settings and returns the
// standby's physical slot (primary_slot_name; "" when it has none).
func (s *standbyCheck) settingVerdicts(settings map[string]string) string {
	set := func(name, want, why, fix string) {
		if settings[name] == want {
			s.add(OK, name+" is "+want, "")
		} else {
			s.add(Fail, fmt.Sprintf("%s is %q: %s", name, settings[name], why), fix)
		}
	}
	set("sync_replication_slots", "on", "the standby does not copy failover slots, so after its promotion the slot is gone",
		"ALTER SYSTEM SET sync_replication_slots = on; SELECT pg_reload_conf();  -- on the standby")
	set("hot_standby_feedback", "on", "slot synchronization needs it (without it the synced slot can be invalidated)",
		"ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();  -- on the standby")
	physical := settings["primary_slot_name"]
	if physical == "" {
		s.add(Fail, "primary_slot_name is empty: slot synchronization needs the standby to stream through a physical slot",
			"on the primary: SELECT pg_create_physical_replication_slot('standby1'); on the standby: ALTER SYSTEM SET primary_slot_name = 'standby1'; SELECT pg_reload_conf();")
	} else {
		s.add(OK, "primary_slot_name is "+physical, "")
	}
	switch ci, ok := settings["primary_conninfo"]; {
	case !ok || ci == "" || ci == "********":
		s.add(Warn, "primary_conninfo cannot be read (it is shown to superusers and pg_read_all_settings only): check by hand that it names a dbname, which the slot sync worker needs",
			"GRANT pg_read_all_settings TO <role>;  -- to let check read it")
	case dbnameRE.MatchString(ci):
		s.add(OK, "primary_conninfo names a dbname", "")
	default:
		s.add(Fail, "primary_conninfo names no dbname: the slot sync worker needs one to connect to the primary",
			"ALTER SYSTEM SET primary_conninfo = '... dbname=<database>'; SELECT pg_reload_conf();  -- on the standby")
	}
	return physical
}

// standbySlots warns when the standby's physical slot is not in the
// primary's synchronized_standby_slots (PostgreSQL 17 and newer).
func (s *standbyCheck) standbySlots(ctx context.Context, physical string) {
	if physical == "" || s.r.Version < 17 {
		return
	}
	var sss string
	if err := s.primary.QueryRow(ctx, `SELECT current_setting('synchronized_standby_slots')`).Scan(&sss); err == nil {
		if !containsSlot(splitList(sss), physical) {
			s.add(Warn, fmt.Sprintf("its physical slot %s is not in the primary's synchronized_standby_slots (%q): the primary may send flusso-pg changes this standby does not have yet", physical, sss),
				fmt.Sprintf("on the primary: ALTER SYSTEM SET synchronized_standby_slots = '%s'; SELECT pg_reload_conf();", strings.Join(append(splitList(sss), physical), ",")))
		}
	}
}

// slot reports on the standby's copy of the slot: there, synced, valid,
// and how far behind the primary's confirmed position.
func (s *standbyCheck) slot(ctx context.Context, slot string) {
	var primaryConfirmed *string
	err := s.primary.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot).Scan(&primaryConfirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		s.add(Info, fmt.Sprintf("slot %s does not exist on the primary yet, so not on the standby either", slot), "")
		return
	}
	if err != nil {
		s.add(Fail, fmt.Sprintf("cannot read slot %s on the primary: %v", slot, err), "")
		return
	}
	var synced bool
	var reason string
	var behind *int64
	err = s.conn.QueryRow(ctx, `SELECT synced, coalesce(invalidation_reason, ''),
  pg_wal_lsn_diff($2::pg_lsn, confirmed_flush_lsn)::bigint
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot, primaryConfirmed).Scan(&synced, &reason, &behind)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		s.add(Fail, fmt.Sprintf("slot %s is not on the standby: after its promotion flusso-pg would have to start over with --resync", slot),
			fmt.Sprintf("make it a failover slot (source.failover: auto, then flusso-pg follow; or ALTER_REPLICATION_SLOT %s (FAILOVER true)), with the settings above; the slot sync worker copies it within seconds once the slot moves", slot))
	case err != nil:
		s.add(Fail, fmt.Sprintf("cannot read slot %s: %v", slot, err), "")
	case !synced:
		s.add(Fail, fmt.Sprintf("slot %s on the standby is not a synced copy (synced = false): it was created there, it is not the primary's", slot), "drop it on the standby; the slot sync worker then copies the primary's")
	case reason != "":
		s.add(Fail, fmt.Sprintf("slot %s on the standby is invalidated (%s)", slot, reason), "on the standby: SELECT pg_drop_replication_slot('"+slot+"');  -- the sync worker copies it again")
	case behind != nil && *behind > 0:
		s.add(Warn, fmt.Sprintf("slot %s is synced but %s behind the primary's confirmed position: after a promotion now, those changes would be delivered again (never lost)", slot, bytes(*behind)), "")
	default:
		s.add(OK, fmt.Sprintf("slot %s is synced and up to date with the primary's", slot), "")
	}
}

var dbnameRE = regexp.MustCompile(`(^|\s)dbname\s*=`)

func containsSlot(list []string, name string) bool {
	return slices.Contains(list, name) || slices.Contains(list, "*")
}
