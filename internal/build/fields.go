package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/config"
)

// FieldFacts is what the server says of one computed field: the columns of
// its table the expression reads (system columns such as xmin included)
// and its result type. Columns is nil with Unknown set when they could not
// be derived (a standby: no temporary view can be created there).
type FieldFacts struct {
	Path    string   `json:"path"`
	Name    string   `json:"name"`
	Expr    string   `json:"expr"`
	Type    string   `json:"type"`
	Columns []string `json:"columns"`
	Unknown string   `json:"unknown,omitempty"`
}

// Fields lists the facts of every computed field of the index, in tree order.
func (ix *Index) Fields() []FieldFacts {
	var out []FieldFacts
	var walk func(n *node)
	walk = func(n *node) {
		out = append(out, n.facts...)
		for _, ch := range n.children {
			walk(ch)
		}
	}
	if ix.root != nil {
		walk(ix.root)
	}
	return out
}

// checkFields has the server plan and resolve every computed field:
//
//   - an expression it rejects is invalid_sql, with its message;
//   - one reading another table, or other rows of its own (a subquery), or
//     an aggregate or window over rows, is field_reads_table: relations
//     and aggregates do that, and their changes are followed;
//   - a VOLATILE function or the clock is field_volatile, a warning: the
//     document would change with no change in the database.
//
// The columns it reads and its type come from a temporary view
// (SELECT expr FROM table) created in a transaction that is rolled back:
// pg_depend holds the view's column dependencies, pg_attribute its type.
// Nothing needs capturing for them: every change of a row rebuilds the
// documents that hold it, whichever columns it changes.
func checkFields(ctx context.Context, q Querier, indexes []*Index) ([]Problem, error) {
	pc := &planChecks{q: q, trees: map[string][]string{}}
	return pc.each(indexes, func(n *node) bool { return len(n.fields) > 0 }, func(ix *Index, n *node) ([]Problem, error) {
		return pc.fieldProblems(ctx, ix, n)
	})
}

// fieldProblems checks each computed field of a node (fieldProblem), then
// derives the columns and types of those that passed (resolveFields) into
// n.facts.
func (pc *planChecks) fieldProblems(ctx context.Context, ix *Index, n *node) ([]Problem, error) {
	table := n.info.Table.String()
	var problems []Problem
	var good []int
	for i, f := range n.fields {
		ps, ok, err := pc.fieldProblem(ctx, ix, n, f)
		if err != nil {
			return nil, err
		}
		problems = append(problems, ps...)
		if ok {
			good = append(good, i)
		}
	}
	n.facts = make([]FieldFacts, len(n.fields))
	for i, f := range n.fields {
		n.facts[i] = FieldFacts{Path: fmt.Sprintf("%s.fields[%s]", n.path, f.Name), Name: f.Name, Expr: f.Expr}
	}
	if len(good) == 0 {
		return problems, nil
	}
	if err := resolveFields(ctx, pc.q, n, good); err != nil {
		for _, i := range good {
			n.facts[i].Unknown = err.Error()
		}
		problems = append(problems, Problem{Severity: SeverityInfo, Code: "field_columns", Index: ix.Name(), Path: n.path + ".fields", Table: table,
			Message: fmt.Sprintf("the columns the fields of %s read could not be derived (%v); documents are exact regardless: every change of a row of %s rebuilds the documents that hold it", table, err, table)})
	}
	return problems, nil
}

// fieldProblem checks one field: the server must plan its expression, it
// may read no other row or table (an error, and ok false), and what it
// calls that can move is a warning (ok stays true).
func (pc *planChecks) fieldProblem(ctx context.Context, ix *Index, n *node, f config.Field) (problems []Problem, ok bool, err error) {
	table := n.info.Table.String()
	path := fmt.Sprintf("%s.fields[%s]", n.path, f.Name)
	at := func(code, sev, msg, fix string) Problem {
		return Problem{Severity: sev, Code: code, Index: ix.Name(), Path: path, Table: table, Message: msg, Fix: fix}
	}
	var plan []byte
	if err := pc.q.QueryRow(ctx, "EXPLAIN (VERBOSE, FORMAT JSON) SELECT ("+f.Expr+"\n) FROM "+n.info.Table.Quoted()).Scan(&plan); err != nil {
		return []Problem{at("invalid_sql", SeverityError,
			fmt.Sprintf("index %s, field %s: expression %q on table %s: %v", ix.Name(), f.Name, f.Expr, table, err),
			"write an expression over the columns of "+table)}, false, nil
	}
	facts, err := readPlan(plan)
	if err != nil {
		return nil, false, fmt.Errorf("read the plan of field %s: %w", f.Name, err)
	}
	others, err := pc.fieldReads(ctx, n, facts, plan)
	if err != nil {
		return nil, false, err
	}
	if len(others) > 0 && n.info.IsTable() {
		return []Problem{at("field_reads_table", SeverityError,
			fmt.Sprintf("index %s, field %s: expression %q on table %s reads %s: a field is computed from its own row only; relations and aggregates read other rows and tables, and their changes are followed",
				ix.Name(), f.Name, f.Expr, table, strings.Join(others, ", ")),
			"use a relation (for the rows themselves) or an aggregate (count, sum, min, max, avg, ids) of the index instead")}, false, nil
	}
	volatile, stable, err := pc.classify(ctx, facts.calls)
	if err != nil {
		return nil, false, err
	}
	moving := dedupe(append(append(facts.clock, clockCalls(facts.calls)...), volatile...))
	moving = append(moving, clockLiteral.FindAllString(f.Expr, -1)...)
	if len(moving) > 0 {
		problems = append(problems, at("field_volatile", SeverityWarning,
			fmt.Sprintf("index %s, field %s: expression %q calls %s, which can give another value with no change in the database: the field is what it was when the document was last built, and a rebuild (or backfill) gives a new value (and a function that writes, such as nextval, is refused when the document is built: flusso-pg's sessions are read-only)",
				ix.Name(), f.Name, f.Expr, strings.Join(moving, ", ")), ""))
	}
	if len(stable) > 0 {
		problems = append(problems, at("field_volatile", SeverityWarning,
			fmt.Sprintf("index %s, field %s: expression %q calls STABLE %s: if it reads other tables, their changes are not followed and the field may stay stale",
				ix.Name(), f.Name, f.Expr, strings.Join(stable, ", ")), ""))
	}
	return problems, true, nil
}

// fieldReads is reads, and the other rows of its own table an aggregate,
// a window or a set-returning function at the plan's top gathers.
func (pc *planChecks) fieldReads(ctx context.Context, n *node, facts *planFacts, plan []byte) ([]string, error) {
	others, err := pc.reads(ctx, n, facts)
	if err != nil {
		return nil, err
	}
	if top := topNode(plan); top == "Aggregate" || top == "WindowAgg" || top == "ProjectSet" {
		others = append(others, n.info.Table.String()+" (other rows of it, through "+strings.ToLower(top)+")")
		sort.Strings(others)
	}
	return others, nil
}

// topNode is the type of a plan's top node.
func topNode(raw []byte) string {
	var top []struct {
		Plan struct {
			NodeType string `json:"Node Type"`
		} `json:"Plan"`
	}
	if json.Unmarshal(raw, &top) != nil || len(top) == 0 {
		return ""
	}
	return top[0].Plan.NodeType
}

type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// probeSQL reads a probe view's type and the columns of the table its rule
// depends on (pg_depend's refobjsubid is the attnum, negative for system
// columns).
const probeSQL = `SELECT pg_catalog.format_type(va.atttypid, va.atttypmod),
  coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
    FROM pg_catalog.pg_rewrite r
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
    JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE r.ev_class = va.attrelid AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND d.refobjid = $2::regclass AND d.refobjsubid <> 0), '{}')
FROM pg_catalog.pg_attribute va WHERE va.attrelid = $1::regclass AND va.attnum = 1`

// resolveFields creates one temporary view per field in a transaction it
// rolls back, and reads each one's type and columns.
func resolveFields(ctx context.Context, q Querier, n *node, which []int) error {
	b, ok := q.(beginner)
	if !ok {
		return errors.New("no connection to create a temporary view on")
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// flusso-pg's sessions default to read-only; a temporary view is a
	// catalog write, undone by the rollback.
	if _, err := tx.Exec(ctx, "SET TRANSACTION READ WRITE"); err != nil {
		return err
	}
	for _, i := range which {
		view := fmt.Sprintf("pg_temp.flusso_field_probe_%d", i)
		if _, err := tx.Exec(ctx, "CREATE TEMPORARY VIEW "+view+" AS SELECT ("+n.fields[i].Expr+"\n) AS v FROM "+n.info.Table.Quoted()); err != nil {
			return err
		}
		var typ string
		var cols []string
		if err := tx.QueryRow(ctx, probeSQL, view, n.info.Table.Quoted()).Scan(&typ, &cols); err != nil {
			return fmt.Errorf("read the probe view of field %s: %w", n.fields[i].Name, err)
		}
		n.facts[i].Type, n.facts[i].Columns = typ, cols
	}
	return nil
}
