package provision

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
)

// inspection is what Inspect read, kept for Ensure to act on.
type inspection struct {
	r      *Report
	cfg    *config.Config
	tables []*table

	superuser   bool
	replication bool
	createDB    bool

	pub *publication // nil when the publication does not exist

	standby          bool     // source.dsn is a hot standby (ha.go)
	syncStandbySlots []string // the primary's synchronized_standby_slots
}

type publication struct {
	AllTables                        bool
	Insert, Update, Delete, Truncate bool
	ViaRoot                          bool
	Owned                            bool
	Owner                            string
	Count                            int
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

// missing lists the existing tables the publication does not publish
// (every existing table when there is no publication).
func (in *inspection) missing() []*table {
	var out []*table
	for _, t := range in.tables {
		if t.publishable() && !t.inPub {
			out = append(out, t)
		}
	}
	return out
}

// addable reports whether flusso-pg may and can add t to the publication.
func (in *inspection) addable(t *table) bool {
	if !t.publishable() || (t.Kind != "p" && !t.hasIdentity()) {
		return false
	}
	if in.superuser {
		return true
	}
	if !t.Owned {
		return false
	}
	if in.pub == nil {
		return in.createDB
	}
	return in.pub.Owned
}

const publicationSQL = `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot,
  pg_has_role(pubowner, 'USAGE'), pg_get_userbyid(pubowner),
  (SELECT count(*) FROM pg_catalog.pg_publication_tables t WHERE t.pubname = p.pubname)::int
FROM pg_catalog.pg_publication p WHERE pubname = $1`

// A table is published when pg_publication_tables lists it (it expands FOR
// ALL TABLES and FOR TABLES IN SCHEMA), when it is a member itself, or, for
// a partitioned table without publish_via_partition_root, when every leaf
// partition is listed.
const coveredSQL = `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p WHERE p.pubname = $1 AND p.schemaname = $2 AND p.tablename = $3)
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid
             WHERE pb.pubname = $1 AND pr.prrelid = $4)
  OR ($5 AND EXISTS (SELECT 1 FROM pg_partition_tree($4::oid::regclass) t WHERE t.isleaf)
      AND NOT EXISTS (SELECT 1 FROM pg_partition_tree($4::oid::regclass) t
                      JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE t.isleaf AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p
                                                     WHERE p.pubname = $1 AND p.schemaname = n.nspname AND p.tablename = c.relname)))`

// ancestorSQL finds the topmost ancestor of a partition that the
// publication publishes: with publish_via_partition_root, the partition's
// changes arrive under that ancestor's name.
const ancestorSQL = `SELECT coalesce((SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
  FROM pg_partition_ancestors($2::oid::regclass) WITH ORDINALITY AS a(relid, level)
  JOIN pg_catalog.pg_class c ON c.oid = a.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE a.relid <> $2::oid AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p
                                       WHERE p.pubname = $1 AND p.schemaname = n.nspname AND p.tablename = c.relname)
  ORDER BY a.level DESC LIMIT 1), '')`

const filterSQL = `SELECT coalesce(rowfilter::text, ''), coalesce(attnames::text[], '{}')
FROM pg_catalog.pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3`

func (in *inspection) publication(ctx context.Context, q build.Querier) error {
	r, name := in.r, in.cfg.Source.Publication
	var p publication
	err := q.QueryRow(ctx, publicationSQL, name).Scan(&p.AllTables, &p.Insert, &p.Update, &p.Delete, &p.Truncate, &p.ViaRoot, &p.Owned, &p.Owner, &p.Count)
	switch {
	case err == pgx.ErrNoRows:
	case err != nil:
		return err
	default:
		in.pub = &p
	}
	if in.pub != nil {
		for _, t := range in.tables {
			if !t.publishable() {
				continue
			}
			if t.IsPartition && p.ViaRoot {
				if err := q.QueryRow(ctx, ancestorSQL, name, t.OID).Scan(&t.viaAncestor); err != nil {
					return err
				}
			}
			if err := q.QueryRow(ctx, coveredSQL, name, t.Table.Schema, t.Table.Name, t.OID, t.Kind == "p").Scan(&t.inPub); err != nil {
				return err
			}
			// Published, under the ancestor's name: reported below.
			t.inPub = t.inPub || t.viaAncestor != ""
		}
	}
	missing := in.missing()
	partitioned := slices.ContainsFunc(in.tables, func(t *table) bool { return t.Exists && t.Kind == "p" })

	// The publication itself.
	switch {
	case in.pub == nil:
		f := Finding{Check: CheckPublication, Status: Fail, Message: fmt.Sprintf("publication %s does not exist", name), Fix: createSQL(name, missing, partitioned)}
		if in.auto() && slices.ContainsFunc(missing, in.addable) {
			f.Status = Warn
			f.Message += ": flusso-pg will create it for the tables it can add (provision: auto)"
		} else if in.auto() {
			f.Message += ", and flusso-pg cannot create it (see the verdicts below)"
		}
		r.add(f)
	case p.AllTables:
		r.add(Finding{Check: CheckPublication, Status: OK, Message: fmt.Sprintf("publication %s is FOR ALL TABLES: it publishes every table", name)})
	case p.Count == 0:
		r.add(Finding{Check: CheckPublication, Status: Warn, Message: fmt.Sprintf("publication %s exists but publishes no tables", name), Fix: addSQL(name, missing)})
	default:
		r.add(Finding{Check: CheckPublication, Status: OK, Message: fmt.Sprintf("publication %s exists and publishes %d table(s)", name, p.Count)})
	}

	// Who may create or extend it.
	need := Info
	if in.auto() {
		need = Fail
	}
	if in.pub == nil {
		if in.superuser || in.createDB {
			r.add(Finding{Check: CheckCreate, Status: OK, Message: fmt.Sprintf("role %s may create publications in database %s (CREATE on the database)", r.Role, r.Database)})
		} else {
			r.add(Finding{Check: CheckCreate, Status: need,
				Message: fmt.Sprintf("role %s has no CREATE on database %s, so flusso-pg cannot create publication %s", r.Role, r.Database, name),
				Fix:     fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;  -- or create the publication yourself: %s", change.QuoteIdentIfNeeded(r.Database), in.roleName(), createSQL(name, missing, partitioned))})
		}
	} else if len(missing) > 0 && !p.AllTables && !p.Owned && !in.superuser {
		r.add(Finding{Check: CheckOwnership, Status: need,
			Message: fmt.Sprintf("role %s does not own publication %s (its owner is %s), so flusso-pg cannot add tables to it", r.Role, name, p.Owner),
			Fix:     fmt.Sprintf("ALTER PUBLICATION %s OWNER TO %s;  -- or, as %s: %s", in.pubName(), in.roleName(), change.QuoteIdentIfNeeded(p.Owner), addSQL(name, missing))})
	}
	for _, t := range missing {
		// Without auto, the coverage verdict's fix is the whole story.
		if t.Owned || in.superuser || !in.auto() {
			continue
		}
		fix := fmt.Sprintf("%s  -- run as %s or a superuser; or: ALTER TABLE %s OWNER TO %s;",
			addSQL(name, []*table{t}), change.QuoteIdentIfNeeded(t.Owner), t.name(), in.roleName())
		if in.pub == nil {
			// One CREATE PUBLICATION (the publication verdict) covers every
			// table: a second one would fail when the fixes are run in order.
			fix = fmt.Sprintf("ALTER TABLE %s OWNER TO %s;  -- so that flusso-pg may create the publication; or run the CREATE PUBLICATION above as %s or a superuser",
				t.name(), in.roleName(), change.QuoteIdentIfNeeded(t.Owner))
		}
		r.add(Finding{Check: CheckOwnership, Status: need, Index: t.index(), Table: t.name(),
			Message: fmt.Sprintf("role %s does not own table %s (its owner is %s), and only the owner may add a table to a publication", r.Role, t.name(), t.Owner),
			Fix:     fix})
	}

	// Coverage, table by table.
	for _, t := range in.tables {
		if !t.publishable() {
			continue
		}
		if t.inPub {
			r.add(Finding{Check: CheckCoverage, Status: OK, Index: t.index(), Table: t.name(), Message: fmt.Sprintf("table %s is in publication %s", t.name(), name)})
			continue
		}
		f := Finding{Check: CheckCoverage, Status: Fail, Index: t.index(), Table: t.name(),
			Message: fmt.Sprintf("table %s is not in publication %s, so its changes never reach flusso-pg", t.name(), name),
			Fix:     addSQL(name, []*table{t})}
		if in.pub == nil {
			f.Fix = "-- covered by the CREATE PUBLICATION above"
		}
		if in.auto() && in.addable(t) {
			f.Status = Warn
			f.Message += ": flusso-pg will add it (provision: auto)"
		}
		r.add(f)
	}
	if in.pub == nil {
		return nil
	}

	// What it publishes.
	var ops []string
	for _, o := range []struct {
		on   bool
		name string
	}{{p.Insert, "insert"}, {p.Update, "update"}, {p.Delete, "delete"}, {p.Truncate, "truncate"}} {
		if !o.on {
			ops = append(ops, o.name)
		}
	}
	if len(ops) > 0 {
		r.add(Finding{Check: CheckPublish, Status: Fail,
			Message: fmt.Sprintf("publication %s does not publish %s, so those changes never reach flusso-pg", name, strings.Join(ops, ", ")),
			Fix:     fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate');", in.pubName())})
	} else {
		r.add(Finding{Check: CheckPublish, Status: OK, Message: fmt.Sprintf("publication %s publishes insert, update, delete and truncate", name)})
	}
	if partitioned && !p.ViaRoot {
		for _, t := range in.tables {
			if t.Exists && t.Kind == "p" {
				r.add(Finding{Check: CheckPartitionRoot, Status: Fail, Index: t.index(), Table: t.name(),
					Message: fmt.Sprintf("table %s is partitioned and publication %s has publish_via_partition_root off, so its changes arrive under the partitions' names and flusso-pg would not match them to %s", t.name(), name, t.name()),
					Fix:     fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true);", in.pubName())})
			}
		}
	}
	for _, t := range in.tables {
		if t.viaAncestor != "" {
			r.add(Finding{Check: CheckPartitionRoot, Status: Fail, Index: t.index(), Table: t.name(),
				Message: fmt.Sprintf("table %s is a partition of %s, and publication %s publishes it through %s (publish_via_partition_root), so its changes arrive under %s's name and flusso-pg would not match them to %s", t.name(), t.viaAncestor, name, t.viaAncestor, t.viaAncestor, t.name()),
				Fix:     fmt.Sprintf("name the partitioned table %s in the config instead; or: ALTER PUBLICATION %s SET (publish_via_partition_root = false);", t.viaAncestor, in.pubName())})
		}
	}
	if r.Version < 15 {
		return nil
	}
	// Row filters and column lists (PostgreSQL 15 and newer).
	for _, t := range in.tables {
		if !t.publishable() || !t.inPub {
			continue
		}
		var filter string
		var cols []string
		err := q.QueryRow(ctx, filterSQL, name, t.Table.Schema, t.Table.Name).Scan(&filter, &cols)
		if err == pgx.ErrNoRows {
			continue // a partitioned table published through its partitions
		}
		if err != nil {
			return err
		}
		readd := fmt.Sprintf("ALTER PUBLICATION %s DROP TABLE %s;\nALTER PUBLICATION %s ADD TABLE %s;", in.pubName(), t.name(), in.pubName(), t.name())
		if p.AllTables {
			readd = ""
		}
		if filter != "" {
			r.add(Finding{Check: CheckRowFilter, Status: Fail, Index: t.index(), Table: t.name(),
				Message: fmt.Sprintf("publication %s publishes only the rows of %s WHERE %s, so changes to the other rows never reach flusso-pg and their documents go stale", name, t.name(), filter),
				Fix:     readd})
		}
		var hidden []string
		for _, c := range t.Needed {
			if !slices.Contains(cols, c) {
				hidden = append(hidden, c)
			}
		}
		if len(hidden) > 0 {
			r.add(Finding{Check: CheckColumnList, Status: Fail, Index: t.index(), Table: t.name(), Column: strings.Join(hidden, ", "),
				Message: fmt.Sprintf("publication %s's column list for %s leaves out %s, which flusso-pg needs to find the affected documents", name, t.name(), strings.Join(hidden, ", ")),
				Fix:     readd})
		}
	}
	return nil
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

func createSQL(pub string, ts []*table, viaRoot bool) string {
	if len(ts) == 0 {
		return ""
	}
	s := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", change.QuoteIdentIfNeeded(pub), tableList(ts))
	if viaRoot {
		s += " WITH (publish_via_partition_root = true)"
	}
	return s + ";"
}

func addSQL(pub string, ts []*table) string {
	if len(ts) == 0 {
		return ""
	}
	return fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", change.QuoteIdentIfNeeded(pub), tableList(ts))
}
