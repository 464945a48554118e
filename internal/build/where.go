package build

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// checkWhere has the server plan every where: clause (EXPLAIN (VERBOSE,
// FORMAT JSON) of SELECT 1 FROM table WHERE (...)) and refuses what it
// cannot follow exactly:
//
//   - a condition the server rejects (invalid_sql);
//   - a condition that reads another table, or other rows of its own
//     (a subquery; where_reads_table): the stream follows only the tables
//     the index names, so a change of such a table rebuilds nothing and the
//     documents whose where result it changes stay stale;
//   - a condition that calls a VOLATILE function, or reads the clock
//     (now(), CURRENT_TIMESTAMP, 'now'::timestamptz; where_volatile): its
//     result changes with no change in the WAL; and a function that writes
//     (nextval) is refused by flusso-pg's read-only sessions anyway.
//
// A STABLE function outside pg_catalog may read tables too: that is a
// warning (the server cannot tell).
func checkWhere(ctx context.Context, q Querier, indexes []*Index) ([]Problem, error) {
	pc := &planChecks{q: q, trees: map[string][]string{}}
	return pc.each(indexes, func(n *node) bool { return n.where != "" }, func(ix *Index, n *node) ([]Problem, error) {
		return pc.whereProblems(ctx, ix, n)
	})
}

// planChecks is what checkWhere and checkFields keep across the nodes they
// check: the server, the relation tree of each table (by Table.String) and
// the search_path, each read once.
type planChecks struct {
	q       Querier
	trees   map[string][]string // table -> itself and its partitions / inheritance children
	schemas []string            // current_schemas(true), nil until read
}

// each runs check on every node of the indexes that has a table and that
// want picks, depth first, and gathers the problems. An error stops it,
// with the problems found so far.
func (pc *planChecks) each(indexes []*Index, want func(*node) bool, check func(ix *Index, n *node) ([]Problem, error)) ([]Problem, error) {
	var problems []Problem
	var walk func(ix *Index, n *node) error
	walk = func(ix *Index, n *node) error {
		if want(n) && n.info != nil {
			ps, err := check(ix, n)
			if err != nil {
				return err
			}
			problems = append(problems, ps...)
		}
		for _, ch := range n.children {
			if err := walk(ix, ch); err != nil {
				return err
			}
		}
		return nil
	}
	for _, ix := range indexes {
		if ix.root != nil {
			if err := walk(ix, ix.root); err != nil {
				return problems, err
			}
		}
	}
	return problems, nil
}

// ownTree is the relation tree of n's table (relationTree), read once.
func (pc *planChecks) ownTree(ctx context.Context, n *node) ([]string, error) {
	table := n.info.Table.String()
	if own, ok := pc.trees[table]; ok {
		return own, nil
	}
	own, err := relationTree(ctx, pc.q, n.info)
	if err != nil {
		return nil, err
	}
	pc.trees[table] = own
	return own, nil
}

// classify sorts the functions a plan calls by volatility (classifyCalls),
// reading the search_path the first time.
func (pc *planChecks) classify(ctx context.Context, calls []call) (volatile, stable []string, err error) {
	if pc.schemas == nil {
		if err := pc.q.QueryRow(ctx, "SELECT current_schemas(true)::text[]").Scan(&pc.schemas); err != nil {
			return nil, nil, fmt.Errorf("read the search_path: %w", err)
		}
	}
	return classifyCalls(ctx, pc.q, calls, pc.schemas)
}

// whereProblems checks one node's where: the server must plan it, and it
// may read no other table (reads) and nothing that moves with no
// change in the WAL (whereCallProblems).
func (pc *planChecks) whereProblems(ctx context.Context, ix *Index, n *node) ([]Problem, error) {
	table := n.info.Table.String()
	at := func(code, sev, msg, fix string) Problem {
		return Problem{Severity: sev, Code: code, Index: ix.Name(), Path: n.path + ".where", Table: table, Message: msg, Fix: fix}
	}
	var plan []byte
	err := pc.q.QueryRow(ctx, "EXPLAIN (VERBOSE, FORMAT JSON) SELECT 1 FROM "+n.info.Table.Quoted()+" WHERE ("+n.where+")").Scan(&plan)
	if err != nil {
		return []Problem{at("invalid_sql", SeverityError, fmt.Sprintf("where %q on table %s: %v", n.where, table, err),
			"write a condition on the columns of "+table)}, nil
	}
	facts, err := readPlan(plan)
	if err != nil {
		return nil, fmt.Errorf("read the plan of where %q: %w", n.where, err)
	}
	var problems []Problem
	others, err := pc.reads(ctx, n, facts)
	if err != nil {
		return nil, err
	}
	if len(others) > 0 {
		problems = append(problems, at("where_reads_table", SeverityError,
			fmt.Sprintf("where %q on table %s reads %s: the stream follows only the tables the index names, so a change there would rebuild no document, and the documents whose where result it changes would stay stale",
				n.where, table, strings.Join(others, ", ")),
			"read that table through a relation of the index, or keep what the condition needs in a column of "+table+" (a trigger can maintain it)"))
	}
	if err := pc.clockLiterals(ctx, n, facts); err != nil {
		return nil, err
	}
	volatile, stable, err := pc.classify(ctx, facts.calls)
	if err != nil {
		return nil, err
	}
	clock := dedupe(append(facts.clock, clockCalls(facts.calls)...))
	return append(problems, whereCallProblems(at, n.where, table, clock, volatile, stable)...), nil
}

// reads lists, sorted, what a plan over n's table reads besides the row
// itself: other tables, and other rows of its own (a subquery), named once.
// Nothing for a view: its plan scans the tables it reads, and not_a_table
// already says they are not followed.
func (pc *planChecks) reads(ctx context.Context, n *node, facts *planFacts) ([]string, error) {
	own, err := pc.ownTree(ctx, n)
	if err != nil || !n.info.IsTable() {
		return nil, err
	}
	table := n.info.Table.String()
	var others []string
	for rel, count := range facts.relations {
		if !slices.Contains(own, rel) {
			others = append(others, rel)
		} else if count > 1 && !slices.Contains(others, table+" (other rows of it)") {
			others = append(others, table+" (other rows of it)")
		}
	}
	sort.Strings(others)
	return others, nil
}

// clockLiterals adds to facts.clock the 'now', 'today'... of a where that
// plans to other constants when planned again: cast to a date or time they
// become constants when the statement is parsed, so another transaction,
// at another time, plans them to other constants.
func (pc *planChecks) clockLiterals(ctx context.Context, n *node, facts *planFacts) error {
	m := clockLiteral.FindAllString(n.where, -1)
	if len(m) == 0 {
		return nil
	}
	var again []byte
	// (Another text: a driver's statement cache would hand back the
	// statement parsed the first time, constants and all.)
	if err := pc.q.QueryRow(ctx, "EXPLAIN (VERBOSE, FORMAT JSON) SELECT 1 FROM "+n.info.Table.Quoted()+" WHERE ("+n.where+") /* planned again */").Scan(&again); err != nil {
		return fmt.Errorf("plan where %q: %w", n.where, err)
	}
	f2, err := readPlan(again)
	if err != nil {
		return fmt.Errorf("read the plan of where %q: %w", n.where, err)
	}
	if f2.text != facts.text {
		facts.clock = append(facts.clock, m...)
	}
	return nil
}

// whereCallProblems are a where's where_volatile problems: the clock it
// reads and the VOLATILE functions it calls are errors, the STABLE ones a
// warning.
func whereCallProblems(at func(code, sev, msg, fix string) Problem, where, table string, clock, volatile, stable []string) []Problem {
	var problems []Problem
	if len(clock) > 0 {
		problems = append(problems, at("where_volatile", SeverityError,
			fmt.Sprintf("where %q on table %s reads the clock (%s): its result changes as time passes, with no change in the WAL, so a document would not follow it (a row would not appear or go when its time comes)",
				where, table, strings.Join(clock, ", ")),
			"compare with a stored column that a change sets (a flag, a status), or apply the time condition when searching"))
	}
	if len(volatile) > 0 {
		problems = append(problems, at("where_volatile", SeverityError,
			fmt.Sprintf("where %q on table %s calls VOLATILE %s: its result can change with no change in the WAL, so documents would not follow it (and a function that writes is refused: flusso-pg's sessions are read-only)",
				where, table, strings.Join(volatile, ", ")),
			"keep what the condition needs in a column, or declare the function IMMUTABLE if it truly is"))
	}
	if len(stable) > 0 {
		problems = append(problems, at("where_volatile", SeverityWarning,
			fmt.Sprintf("where %q on table %s calls STABLE %s: if it reads other tables, their changes are not followed and documents may stay stale",
				where, table, strings.Join(stable, ", ")), ""))
	}
	return problems
}

// planFacts is what a where's plan reads: relations (schema.name, as
// Table.String spells them, with how often each is scanned), functions
// called, and clock values.
type planFacts struct {
	relations map[string]int
	calls     []call
	clock     []string
	text      string // every expression of the plan, for literal checks
}

type call struct{ schema, name string }

func (c call) String() string {
	if c.schema != "" {
		return c.schema + "." + c.name + "()"
	}
	return c.name + "()"
}

// the expressions EXPLAIN (VERBOSE) prints, as JSON keys
var exprKeys = []string{"Filter", "Join Filter", "Hash Cond", "Merge Cond", "Index Cond", "Recheck Cond",
	"One-Time Filter", "TID Cond", "Function Call", "Table Function Call", "Output", "Order By", "Sort Key", "Group Key"}

var (
	stringLit    = regexp.MustCompile(`'(?:[^']|'')*'`)
	quotedIdent  = `"(?:[^"]|"")+"`
	plainIdent   = `[A-Za-z_][A-Za-z0-9_$]*`
	ident        = `(?:` + quotedIdent + `|` + plainIdent + `)`
	funcCall     = regexp.MustCompile(`(?:^|[^A-Za-z0-9_$."])(` + ident + `(?:\.` + ident + `)?)\(`)
	clockKeyword = regexp.MustCompile(`\b(CURRENT_DATE|CURRENT_TIME|CURRENT_TIMESTAMP|LOCALTIME|LOCALTIMESTAMP)\b`)
	quotedOnly   = regexp.MustCompile(quotedIdent)
	clockLiteral = regexp.MustCompile(`(?i)'\s*(now|today|tomorrow|yesterday)\s*'`)
	qualified    = regexp.MustCompile(`^(` + ident + `)(?:\.(` + ident + `))?$`)
)

func readPlan(raw []byte) (*planFacts, error) {
	var top []map[string]any
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	f := &planFacts{relations: map[string]int{}}
	var texts []string
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		if rel, ok := n["Relation Name"].(string); ok {
			schema, _ := n["Schema"].(string)
			f.relations[tableName(schema, rel)]++
		}
		if fn, ok := n["Function Name"].(string); ok {
			schema, _ := n["Schema"].(string)
			f.calls = append(f.calls, call{schema: schema, name: fn})
		}
		for _, k := range exprKeys {
			switch v := n[k].(type) {
			case string:
				texts = append(texts, v)
			case []any:
				for _, e := range v {
					if s, ok := e.(string); ok {
						texts = append(texts, s)
					}
				}
			}
		}
		if plans, ok := n["Plans"].([]any); ok {
			for _, p := range plans {
				if m, ok := p.(map[string]any); ok {
					walk(m)
				}
			}
		}
	}
	for _, t := range top {
		if p, ok := t["Plan"].(map[string]any); ok {
			walk(p)
		}
	}
	f.text = strings.Join(texts, "\n")
	for _, text := range texts {
		bare := stringLit.ReplaceAllString(text, "''")
		for _, m := range funcCall.FindAllStringSubmatch(bare, -1) {
			f.calls = append(f.calls, parseCall(m[1]))
		}
		for _, m := range clockKeyword.FindAllString(quotedOnly.ReplaceAllString(bare, `""`), -1) {
			f.clock = append(f.clock, m)
		}
	}
	return f, nil
}

func tableName(schema, name string) string {
	return change.Table{Schema: schema, Name: name}.String()
}

func unquote(s string) string {
	if strings.HasPrefix(s, `"`) {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

func parseCall(s string) call {
	parts := qualified.FindStringSubmatch(s)
	if parts == nil {
		return call{name: s}
	}
	if parts[2] == "" {
		return call{name: unquote(parts[1])}
	}
	return call{schema: unquote(parts[1]), name: unquote(parts[2])}
}

// clockFuncs are the pg_catalog functions whose result is the time.
var clockFuncs = []string{"now", "statement_timestamp", "transaction_timestamp", "clock_timestamp", "timeofday"}

func clockCalls(calls []call) []string {
	var out []string
	for _, c := range calls {
		if (c.schema == "" || c.schema == "pg_catalog") && slices.Contains(clockFuncs, c.name) {
			out = append(out, c.String())
		}
	}
	return out
}

// classifyCalls looks the called names up in pg_proc: a name whose every
// candidate (in its schema, or on the search path) is VOLATILE is volatile;
// STABLE outside pg_catalog, stable. Names that are no function (casts'
// type names, COALESCE...) and the clock functions are left out.
func classifyCalls(ctx context.Context, q Querier, calls []call, schemas []string) (volatile, stable []string, err error) {
	if len(calls) == 0 {
		return nil, nil, nil
	}
	var names []string
	for _, c := range calls {
		names = append(names, c.name)
	}
	rows, err := q.Query(ctx, `SELECT p.proname, n.nspname, p.provolatile::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = ANY($1)`, dedupe(names))
	if err != nil {
		return nil, nil, fmt.Errorf("look up the functions of a where: %w", err)
	}
	defer rows.Close()
	type cand struct{ schema, vol string }
	byName := map[string][]cand{}
	for rows.Next() {
		var name, schema, vol string
		if err := rows.Scan(&name, &schema, &vol); err != nil {
			return nil, nil, err
		}
		byName[name] = append(byName[name], cand{schema, vol})
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	for _, c := range calls {
		if seen[c.String()] || len(clockCalls([]call{c})) > 0 {
			continue
		}
		seen[c.String()] = true
		var vols []string
		user := false
		for _, cd := range byName[c.name] {
			if (c.schema != "" && cd.schema == c.schema) || (c.schema == "" && slices.Contains(schemas, cd.schema)) {
				vols = append(vols, cd.vol)
				user = user || (cd.schema != "pg_catalog" && cd.schema != "information_schema")
			}
		}
		if len(vols) == 0 {
			continue
		}
		switch {
		case !slices.ContainsFunc(vols, func(v string) bool { return v != "v" }):
			volatile = append(volatile, c.String())
		case user && !slices.ContainsFunc(vols, func(v string) bool { return v == "i" }):
			stable = append(stable, c.String())
		}
	}
	return volatile, stable, nil
}

// relationTree lists the table and every partition or inheritance child
// below it, as Table.String spells them: a plan over the table scans them.
func relationTree(ctx context.Context, q Querier, info *TableInfo) ([]string, error) {
	rows, err := q.Query(ctx, `WITH RECURSIVE tree(oid) AS (
  SELECT pg_catalog.to_regclass($1)::oid
  UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
SELECT n.nspname, c.relname FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`, info.Table.Quoted())
	if err != nil {
		return nil, fmt.Errorf("read the partitions of %s: %w", info.Table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s, r string
		if err := rows.Scan(&s, &r); err != nil {
			return nil, err
		}
		out = append(out, tableName(s, r))
	}
	return out, rows.Err()
}
