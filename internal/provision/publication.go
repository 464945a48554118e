package provision

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
)

// The publication's checks: does it exist, may flusso-pg create or extend
// it, which tables it publishes, what it publishes and with which row
// filters and column lists. Inspect runs them (inspect.go); Ensure acts on
// what they found (ensure.go).

// publication is what pg_publication says of source.publication.
type publication struct {
	AllTables                        bool
	Insert, Update, Delete, Truncate bool
	ViaRoot                          bool
	Owned                            bool
	Owner                            string
	Count                            int
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

// publication reads the publication and reports on it, in this order: the
// publication itself, who may create or extend it, each table's coverage,
// then (when it exists) what it publishes and, on PostgreSQL 15 and newer,
// its row filters and column lists.
func (in *inspection) publication(ctx context.Context, q build.Querier) error {
	if err := in.readPublication(ctx, q); err != nil {
		return err
	}
	missing := in.missing()
	partitioned := slices.ContainsFunc(in.tables, func(t *table) bool { return t.Exists && t.Kind == "p" })
	in.publicationVerdict(missing, partitioned)
	in.publicationRights(missing, partitioned)
	in.coverage()
	if in.pub == nil {
		return nil
	}
	in.published(partitioned)
	if in.r.Version < 15 {
		return nil
	}
	return in.filters(ctx, q)
}

// readPublication reads the publication (in.pub stays nil when it does not
// exist) and, when it exists, which tables it publishes.
func (in *inspection) readPublication(ctx context.Context, q build.Querier) error {
	name := in.cfg.Source.Publication
	var p publication
	err := q.QueryRow(ctx, publicationSQL, name).Scan(&p.AllTables, &p.Insert, &p.Update, &p.Delete, &p.Truncate, &p.ViaRoot, &p.Owned, &p.Owner, &p.Count)
	switch {
	case err == pgx.ErrNoRows:
		return nil
	case err != nil:
		return err
	}
	in.pub = &p
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
		// Published, under the ancestor's name: reported by published.
		t.inPub = t.inPub || t.viaAncestor != ""
	}
	return nil
}

// publicationVerdict reports on the publication itself: missing, FOR ALL
// TABLES, empty, or how many tables it publishes.
func (in *inspection) publicationVerdict(missing []*table, partitioned bool) {
	r, name, p := in.r, in.cfg.Source.Publication, in.pub
	switch {
	case p == nil:
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
}

// publicationRights reports who may create the publication, or add the
// missing tables to it: the role's CREATE on the database, its ownership
// of the publication and of each missing table. Under provision: auto a
// missing right fails; otherwise it is information.
func (in *inspection) publicationRights(missing []*table, partitioned bool) {
	r, name, p := in.r, in.cfg.Source.Publication, in.pub
	need := Info
	if in.auto() {
		need = Fail
	}
	if p == nil {
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
		if p == nil {
			// One CREATE PUBLICATION (the publication verdict) covers every
			// table: a second one would fail when the fixes are run in order.
			fix = fmt.Sprintf("ALTER TABLE %s OWNER TO %s;  -- so that flusso-pg may create the publication; or run the CREATE PUBLICATION above as %s or a superuser",
				t.name(), in.roleName(), change.QuoteIdentIfNeeded(t.Owner))
		}
		r.add(Finding{Check: CheckOwnership, Status: need, Index: t.index(), Table: t.name(),
			Message: fmt.Sprintf("role %s does not own table %s (its owner is %s), and only the owner may add a table to a publication", r.Role, t.name(), t.Owner),
			Fix:     fix})
	}
}

// coverage reports, table by table, whether the publication publishes it.
func (in *inspection) coverage() {
	r, name := in.r, in.cfg.Source.Publication
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
}

// published reports what the existing publication publishes: the four
// operations, and the names a partitioned table's changes arrive under
// (publish_via_partition_root).
func (in *inspection) published(partitioned bool) {
	r, name, p := in.r, in.cfg.Source.Publication, in.pub
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
}

// filters reports the row filters and column lists (PostgreSQL 15 and
// newer) of the published tables: a filter hides rows, a column list may
// hide columns capture needs.
func (in *inspection) filters(ctx context.Context, q build.Querier) error {
	r, name, p := in.r, in.cfg.Source.Publication, in.pub
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
