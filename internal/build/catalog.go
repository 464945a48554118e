package build

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Querier runs queries: *pgx.Conn, pgx.Tx and *pgxpool.Pool all satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Replica identities, as pg_class.relreplident spells them.
const (
	IdentityDefault = "DEFAULT"
	IdentityFull    = "FULL"
	IdentityIndex   = "INDEX"
	IdentityNothing = "NOTHING"
)

// Column is one column of a table, as the catalog has it.
type Column struct {
	Name    string
	Type    string // format_type with its modifier: "numeric(30,10)", "\"My Schema\".mood"
	NotNull bool
	// Category is pg_type.typcategory of the column's type (a domain has
	// its base type's): N numeric, S string, D date/time, B boolean, U user, A array...
	Category string
	BaseType string // the type, or a domain's base type, without modifier
	// Generated is a GENERATED ALWAYS AS (...) STORED column: pgoutput does
	// not send it (PG 18 only with publish_generated_columns).
	Generated bool
}

// TableInfo is what the catalog says about one table.
type TableInfo struct {
	Table      change.Table // schema-qualified, as the catalog spells it
	Kind       string       // pg_class.relkind: r, p, v, m, f
	Unlogged   bool         // pg_class.relpersistence u: its changes are not in the WAL
	Columns    []Column
	PrimaryKey []string // in key order; empty when none
	// ReplicaIdentity is DEFAULT, FULL, INDEX or NOTHING; IdentityColumns
	// are the columns an old tuple carries under it (every column under FULL).
	ReplicaIdentity string
	IdentityColumns []string
	// Leaves are the leaf partitions of a partitioned table, with their own
	// replica identity: the WAL of a partitioned table is written by its
	// leaves, and ALTER TABLE ... REPLICA IDENTITY on the partitioned table
	// does not reach the leaves that already exist.
	Leaves []Leaf
	// InheritanceChildren are the tables that INHERIT from this one (table
	// inheritance, not partitions): a query of this table reads their rows.
	InheritanceChildren []change.Table
	// UniqueKeys are the column lists of the table's unique, non-partial
	// indexes on plain columns (the primary key among them).
	UniqueKeys [][]string
}

// Leaf is one leaf partition and its replica identity.
type Leaf struct {
	Table           change.Table
	ReplicaIdentity string
	IdentityColumns []string
}

// Column returns the column called name.
func (t *TableInfo) Column(name string) (*Column, bool) {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i], true
		}
	}
	return nil, false
}

// ColumnNames lists the columns in table order.
func (t *TableInfo) ColumnNames() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

// IsTable reports whether the relation is a table or a partitioned table,
// whose changes are in the WAL (not a view, materialized view or foreign table).
func (t *TableInfo) IsTable() bool { return t.Kind == "r" || t.Kind == "p" }

// generated lists the columns of cols that are generated.
func (t *TableInfo) generated(cols []string) []string {
	var out []string
	for _, c := range cols {
		if col, ok := t.Column(c); ok && col.Generated {
			out = append(out, c)
		}
	}
	return out
}

// InIdentity reports whether every one of cols is carried by an old tuple.
func (t *TableInfo) InIdentity(cols []string) bool {
	for _, c := range cols {
		if !slices.Contains(t.IdentityColumns, c) {
			return false
		}
	}
	return true
}

// Catalog caches the catalog's view of the tables some index reads. It is
// safe for concurrent use; Refresh reloads it (after DDL).
type Catalog struct {
	mu     sync.RWMutex
	names  []string              // the names as the config writes them
	byName map[string]*TableInfo // config name -> info (nil: not found)
	tables map[change.Table]*TableInfo
	// schemas and relations of the database, for "did you mean" hints
	schemas   []string
	relations map[string][]string // schema -> table names
}

// LoadCatalog reads the catalog for the tables named as the config writes
// them (schema.table, or a bare name looked up on the search_path).
func LoadCatalog(ctx context.Context, q Querier, names []string) (*Catalog, error) {
	c := &Catalog{names: dedupe(names)}
	if err := c.Refresh(ctx, q); err != nil {
		return nil, err
	}
	return c, nil
}

// Refresh reads the catalog again.
func (c *Catalog) Refresh(ctx context.Context, q Querier) error {
	byName := map[string]*TableInfo{}
	tables := map[change.Table]*TableInfo{}
	for _, name := range c.names {
		t, err := change.ParseTable(name)
		if err != nil {
			return err
		}
		info, err := loadTable(ctx, q, t)
		if err != nil {
			return fmt.Errorf("read catalog for %s: %w", name, err)
		}
		byName[name] = info
		if info != nil {
			if prev, ok := tables[info.Table]; ok {
				byName[name] = prev
			} else {
				tables[info.Table] = info
			}
		}
	}
	schemas, relations, err := loadNames(ctx, q)
	if err != nil {
		return fmt.Errorf("read catalog: %w", err)
	}
	c.mu.Lock()
	c.byName, c.tables, c.schemas, c.relations = byName, tables, schemas, relations
	c.mu.Unlock()
	return nil
}

// Lookup returns the table a config name resolves to (nil when it does not exist).
func (c *Catalog) Lookup(name string) *TableInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byName[name]
}

// Table returns what the catalog says about t.
func (c *Catalog) Table(t change.Table) (*TableInfo, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	info, ok := c.tables[t]
	return info, ok
}

// Tables lists the tables found, sorted by name.
func (c *Catalog) Tables() []*TableInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*TableInfo, 0, len(c.tables))
	for _, t := range c.tables {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table.String() < out[j].Table.String() })
	return out
}

func (c *Catalog) hasSchema(s string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Contains(c.schemas, s)
}

func (c *Catalog) schemaNames() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.schemas
}

func (c *Catalog) tableNames(schema string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.relations[schema]
}

const tableSQL = `SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relreplident::text, c.relpersistence = 'u'
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = pg_catalog.to_regclass($1)`

const columnsSQL = `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       t.typcategory::text, pg_catalog.format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END, NULL),
       a.attgenerated <> ''
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`

// indexColumnsSQL lists the columns of the primary key ($2 = 'p') or of the
// replica identity index ($2 = 'i'), in index order.
const indexColumnsSQL = `SELECT a.attname
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND ((i.indisprimary AND $2 = 'p') OR (i.indisreplident AND $2 = 'i'))
  AND k.ord <= i.indnkeyatts
ORDER BY k.ord`

func loadTable(ctx context.Context, q Querier, t change.Table) (*TableInfo, error) {
	var (
		oid       uint32
		info      TableInfo
		replident string
	)
	err := q.QueryRow(ctx, tableSQL, t.Quoted()).Scan(&oid, &info.Table.Schema, &info.Table.Name, &info.Kind, &replident, &info.Unlogged)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, columnsSQL, oid)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var col Column
		if err := rows.Scan(&col.Name, &col.Type, &col.NotNull, &col.Category, &col.BaseType, &col.Generated); err != nil {
			rows.Close()
			return nil, err
		}
		info.Columns = append(info.Columns, col)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if info.PrimaryKey, err = indexColumns(ctx, q, oid, "p"); err != nil {
		return nil, err
	}
	if info.ReplicaIdentity, info.IdentityColumns, err = identity(ctx, q, oid, replident, info.PrimaryKey, info.ColumnNames()); err != nil {
		return nil, err
	}
	if info.Kind == "p" {
		if info.Leaves, err = loadLeaves(ctx, q, oid, info.ColumnNames()); err != nil {
			return nil, err
		}
	}
	urows, err := q.Query(ctx, `SELECT array_agg(a.attname ORDER BY k.ord)
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
GROUP BY i.indexrelid`, oid)
	if err != nil {
		return nil, err
	}
	if info.UniqueKeys, err = pgx.CollectRows(urows, pgx.RowTo[[]string]); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, `SELECT n.nspname, c.relname FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = $1 AND NOT c.relispartition ORDER BY 1, 2`, oid)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var ch change.Table
		if err := rows.Scan(&ch.Schema, &ch.Name); err != nil {
			rows.Close()
			return nil, err
		}
		info.InheritanceChildren = append(info.InheritanceChildren, ch)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return &info, nil
}

// identity spells a relreplident and lists the columns an old tuple carries.
func identity(ctx context.Context, q Querier, oid uint32, replident string, pk, all []string) (string, []string, error) {
	switch replident {
	case "d":
		return IdentityDefault, pk, nil
	case "f":
		return IdentityFull, all, nil
	case "i":
		cols, err := indexColumns(ctx, q, oid, "i")
		return IdentityIndex, cols, err
	}
	return IdentityNothing, nil, nil
}

// loadLeaves reads the leaf partitions of a partitioned table and their
// replica identities (a leaf's columns have the partitioned table's names).
func loadLeaves(ctx context.Context, q Querier, oid uint32, all []string) ([]Leaf, error) {
	rows, err := q.Query(ctx, `SELECT c.oid, n.nspname, c.relname, c.relreplident::text
FROM pg_catalog.pg_partition_tree($1::oid::regclass) p
JOIN pg_catalog.pg_class c ON c.oid = p.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE p.isleaf ORDER BY 2, 3`, oid)
	if err != nil {
		return nil, err
	}
	type raw struct {
		oid       uint32
		leaf      Leaf
		replident string
	}
	var rs []raw
	for rows.Next() {
		var r raw
		if err := rows.Scan(&r.oid, &r.leaf.Table.Schema, &r.leaf.Table.Name, &r.replident); err != nil {
			rows.Close()
			return nil, err
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []Leaf
	for _, r := range rs {
		pk, err := indexColumns(ctx, q, r.oid, "p")
		if err != nil {
			return nil, err
		}
		if r.leaf.ReplicaIdentity, r.leaf.IdentityColumns, err = identity(ctx, q, r.oid, r.replident, pk, all); err != nil {
			return nil, err
		}
		out = append(out, r.leaf)
	}
	return out, nil
}

func indexColumns(ctx context.Context, q Querier, oid uint32, which string) ([]string, error) {
	rows, err := q.Query(ctx, indexColumnsSQL, oid, which)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// loadNames lists the schemas and their tables, views and partitioned
// tables, for "did you mean" hints.
func loadNames(ctx context.Context, q Querier) ([]string, map[string][]string, error) {
	rows, err := q.Query(ctx, `SELECT n.nspname, c.relname
FROM pg_catalog.pg_namespace n LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
ORDER BY 1, 2`)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var schemas []string
	rels := map[string][]string{}
	for rows.Next() {
		var s string
		var r *string
		if err := rows.Scan(&s, &r); err != nil {
			return nil, nil, err
		}
		if len(schemas) == 0 || schemas[len(schemas)-1] != s {
			schemas = append(schemas, s)
		}
		if r != nil {
			rels[s] = append(rels[s], *r)
		}
	}
	return schemas, rels, rows.Err()
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
