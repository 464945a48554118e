package provision

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
)

// table is one table the config's indexes read, as written and as the
// catalog resolves it.
type table struct {
	Written string       // as the config writes it
	Parsed  change.Table // Schema "" when written without one
	Indexes []string     // the indexes that read it
	// columns capture needs (key, join columns) when no plan is given
	configured []string

	// From the catalog; Exists false when the name resolves to nothing.
	Exists      bool
	OID         uint32
	Table       change.Table // schema-qualified
	Kind        string       // pg_class.relkind
	Identity    string       // pg_class.relreplident: d, n, f, i
	PrimaryKey  []string
	IsPartition bool
	SchemaUsage bool
	CanSelect   bool
	Owned       bool   // the role is (a member of) the owner
	Owner       string // the owner's name
	Needed      []string
	inPub       bool   // the publication publishes it
	viaAncestor string // the partitioned ancestor it is published through, if any
}

func (t *table) name() string {
	if t.Exists {
		return t.Table.String()
	}
	if t.Parsed.Name != "" {
		return t.Parsed.String()
	}
	return t.Written
}

// publishable reports whether the table can be in a publication: an
// ordinary or a partitioned table (not a view, materialized view or foreign table).
func (t *table) publishable() bool { return t.Exists && (t.Kind == "r" || t.Kind == "p") }

func (t *table) index() string { return strings.Join(t.Indexes, ", ") }

// hasIdentity reports whether UPDATE and DELETE can be published: the
// table has a replica identity (FULL, an index, or DEFAULT with a primary key).
func (t *table) hasIdentity() bool {
	switch t.Identity {
	case "f", "i":
		return true
	case "d":
		return len(t.PrimaryKey) > 0
	}
	return false
}

// configTables lists the tables the indexes read (roots, relations at any
// depth, join tables, aggregates: config.Walk), in order of first
// appearance, with the indexes that read each and the columns the config
// names on it.
func configTables(cfg *config.Config) ([]*table, error) {
	var out []*table
	seen := map[string]*table{}
	err := config.Walk(cfg, func(index, name string, cols []string) error {
		p, err := change.ParseTable(name)
		if err != nil {
			return fmt.Errorf("index %s: %w", index, err)
		}
		key := p.Quoted()
		t := seen[key]
		if t == nil {
			t = &table{Written: name, Parsed: p}
			seen[key] = t
			out = append(out, t)
		}
		if !slices.Contains(t.Indexes, index) {
			t.Indexes = append(t.Indexes, index)
		}
		for _, c := range cols {
			if !slices.Contains(t.configured, c) {
				t.configured = append(t.configured, c)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Qualified names are looked up in the catalog directly, so a schema the
// role may not use gives a verdict rather than a permission error; a name
// without a schema is resolved on the search_path, as Postgres would.
const resolveQualifiedSQL = `SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`

const resolveUnqualifiedSQL = `SELECT to_regclass($1)::oid`

const tableInfoSQL = `SELECT n.nspname, c.relname, c.relkind::text, c.relreplident::text, c.relispartition,
  has_schema_privilege(n.oid, 'USAGE'),
  has_table_privilege(c.oid, 'SELECT'),
  pg_has_role(c.relowner, 'USAGE'),
  pg_get_userbyid(c.relowner),
  coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
     FROM pg_catalog.pg_index i
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1`

// resolve fills in what the catalog says about each table, and the columns
// capture needs from it (from the plan when there is one).
func resolve(ctx context.Context, q build.Querier, tables []*table, plan *build.Plan) error {
	var capture map[change.Table][]string
	if plan != nil {
		capture = plan.CaptureColumns()
	}
	for _, t := range tables {
		var oid *uint32
		var err error
		if t.Parsed.Schema != "" {
			err = q.QueryRow(ctx, resolveQualifiedSQL, t.Parsed.Schema, t.Parsed.Name).Scan(&oid)
		} else {
			err = q.QueryRow(ctx, resolveUnqualifiedSQL, t.Parsed.Quoted()).Scan(&oid)
		}
		if err == pgx.ErrNoRows || (err == nil && oid == nil) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look up table %s: %w", t.Written, err)
		}
		t.Exists, t.OID = true, *oid
		err = q.QueryRow(ctx, tableInfoSQL, t.OID).Scan(&t.Table.Schema, &t.Table.Name, &t.Kind, &t.Identity, &t.IsPartition,
			&t.SchemaUsage, &t.CanSelect, &t.Owned, &t.Owner, &t.PrimaryKey)
		if err != nil {
			return fmt.Errorf("read catalog for table %s: %w", t.Written, err)
		}
		if cols, ok := capture[t.Table]; ok {
			t.Needed = cols
		} else {
			// No plan: the primary key, then the configured keys and join columns.
			t.Needed = dedupe(append(append([]string(nil), t.PrimaryKey...), t.configured...))
		}
	}
	return nil
}

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// tableList writes tables as a comma-separated SQL list, sorted.
func tableList(ts []*table) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.name()
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
