package build

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
)

// Problem severities.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
	SeverityInfo    = "info"
)

// Problem is one verdict about the config against the live catalog.
type Problem struct {
	Severity string `json:"severity"` // error | warning | info
	// Code is one of missing_schema, missing_table, missing_column, no_key,
	// nullable_key, generated_column, duplicate_field, join_types,
	// aggregate_type, order_by_column, replica_identity, nullable_join,
	// not_a_table, invalid_sql, where_reads_table, where_volatile, field_reads_table,
	// field_volatile, field_columns, inheritance, unlogged, key_not_unique.
	Code    string `json:"code"`
	Index   string `json:"index"`
	Path    string `json:"path"`
	Table   string `json:"table,omitempty"`
	Column  string `json:"column,omitempty"`
	Message string `json:"message"`       // one readable sentence naming index, table, column
	Fix     string `json:"fix,omitempty"` // SQL to run when there is one
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s: %s: %s", p.Severity, p.Path, p.Message)
	if p.Fix != "" {
		s += "\n    fix: " + p.Fix
	}
	return s
}

// HasError reports whether any problem is an error.
func HasError(problems []Problem) bool {
	return slices.ContainsFunc(problems, func(p Problem) bool { return p.Severity == SeverityError })
}

// WriteProblems writes problems one per entry, readable, errors first.
func WriteProblems(w io.Writer, problems []Problem) error {
	for _, sev := range []string{SeverityError, SeverityWarning, SeverityInfo} {
		for _, p := range problems {
			if p.Severity == sev {
				if _, err := fmt.Fprintln(w, p.String()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *compiler) missingColumn(code, path string, t *TableInfo, col, what string) {
	msg := fmt.Sprintf("table %s has no column %s (named in %s)", t.Table, col, what)
	if s := config.Suggest(col, t.ColumnNames()); s != "" {
		msg = fmt.Sprintf("table %s has no column %s (named in %s; did you mean %s?)", t.Table, col, what, s)
	}
	c.add(Problem{Severity: SeverityError, Code: code, Path: path, Table: t.Table.String(), Column: col, Message: msg})
}

// joins checks that each pair names existing columns of comparable types.
// toOne names the field of a belongs_to, whose nullable local columns give a null field.
func (c *compiler) joins(path string, upper, lower *TableInfo, pairs config.Pairs, toOne string) {
	for _, p := range pairs {
		uc, ok1 := upper.Column(p.From)
		if !ok1 {
			c.missingColumn("missing_column", path, upper, p.From, "join")
		}
		lc, ok2 := lower.Column(p.To)
		if !ok2 {
			c.missingColumn("missing_column", path, lower, p.To, "join")
		}
		if !ok1 || !ok2 {
			continue
		}
		if !comparable(uc, lc) {
			c.add(Problem{Severity: SeverityError, Code: "join_types", Path: path, Table: lower.Table.String(), Column: p.To,
				Message: fmt.Sprintf("join %s.%s (%s) = %s.%s (%s) compares incompatible types: join columns of the same type",
					upper.Table, p.From, uc.Type, lower.Table, p.To, lc.Type)})
		}
		if toOne != "" && !uc.NotNull {
			c.add(Problem{Severity: SeverityInfo, Code: "nullable_join", Path: path, Table: upper.Table.String(), Column: p.From,
				Message: fmt.Sprintf("%s.%s is nullable: field %s is null in documents whose %s is NULL", upper.Table, p.From, toOne, p.From)})
		}
	}
}

func comparable(a, b *Column) bool {
	if a.BaseType == b.BaseType {
		return true
	}
	if a.Category != b.Category {
		return false
	}
	switch a.Category {
	case "N", "S", "D", "B", "I", "V", "T":
		return true
	}
	return false
}

// childIdentity checks that a DELETE, or an UPDATE that moves the row, of a
// table below the root carries the columns pointing toward the root in its
// old tuple; otherwise the old parent's document would stay stale.
func (c *compiler) childIdentity(path string, t *TableInfo, cols []string) {
	if !t.IsTable() {
		return // a view has no identity (not_a_table says its changes are not followed)
	}
	for _, col := range cols {
		if _, ok := t.Column(col); !ok {
			return // missing_column says it; no identity can carry a column that is not there
		}
	}
	if t.Kind == "p" {
		// The leaves write the WAL, each with its own identity.
		if leavesCarry(t, cols) || c.keyMapped(path, t, cols) {
			return
		}
		c.leafIdentity(path, t, cols, "a DELETE or an UPDATE that changes "+strings.Join(cols, ", ")+" of a row in it cannot say which document held the row, and that document would stay stale")
		return
	}
	if t.ReplicaIdentity != IdentityNothing && t.InIdentity(cols) {
		return
	}
	for _, p := range c.problems {
		if p.Code == "replica_identity" && p.Index == c.index && p.Table == t.Table.String() {
			return // one verdict per table and index: the fix is the same
		}
	}
	if c.keyMapped(path, t, cols) {
		return
	}
	var why string
	switch {
	case t.ReplicaIdentity == IdentityNothing:
		why = "REPLICA IDENTITY NOTHING sends no old row at all"
	case len(t.IdentityColumns) == 0:
		why = fmt.Sprintf("REPLICA IDENTITY %s with no primary key sends no old row at all", t.ReplicaIdentity)
	default:
		why = fmt.Sprintf("REPLICA IDENTITY %s sends only %s in the old row", t.ReplicaIdentity, strings.Join(t.IdentityColumns, ", "))
	}
	c.add(Problem{Severity: SeverityError, Code: "replica_identity", Path: path, Table: t.Table.String(), Column: strings.Join(cols, ", "),
		Message: fmt.Sprintf("table %s: %s, not %s, so a DELETE or an UPDATE that changes %s cannot say which document held the row, and that document would stay stale",
			t.Table, why, strings.Join(cols, ", "), strings.Join(cols, ", ")),
		Fix: fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", t.Table)})
}

// leafIdentity checks every leaf partition of a partitioned table: the
// leaves write the WAL, each with its own replica identity, and ALTER
// TABLE ... REPLICA IDENTITY on the partitioned table does not reach the
// leaves that exist. One verdict, with its fix, per leaf and index.
func (c *compiler) leafIdentity(path string, t *TableInfo, cols []string, effect string) {
	for _, l := range t.Leaves {
		if l.ReplicaIdentity != IdentityNothing && containsAll(l.IdentityColumns, cols) {
			continue
		}
		dup := false
		for _, p := range c.problems {
			dup = dup || (p.Code == "replica_identity" && p.Index == c.index && p.Table == l.Table.String())
		}
		if dup {
			continue
		}
		why := fmt.Sprintf("REPLICA IDENTITY %s sends only %s in the old row", l.ReplicaIdentity, strings.Join(l.IdentityColumns, ", "))
		if l.ReplicaIdentity == IdentityNothing || len(l.IdentityColumns) == 0 {
			why = fmt.Sprintf("REPLICA IDENTITY %s sends no old row", l.ReplicaIdentity)
		}
		c.add(Problem{Severity: SeverityError, Code: "replica_identity", Path: path, Table: l.Table.String(), Column: strings.Join(cols, ", "),
			Message: fmt.Sprintf("partition %s of %s: %s, not %s, so %s (the partitions write the WAL with their own replica identity; setting it on %s does not reach the partitions that exist)",
				l.Table, t.Table, why, strings.Join(cols, ", "), effect, t.Table),
			Fix: fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", l.Table)})
	}
}

func quotedList(cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = change.QuoteIdentIfNeeded(c)
	}
	return strings.Join(out, ", ")
}

func containsAll(list, cols []string) bool {
	for _, c := range cols {
		if !slices.Contains(list, c) {
			return false
		}
	}
	return true
}

// inheritance refuses a table with inheritance children (table
// inheritance, the pre-10 partitioning; TimescaleDB's chunks): the
// document query reads their rows through the parent, but the stream sends
// their changes under the children's names, which no index follows.
func (c *compiler) inheritance(path string, t *TableInfo) {
	if len(t.InheritanceChildren) == 0 {
		return
	}
	for _, p := range c.problems {
		if p.Code == "inheritance" && p.Index == c.index && p.Table == t.Table.String() {
			return
		}
	}
	var names, fixes []string
	for _, ch := range t.InheritanceChildren {
		names = append(names, ch.String())
		fixes = append(fixes, fmt.Sprintf("ALTER TABLE %s NO INHERIT %s;", ch, t.Table))
	}
	c.add(Problem{Severity: SeverityError, Code: "inheritance", Path: path, Table: t.Table.String(),
		Message: fmt.Sprintf("table %s has inheritance children (%s): the documents read their rows through %s, but the stream sends their changes under their own names, which are not followed, so those documents would go stale; make them partitions of a partitioned table, or detach them (moving their rows to %s if they belong in the index)",
			t.Table, strings.Join(names, ", "), t.Table, t.Table),
		Fix: strings.Join(fixes, "  ")})
}

// relkindName says what a pg_class.relkind is, for messages.
func relkindName(kind string) string {
	switch kind {
	case "v":
		return "a view"
	case "m":
		return "a materialized view"
	case "f":
		return "a foreign table"
	case "p":
		return "a partitioned table"
	case "r":
		return "a table"
	}
	return "relkind " + kind
}

// rootKey checks the root's key columns: never NULL (a NULL key has no id,
// and a row whose key is NULL cannot be looked up again, so its document
// could never be updated or deleted), and never generated (pgoutput does
// not send generated columns, so a change could not say which document).
func (c *compiler) rootKey(n *node, path string) {
	t := n.info
	if len(n.key) > 0 && t.IsTable() && !slices.ContainsFunc(t.UniqueKeys, func(u []string) bool { return containsAll(n.key, u) }) {
		c.add(Problem{Severity: SeverityWarning, Code: "key_not_unique", Path: path, Table: t.Table.String(), Column: strings.Join(n.key, ", "),
			Message: fmt.Sprintf("no unique index of %s covers key (%s): rows with the same key would share one document, and which one it shows would depend on the order of changes",
				t.Table, strings.Join(n.key, ", ")),
			Fix: fmt.Sprintf("CREATE UNIQUE INDEX ON %s (%s);", t.Table, quotedList(n.key))})
	}
	for _, k := range n.key {
		col, ok := t.Column(k)
		if !ok {
			continue
		}
		if !col.NotNull {
			sev, fix := SeverityError, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL;", t.Table, change.QuoteIdentIfNeeded(k))
			if !t.IsTable() {
				sev, fix = SeverityWarning, "" // a view's columns are never declared NOT NULL
			}
			c.add(Problem{Severity: sev, Code: "nullable_key", Path: path, Table: t.Table.String(), Column: k,
				Message: fmt.Sprintf("key column %s.%s is nullable: a row whose key is NULL has no id, and its document could never be updated or deleted; key columns must be NOT NULL",
					t.Table, k),
				Fix: fix})
		}
		if col.Generated {
			c.add(Problem{Severity: SeverityError, Code: "generated_column", Path: path, Table: t.Table.String(), Column: k,
				Message: fmt.Sprintf("key column %s.%s is generated: the replication stream (pgoutput) does not carry generated columns, so a change could not say which document it touches; use a stored column or another key", t.Table, k)})
		}
	}
}

// generatedJoin refuses a generated join column on the child side (the
// side resolution reads from the changed row): pgoutput does not send it,
// so a change of that table could not say which document holds the row.
func (c *compiler) generatedJoin(path string, t *TableInfo, cols []string) {
	for _, g := range t.generated(cols) {
		c.add(Problem{Severity: SeverityError, Code: "generated_column", Path: path, Table: t.Table.String(), Column: g,
			Message: fmt.Sprintf("join column %s.%s is generated: the replication stream (pgoutput) does not carry generated columns, so a change of %s could not say which document holds the row; join on a stored column (a trigger can keep it up to date)",
				t.Table, g, t.Table)})
	}
}

// fields refuses two fields of one object with the same name once the
// default columns (every column of the table) are filled in: a column
// (after rename), a relation and an aggregate. (With columns listed the
// config check already did this.)
func (c *compiler) fields(n *node) {
	owner := map[string]string{}
	claim := func(name, what string) {
		if prev, ok := owner[name]; ok {
			c.add(Problem{Severity: SeverityError, Code: "duplicate_field", Path: n.path, Table: n.info.Table.String(),
				Message: fmt.Sprintf("field %q is written twice in each object of %s (%s): by %s and by %s; OpenSearch and Elasticsearch refuse such documents: rename one of them (rename:, or the relation's name) or list columns:",
					name, n.path, n.info.Table, prev, what)})
			return
		}
		owner[name] = what
	}
	for _, col := range n.columns {
		field := col
		if to, ok := n.rename.Lookup(col); ok {
			field = to
		}
		claim(field, fmt.Sprintf("column %q", col))
	}
	for _, f := range n.fields {
		claim(f.Name, fmt.Sprintf("field %q", f.Name))
	}
	for _, ch := range n.children {
		what := "relation"
		if ch.kind == "aggregate" {
			what = "aggregate"
		}
		claim(ch.field, fmt.Sprintf("%s %q", what, ch.field))
	}
}

// rootIdentity checks that a DELETE of a root row carries its key.
func (c *compiler) rootIdentity(n *node) {
	t := n.info
	if !t.IsTable() || len(n.key) == 0 {
		return
	}
	c.leafIdentity(n.path+".table", t, n.key, "a DELETE of a row in it cannot say which document to delete")
	if t.ReplicaIdentity != IdentityNothing && t.InIdentity(n.key) {
		return
	}
	c.add(Problem{Severity: SeverityError, Code: "replica_identity", Path: n.path + ".table", Table: t.Table.String(), Column: strings.Join(n.key, ", "),
		Message: fmt.Sprintf("root table %s has REPLICA IDENTITY %s, whose old row does not carry the key %s, so a DELETE cannot say which document to delete",
			t.Table, t.ReplicaIdentity, strings.Join(n.key, ", ")),
		Fix: fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", t.Table)})
}

// checkSQL has the server plan every generated statement, so a mistake is
// reported at start rather than on the first change.
func checkSQL(ctx context.Context, q Querier, p *Plan) ([]Problem, error) {
	var problems []Problem
	explain := func(sql string, args ...any) error {
		rows, err := q.Query(ctx, "EXPLAIN "+sql, args...)
		if err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}
	for _, ix := range p.Indexes {
		args := make([]any, len(ix.keyCols))
		for i := range args {
			args[i] = []string{}
		}
		if err := explain(ix.docSQL, args...); err != nil {
			problems = append(problems, Problem{Severity: SeverityError, Code: "invalid_sql", Index: ix.Name(), Path: fmt.Sprintf("index %q", ix.Name()),
				Table: ix.root.info.Table.String(), Message: fmt.Sprintf("the document query does not run: %v", err)})
		}
	}
	for _, t := range p.tables {
		if r := p.resolve[t]; r.query != "" {
			args := make([]any, len(r.cols))
			for i := range args {
				args[i] = []string{}
			}
			if err := explain(r.query, args...); err != nil {
				problems = append(problems, Problem{Severity: SeverityError, Code: "invalid_sql", Index: r.ixNames(), Path: "resolution",
					Table: t.String(), Message: fmt.Sprintf("the resolution query of table %s does not run: %v", t, err)})
			}
		}
	}
	return problems, nil
}
