package provision

import (
	"context"
	"fmt"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
)

// inspection is what Inspect read, kept for Ensure to act on.
type inspection struct {
	r      *Report
	cfg    *config.Config
	tables []*table

	beforeAdd func(indexes []string) error // EnsureWith's

	superuser   bool
	replication bool
	createDB    bool

	pub *publication // nil when the publication does not exist

	standby          bool     // source.dsn is a hot standby (ha.go)
	syncStandbySlots []string // the primary's synchronized_standby_slots
}

// Inspect checks, read-only, everything flusso-pg needs from the server and
// the role it connects as: settings, privileges, the publication's coverage
// of every table the indexes read, replica identities that would make
// UPDATE and DELETE fail, and the slot. plan may be nil; with a plan the
// column lists are checked against the exact columns capture needs.
// Problems found by internal/build are merged with Report.AddProblems.
func Inspect(ctx context.Context, q build.Querier, cfg *config.Config, plan *build.Plan) (*Report, error) {
	in, err := inspect(ctx, q, cfg, plan)
	if err != nil {
		return nil, err
	}
	return in.r, nil
}

func inspect(ctx context.Context, q build.Querier, cfg *config.Config, plan *build.Plan) (*inspection, error) {
	mode := cfg.Source.Provision
	if mode == "" {
		mode = config.ProvisionAuto
	}
	in := &inspection{cfg: cfg, r: &Report{Publication: cfg.Source.Publication, Slot: cfg.Source.Slot, Provision: mode, Ready: true}}
	tables, err := configTables(cfg)
	if err != nil {
		return nil, err
	}
	in.tables = tables
	if err := in.server(ctx, q); err != nil {
		return nil, fmt.Errorf("check server settings: %w", err)
	}
	if err := in.role(ctx, q); err != nil {
		return nil, fmt.Errorf("check role: %w", err)
	}
	if err := resolve(ctx, q, in.tables, plan); err != nil {
		return nil, err
	}
	in.tablePrivileges()
	if err := in.publication(ctx, q); err != nil {
		return nil, fmt.Errorf("check publication %s: %w", cfg.Source.Publication, err)
	}
	in.identities()
	if err := in.slot(ctx, q); err != nil {
		return nil, fmt.Errorf("check slot %s: %w", cfg.Source.Slot, err)
	}
	if err := in.ha(ctx, q); err != nil {
		return nil, fmt.Errorf("check high availability: %w", err)
	}
	return in, nil
}

func (in *inspection) auto() bool { return in.r.Provision == config.ProvisionAuto }

func (in *inspection) roleName() string { return change.QuoteIdentIfNeeded(in.r.Role) }

func (in *inspection) pubName() string { return change.QuoteIdentIfNeeded(in.cfg.Source.Publication) }

const serverSQL = `SELECT current_setting('server_version'), current_setting('server_version_num')::int,
  current_setting('wal_level'),
  current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
  current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int,
  EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1),
  current_user, current_database()`

func (in *inspection) server(ctx context.Context, q build.Querier) error {
	var (
		num                                     int
		walLevel                                string
		maxSlots, usedSlots, maxSenders, sender int
		slotExists                              bool
	)
	r := in.r
	err := q.QueryRow(ctx, serverSQL, in.cfg.Source.Slot).Scan(&r.Server, &num, &walLevel, &maxSlots, &usedSlots,
		&maxSenders, &sender, &slotExists, &r.Role, &r.Database)
	if err != nil {
		return err
	}
	r.Version = num / 10000
	switch {
	case r.Version < 10:
		r.add(Finding{Check: CheckServerVersion, Status: Fail, Message: fmt.Sprintf("PostgreSQL %s has no pgoutput logical decoding: flusso-pg needs PostgreSQL 10 or newer, and is tested on 14 to 18", r.Server),
			Fix: "upgrade the server"})
	case r.Version < 14:
		r.add(Finding{Check: CheckServerVersion, Status: Warn, Message: fmt.Sprintf("PostgreSQL %s is older than the versions flusso-pg is tested on (14 to 18)", r.Server)})
	default:
		r.add(Finding{Check: CheckServerVersion, Status: OK, Message: "PostgreSQL " + r.Server})
	}
	if walLevel == "logical" {
		r.add(Finding{Check: CheckWalLevel, Status: OK, Message: "wal_level is logical"})
	} else {
		r.add(Finding{Check: CheckWalLevel, Status: Fail,
			Message: fmt.Sprintf("wal_level is %s: logical decoding needs wal_level = logical", walLevel),
			Fix:     "ALTER SYSTEM SET wal_level = logical;  -- then restart the server (on Amazon RDS/Aurora: set rds.logical_replication = 1 in the parameter group and reboot)"})
	}
	switch {
	case slotExists:
		r.add(Finding{Check: CheckReplicationSlot, Status: OK, Message: fmt.Sprintf("slot %s exists (%d of max_replication_slots = %d in use)", in.cfg.Source.Slot, usedSlots, maxSlots)})
	case usedSlots < maxSlots:
		r.add(Finding{Check: CheckReplicationSlot, Status: OK, Message: fmt.Sprintf("%d of max_replication_slots = %d in use: room for slot %s", usedSlots, maxSlots, in.cfg.Source.Slot)})
	default:
		r.add(Finding{Check: CheckReplicationSlot, Status: Fail,
			Message: fmt.Sprintf("all %d replication slots (max_replication_slots) are in use: there is no room for slot %s", maxSlots, in.cfg.Source.Slot),
			Fix:     fmt.Sprintf("ALTER SYSTEM SET max_replication_slots = %d;  -- then restart the server; or drop an unused slot: SELECT pg_drop_replication_slot('name');", maxSlots+1)})
	}
	if sender < maxSenders {
		r.add(Finding{Check: CheckWalSenders, Status: OK, Message: fmt.Sprintf("%d of max_wal_senders = %d in use", sender, maxSenders)})
	} else {
		r.add(Finding{Check: CheckWalSenders, Status: Fail,
			Message: fmt.Sprintf("all %d WAL senders (max_wal_senders) are in use: flusso-pg could not open its replication connection", maxSenders),
			Fix:     fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d;  -- then restart the server", maxSenders+1)})
	}
	return nil
}

const roleSQL = `SELECT rolsuper, rolreplication, has_database_privilege(current_database(), 'CREATE'),
  EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication')
FROM pg_catalog.pg_roles WHERE rolname = current_user`

func (in *inspection) role(ctx context.Context, q build.Querier) error {
	var rds, rdsMember bool
	if err := q.QueryRow(ctx, roleSQL).Scan(&in.superuser, &in.replication, &in.createDB, &rds); err != nil {
		return err
	}
	if rds {
		if err := q.QueryRow(ctx, `SELECT pg_has_role('rds_replication', 'MEMBER')`).Scan(&rdsMember); err != nil {
			return err
		}
	}
	r := in.r
	switch {
	case in.superuser:
		r.add(Finding{Check: CheckReplicationRole, Status: OK, Message: fmt.Sprintf("role %s is a superuser", r.Role)})
	case in.replication:
		r.add(Finding{Check: CheckReplicationRole, Status: OK, Message: fmt.Sprintf("role %s has the REPLICATION attribute", r.Role)})
	case rdsMember:
		in.replication = true
		r.add(Finding{Check: CheckReplicationRole, Status: OK, Message: fmt.Sprintf("role %s is a member of rds_replication", r.Role)})
	default:
		r.add(Finding{Check: CheckReplicationRole, Status: Fail,
			Message: fmt.Sprintf("role %s has neither the REPLICATION attribute nor superuser, so it cannot create the slot or stream changes", r.Role),
			Fix:     fmt.Sprintf("ALTER ROLE %s REPLICATION;  -- on Amazon RDS/Aurora: GRANT rds_replication TO %s;", in.roleName(), in.roleName())})
	}
	return nil
}

// tablePrivileges reports tables that do not exist, schemas the role may
// not use and tables it may not read.
func (in *inspection) tablePrivileges() {
	r := in.r
	readable := 0
	for _, t := range in.tables {
		if !t.Exists {
			where := "in schema " + change.QuoteIdentIfNeeded(t.Parsed.Schema)
			if t.Parsed.Schema == "" {
				where = "on the search_path"
			}
			r.add(Finding{Check: CheckTable, Status: Fail, Index: t.index(), Table: t.name(),
				Message: fmt.Sprintf("table %s does not exist (looked up %s)", t.name(), where),
				Fix:     "create the table, or correct its name in the config (schema.table, with double quotes around a part that has upper-case letters)"})
			continue
		}
		if !t.publishable() {
			r.add(Finding{Check: CheckTable, Status: Warn, Index: t.index(), Table: t.name(),
				Message: fmt.Sprintf("%s is a %s, not a table: it cannot be in a publication, so documents do not follow its changes", t.name(), kindName(t.Kind)),
				Fix:     "read the tables it is built from instead"})
		}
		if !t.SchemaUsage && !in.superuser {
			r.add(Finding{Check: CheckSchemaUsage, Status: Fail, Index: t.index(), Table: t.name(),
				Message: fmt.Sprintf("role %s may not use schema %s, so it cannot read table %s", r.Role, change.QuoteIdentIfNeeded(t.Table.Schema), t.name()),
				Fix:     fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s;", change.QuoteIdentIfNeeded(t.Table.Schema), in.roleName())})
		}
		if !t.CanSelect {
			fix := fmt.Sprintf("GRANT SELECT ON %s TO %s;", t.name(), in.roleName())
			if r.Version >= 14 {
				fix += fmt.Sprintf("  -- or, for every table: GRANT pg_read_all_data TO %s;", in.roleName())
			}
			r.add(Finding{Check: CheckSelect, Status: Fail, Index: t.index(), Table: t.name(),
				Message: fmt.Sprintf("role %s has no SELECT on table %s, so documents cannot be built from it", r.Role, t.name()),
				Fix:     fix})
			continue
		}
		readable++
	}
	if readable > 0 && readable == len(in.tables) {
		r.add(Finding{Check: CheckSelect, Status: OK, Message: fmt.Sprintf("role %s can read all %d tables the indexes read", r.Role, readable)})
	}
}

// identities reports tables that have no replica identity: once such a
// table is in a publication that publishes UPDATE and DELETE, Postgres
// refuses UPDATE and DELETE on it. Whether the identity carries the columns
// a document needs is internal/build's verdict.
func (in *inspection) identities() {
	for _, t := range in.tables {
		if !t.publishable() || t.Kind == "p" || t.hasIdentity() {
			continue
		}
		why := "REPLICA IDENTITY NOTHING"
		if t.Identity == "d" {
			why = "REPLICA IDENTITY DEFAULT and no primary key"
		}
		effect := "once it is in publication " + in.pubName() + ", Postgres refuses every UPDATE and DELETE on it"
		if t.inPub {
			effect = "it is in publication " + in.pubName() + ", so Postgres already refuses every UPDATE and DELETE on it"
		}
		in.r.add(Finding{Check: CheckReplicaIdentity, Status: Fail, Index: t.index(), Table: t.name(),
			Message: fmt.Sprintf("table %s has %s, so its old rows cannot be sent: %s", t.name(), why, effect),
			Fix:     fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", t.name())})
	}
}

func kindName(kind string) string {
	switch kind {
	case "v":
		return "view"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	}
	return "relation of kind " + kind
}
