package build

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
)

// Plan is the compiled form of a config: per index, its tree of tables and
// its document SQL; per changed table, how to find the root keys it affects.
type Plan struct {
	Indexes []*Index
	Catalog *Catalog

	keys    map[change.Table][]string      // per table: the key columns resolution uses
	capture map[change.Table][]string      // per table: key columns first, then join columns
	occurs  map[change.Table][]*occurrence // per table: every place an index reads it
	tables  []change.Table
	resolve map[change.Table]*resolver
	keyMap  bool // capture.key_map: auto (keymap.go)
}

// Index is one compiled index: one document per row of its root table.
type Index struct {
	cfg     *config.Index
	ord     int // position in Plan.Indexes
	root    *node
	keyCols []string
	keyType []string
	docSQL  string
	docSQL1 string       // docSQL for one key: one text parameter per key column
	scanSQL [2][2]string // [after][upTo]
}

// node is one table in an index's document tree: the root, a relation or an
// aggregate.
type node struct {
	kind    string // "root", a relation kind, or "aggregate"
	field   string // its field in the parent's object; "" for the root
	path    string // the config path, for messages
	info    *TableInfo
	key     []string // key columns ("" when the table has none)
	columns []string // the columns written into the object
	// defaulted: no columns configured, so columns are the table's own
	// as the catalog had them at compile time
	defaulted bool
	rename    config.Pairs
	fields    []config.Field // computed fields, after the columns
	facts     []FieldFacts   // what the server says of each field (checkFields)
	where     string
	orderBy   []config.OrderBy
	limit     int
	scalar    bool
	// join maps the parent's columns to this table's columns; for
	// many_to_many, through.join maps parent -> through and targetJoin maps
	// through -> this table.
	join       config.Pairs
	through    *TableInfo
	targetJoin config.Pairs
	fn, column string // aggregates

	parent   *node
	children []*node // relations, then aggregates, in config order
}

// occurrence is one place a table is read by an index, with the hops that
// lead from a row of it up to the root rows whose documents include it.
type occurrence struct {
	ix   *Index
	info *TableInfo
	path string
	hops []hop // empty: the table is the root
}

// hop joins a lower table to the one above it: lower.cols = upper.upCols.
type hop struct {
	cols   []string // in the lower table
	upper  *TableInfo
	upCols []string
}

// Name is the index name written on every line.
func (ix *Index) Name() string { return ix.cfg.Name }

// Root is the root table: one document per row.
func (ix *Index) Root() change.Table { return ix.root.info.Table }

// KeyColumns are the root's key columns, in key order.
func (ix *Index) KeyColumns() []string { return ix.keyCols }

// KeyTypes are the SQL types of the key columns.
func (ix *Index) KeyTypes() []string { return ix.keyType }

// Config is the index's configuration.
func (ix *Index) Config() *config.Index { return ix.cfg }

// Tables lists every table the index reads (its tree's tables and join
// tables), each once, root first.
func (ix *Index) Tables() []change.Table {
	var out []change.Table
	add := func(t change.Table) {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	var walk func(n *node)
	walk = func(n *node) {
		add(n.info.Table)
		if n.through != nil {
			add(n.through.Table)
		}
		for _, ch := range n.children {
			walk(ch)
		}
	}
	walk(ix.root)
	return out
}

// DefaultColumns lists, for each node of the tree whose columns are left
// to the default, its path and the columns the catalog gave it: what the
// documents' shape depends on besides the config.
func (ix *Index) DefaultColumns() []string {
	var out []string
	var walk func(n *node)
	walk = func(n *node) {
		if n.defaulted && n.kind != "aggregate" {
			out = append(out, n.path+"="+strings.Join(n.columns, ","))
		}
		for _, ch := range n.children {
			walk(ch)
		}
	}
	walk(ix.root)
	return out
}

// DocumentSQL is the statement Build runs: $1.. are one text[] per key column.
func (ix *Index) DocumentSQL() string { return ix.docSQL }

// Compile reads the catalog for every table the config's indexes read,
// validates, and compiles. A plan is returned only when there is no
// error-severity problem; the problems are returned either way.
func Compile(ctx context.Context, q Querier, cfg *config.Config) (*Plan, []Problem, error) {
	cat, err := LoadCatalog(ctx, q, ConfigTables(cfg))
	if err != nil {
		return nil, nil, err
	}
	p, indexes, problems := newPlan(cat, cfg)
	// The where clauses are checked whatever else is wrong, so that every
	// problem is reported at once.
	more, err := checkWhere(ctx, q, indexes)
	if err != nil {
		return nil, problems, err
	}
	problems = append(problems, more...)
	if HasError(more) {
		p = nil
	}
	more, err = checkFields(ctx, q, indexes)
	if err != nil {
		return nil, problems, err
	}
	problems = append(problems, more...)
	if HasError(more) {
		p = nil
	}
	if p != nil {
		more, err := checkSQL(ctx, q, p)
		if err != nil {
			return nil, problems, err
		}
		problems = append(problems, more...)
		if HasError(more) {
			p = nil
		}
	}
	return p, problems, nil
}

// ConfigTables lists every table name the config's indexes name, as
// written, each once (config.Walk's order).
func ConfigTables(cfg *config.Config) []string {
	var out []string
	_ = config.Walk(cfg, func(_, table string, _ []string) error {
		out = append(out, table)
		return nil // never stops the walk
	})
	return dedupe(out)
}

// NewPlan compiles cfg against a loaded catalog. The plan is nil when any
// problem is an error.
func NewPlan(cat *Catalog, cfg *config.Config) (*Plan, []Problem) {
	p, _, problems := newPlan(cat, cfg)
	return p, problems
}

// newPlan is NewPlan that also returns the indexes' trees as far as they
// could be compiled, even when there are errors.
func newPlan(cat *Catalog, cfg *config.Config) (*Plan, []*Index, []Problem) {
	c := &compiler{cat: cat, keyMap: cfg.Capture.KeyMapOn()}
	p := &Plan{Catalog: cat, keyMap: c.keyMap}
	for i := range cfg.Indexes {
		ixc := &cfg.Indexes[i]
		ix := &Index{cfg: ixc, ord: len(p.Indexes)}
		c.index = ixc.Name
		ix.root = c.root(ixc)
		p.Indexes = append(p.Indexes, ix)
	}
	if HasError(c.problems) {
		return nil, p.Indexes, c.problems
	}
	for _, ix := range p.Indexes {
		ix.keyCols = ix.root.key
		for _, k := range ix.keyCols {
			col, _ := ix.root.info.Column(k)
			ix.keyType = append(ix.keyType, col.Type)
		}
		ix.docSQL = documentSQL(ix, false)
		ix.docSQL1 = documentSQL(ix, true)
		for a := range 2 {
			for u := range 2 {
				ix.scanSQL[a][u] = scanSQL(ix, a == 1, u == 1)
			}
		}
	}
	p.index()
	return p, p.Indexes, c.problems
}

// Tables lists every table any index reads (roots, relations, join tables,
// aggregates), sorted.
func (p *Plan) Tables() []change.Table { return p.tables }

// CaptureColumns gives, per table, the columns capture must carry: the key
// columns first, then the columns joins use.
func (p *Plan) CaptureColumns() map[change.Table][]string {
	out := make(map[change.Table][]string, len(p.capture))
	for t, cols := range p.capture {
		out[t] = append([]string(nil), cols...)
	}
	return out
}

// index walks every tree to find, per table, its key, its capture columns
// and its occurrences, then makes each table's resolver.
func (p *Plan) index() {
	p.keys = map[change.Table][]string{}
	p.capture = map[change.Table][]string{}
	p.occurs = map[change.Table][]*occurrence{}
	for _, ix := range p.Indexes {
		p.indexKeys(ix.root)
	}
	for t, k := range p.keys {
		p.capture[t] = append([]string(nil), k...)
	}
	for _, ix := range p.Indexes {
		p.indexOccurrences(ix, ix.root, nil)
	}
	for t := range p.occurs {
		p.tables = append(p.tables, t)
	}
	sort.Slice(p.tables, func(i, j int) bool { return p.tables[i].String() < p.tables[j].String() })
	p.resolve = map[change.Table]*resolver{}
	for _, t := range p.tables {
		p.resolve[t] = p.newResolver(t)
	}
}

// indexKeys records the key of n's table and of its join table, and so on
// below n: a root's key wins over the same table's key elsewhere.
func (p *Plan) indexKeys(n *node) {
	if _, ok := p.keys[n.info.Table]; !ok || (n.kind == "root" && len(n.key) > 0) {
		p.keys[n.info.Table] = n.key
		if len(n.info.generated(n.key)) > 0 {
			// Not in the WAL: a table below the root whose key is
			// generated is resolved without lookups by key.
			p.keys[n.info.Table] = nil
		}
	}
	if n.through != nil {
		if _, ok := p.keys[n.through.Table]; !ok {
			p.keys[n.through.Table] = n.through.PrimaryKey
		}
	}
	for _, ch := range n.children {
		p.indexKeys(ch)
	}
}

// indexOccurrences records where n's table (and its join table) occurs in
// ix, with the hops up to the root (up: those above n's parent), and the
// join columns capture must carry; and so on below n.
func (p *Plan) indexOccurrences(ix *Index, n *node, up []hop) {
	if n.through != nil {
		thHops := append([]hop{{cols: n.join.Tos(), upper: n.parent.info, upCols: n.join.Froms()}}, up...)
		p.occurs[n.through.Table] = append(p.occurs[n.through.Table], &occurrence{ix: ix, info: n.through, path: n.path + ".through", hops: thHops})
		p.addCapture(n.through, n.join.Tos())
		p.addParentCapture(n.through, n.targetJoin.Froms())
		p.addParentCapture(n.parent.info, n.join.Froms())
		up = append([]hop{{cols: n.targetJoin.Tos(), upper: n.through, upCols: n.targetJoin.Froms()}}, thHops...)
		p.addCapture(n.info, n.targetJoin.Tos())
	} else if n.parent != nil {
		up = append([]hop{{cols: n.join.Tos(), upper: n.parent.info, upCols: n.join.Froms()}}, up...)
		p.addCapture(n.info, n.join.Tos())
		p.addParentCapture(n.parent.info, n.join.Froms())
	}
	if n.parent == nil {
		p.addCapture(n.info, n.key)
	}
	p.occurs[n.info.Table] = append(p.occurs[n.info.Table], &occurrence{ix: ix, info: n.info, path: n.path, hops: up})
	for _, ch := range n.children {
		p.indexOccurrences(ix, ch, up)
	}
}

// addCapture adds cols to the columns capture carries of info's table,
// each once.
func (p *Plan) addCapture(info *TableInfo, cols []string) {
	t := info.Table
	for _, c := range cols {
		if !slices.Contains(p.capture[t], c) {
			p.capture[t] = append(p.capture[t], c)
		}
	}
}

// addParentCapture is addCapture for the parent side of a join, which is
// never read from the row (resolution goes up from the child's columns): a
// generated column there, which pgoutput does not send, is left out.
func (p *Plan) addParentCapture(info *TableInfo, cols []string) {
	var keep []string
	for _, c := range cols {
		if len(info.generated([]string{c})) == 0 {
			keep = append(keep, c)
		}
	}
	p.addCapture(info, keep)
}

// compiler turns config into node trees, collecting problems as it goes.
type compiler struct {
	cat      *Catalog
	index    string
	problems []Problem
	keyMap   bool // capture.key_map: auto (keymap.go)
}

func (c *compiler) root(ixc *config.Index) *node {
	path := fmt.Sprintf("index %q", ixc.Name)
	n := &node{kind: "root", path: path, where: ixc.Where, rename: ixc.Rename, fields: ixc.Fields}
	n.info = c.table(path+".table", ixc.Table)
	if n.info == nil {
		return n
	}
	n.key = c.key(n, path+".key", ixc.Key, true)
	c.rootKey(n, path+".key")
	n.columns = c.columns(n, path+".columns", ixc.Columns)
	n.defaulted = len(ixc.Columns) == 0
	c.renames(n, path)
	c.children(n, ixc.Relations, ixc.Aggregates)
	c.fields(n)
	c.rootIdentity(n)
	return n
}

func (c *compiler) children(n *node, rels []config.Relation, aggs []config.Aggregate) {
	for i := range rels {
		if ch := c.relation(n, &rels[i]); ch != nil {
			n.children = append(n.children, ch)
		}
	}
	for i := range aggs {
		if ch := c.aggregate(n, &aggs[i]); ch != nil {
			n.children = append(n.children, ch)
		}
	}
}

func (c *compiler) relation(parent *node, r *config.Relation) *node {
	path := fmt.Sprintf("%s.relations[%s]", parent.path, r.Name)
	n := &node{kind: r.Kind, field: r.Name, path: path, parent: parent, where: r.Where, orderBy: r.OrderBy,
		limit: r.Limit, scalar: r.Scalar, rename: r.Rename, join: r.Join, fields: r.Fields}
	n.info = c.table(path+".table", r.Table)
	if r.Through != nil {
		n.through = c.table(path+".through.table", r.Through.Table)
		n.join = r.Through.Join
		n.targetJoin = r.Through.TargetJoin
	}
	if n.info == nil || parent.info == nil || (r.Through != nil && n.through == nil) {
		return nil
	}
	n.key = c.key(n, path+".key", r.Key, false)
	n.columns = c.columns(n, path+".columns", r.Columns)
	n.defaulted = len(r.Columns) == 0
	c.renames(n, path)
	for _, o := range r.OrderBy {
		if _, ok := n.info.Column(o.Column); !ok {
			c.missingColumn("order_by_column", path+".order_by", n.info, o.Column, "order_by")
		}
	}
	if n.through != nil {
		c.joins(path+".through.join", parent.info, n.through, n.join, "")
		c.joins(path+".through.target_join", n.through, n.info, n.targetJoin, "")
		c.childIdentity(path+".through", n.through, n.join.Tos())
		c.childIdentity(path, n.info, n.targetJoin.Tos())
		c.generatedJoin(path+".through.join", n.through, n.join.Tos())
		c.generatedJoin(path+".through.target_join", n.info, n.targetJoin.Tos())
	} else {
		toOne := ""
		if r.Kind == config.BelongsTo {
			toOne = r.Name
		}
		c.joins(path+".join", parent.info, n.info, n.join, toOne)
		c.childIdentity(path, n.info, n.join.Tos())
		c.generatedJoin(path+".join", n.info, n.join.Tos())
	}
	c.children(n, r.Relations, r.Aggregates)
	if !n.scalar {
		c.fields(n)
	}
	return n
}

func (c *compiler) aggregate(parent *node, a *config.Aggregate) *node {
	path := fmt.Sprintf("%s.aggregates[%s]", parent.path, a.Name)
	n := &node{kind: "aggregate", field: a.Name, path: path, parent: parent, where: a.Where, join: a.Join, fn: a.Fn, column: a.Column}
	n.info = c.table(path+".table", a.Table)
	if n.info == nil || parent.info == nil {
		return nil
	}
	n.key = n.info.PrimaryKey
	if a.Fn == config.IDs && len(n.key) == 0 {
		c.add(Problem{Severity: SeverityError, Code: "no_key", Path: path, Table: n.info.Table.String(),
			Message: fmt.Sprintf("aggregate %s (ids) needs the key of table %s, which has no primary key", a.Name, n.info.Table),
			Fix:     fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (...);", n.info.Table)})
	}
	if a.Column != "" {
		col, ok := n.info.Column(a.Column)
		if !ok {
			c.missingColumn("missing_column", path+".column", n.info, a.Column, "column")
		} else if (a.Fn == config.Sum || a.Fn == config.Avg) && col.Category != "N" && col.BaseType != "interval" && col.BaseType != "money" {
			c.add(Problem{Severity: SeverityError, Code: "aggregate_type", Path: path + ".fn", Table: n.info.Table.String(), Column: a.Column,
				Message: fmt.Sprintf("aggregate %s: %s(%s) needs a numeric column, but %s.%s is %s: use count, min or max, or a numeric column",
					a.Name, a.Fn, a.Column, n.info.Table, a.Column, col.Type)})
		}
	}
	c.joins(path+".join", parent.info, n.info, n.join, "")
	c.childIdentity(path, n.info, n.join.Tos())
	c.generatedJoin(path+".join", n.info, n.join.Tos())
	return n
}

func (c *compiler) table(path, name string) *TableInfo {
	if info := c.cat.Lookup(name); info != nil {
		c.inheritance(path, info)
		if info.Unlogged {
			c.add(Problem{Severity: SeverityWarning, Code: "unlogged", Path: path, Table: info.Table.String(),
				Message: fmt.Sprintf("table %s is UNLOGGED: its changes are not written to the WAL, so follow cannot stream them (Postgres refuses to add it to a publication); fine for a one-shot backfill", info.Table),
				Fix:     fmt.Sprintf("ALTER TABLE %s SET LOGGED;", info.Table)})
		}
		if !info.IsTable() {
			c.add(Problem{Severity: SeverityWarning, Code: "not_a_table", Path: path, Table: info.Table.String(),
				Message: fmt.Sprintf("%s is %s, not a table: its changes are not in the WAL, so documents do not follow them (fine for a one-shot backfill)", info.Table, relkindName(info.Kind))})
		}
		return info
	}
	t, err := change.ParseTable(name)
	if err != nil {
		c.add(Problem{Severity: SeverityError, Code: "missing_table", Path: path, Table: name, Message: err.Error()})
		return nil
	}
	if t.Schema != "" && !c.cat.hasSchema(t.Schema) {
		msg := fmt.Sprintf("schema %s of table %s does not exist", change.QuoteIdentIfNeeded(t.Schema), name)
		if s := config.Suggest(t.Schema, c.cat.schemaNames()); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", change.QuoteIdentIfNeeded(s))
		}
		c.add(Problem{Severity: SeverityError, Code: "missing_schema", Path: path, Table: name, Message: msg})
		return nil
	}
	schema := t.Schema
	if schema == "" {
		schema = "public"
	}
	msg := fmt.Sprintf("table %s does not exist (or is not visible to this user)", name)
	if s := config.Suggest(t.Name, c.cat.tableNames(schema)); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", change.Table{Schema: t.Schema, Name: s})
	}
	c.add(Problem{Severity: SeverityError, Code: "missing_table", Path: path, Table: name, Message: msg})
	return nil
}

// key picks the configured key or the primary key.
func (c *compiler) key(n *node, path string, configured []string, required bool) []string {
	if len(configured) > 0 {
		ok := true
		for _, k := range configured {
			if _, found := n.info.Column(k); !found {
				c.missingColumn("missing_column", path, n.info, k, "key")
				ok = false
			}
		}
		if ok {
			return configured
		}
		return nil
	}
	if len(n.info.PrimaryKey) > 0 {
		return n.info.PrimaryKey
	}
	sev := SeverityWarning
	msg := fmt.Sprintf("table %s has no primary key and no key: is given; an unchanged TOAST value in its changes cannot be looked up", n.info.Table)
	if required {
		sev = SeverityError
		msg = fmt.Sprintf("root table %s has no primary key and no key: is given, so documents have no id", n.info.Table)
	}
	fix := fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (...);  -- or set key: [column, ...] in the config", n.info.Table)
	if !n.info.IsTable() {
		if !required {
			return nil // not_a_table already says what matters
		}
		msg = fmt.Sprintf("root %s is %s, which has no primary key, so documents have no id; and its changes are not in the WAL, so they would not follow it either: index the table it reads instead (or set key: [column, ...] for a one-shot backfill)",
			n.info.Table, relkindName(n.info.Kind))
		fix = ""
	}
	c.add(Problem{Severity: sev, Code: "no_key", Path: path, Table: n.info.Table.String(), Message: msg, Fix: fix})
	return nil
}

func (c *compiler) columns(n *node, path string, cols []string) []string {
	if len(cols) == 0 {
		return n.info.ColumnNames()
	}
	var out []string
	for _, col := range cols {
		if _, ok := n.info.Column(col); ok {
			out = append(out, col)
		} else {
			c.missingColumn("missing_column", path, n.info, col, "columns")
		}
	}
	return out
}

func (c *compiler) renames(n *node, path string) {
	for _, r := range n.rename {
		if _, ok := n.info.Column(r.From); !ok {
			c.missingColumn("missing_column", path+".rename", n.info, r.From, "rename")
		}
	}
}

func (c *compiler) add(p Problem) {
	p.Index = c.index
	c.problems = append(c.problems, p)
}
