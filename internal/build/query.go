package build

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
)

// Key is a root key: the key columns' values in Postgres text format, in key order.
type Key []string

// String gives the key as one string, the "id" field of a line: the value
// of a one-column key as it is; a composite key's values joined with ":",
// each with "\" written "\\" and ":" written "\:", so that distinct keys
// never share an id (('x:y','z') is x\:y:z, ('x','y:z') is x:y\:z).
func (k Key) String() string {
	if len(k) == 1 {
		return k[0]
	}
	n := len(k)
	for _, v := range k {
		n += len(v) + strings.Count(v, ":") + strings.Count(v, `\`)
	}
	b := make([]byte, 0, n)
	for i, v := range k {
		if i > 0 {
			b = append(b, ':')
		}
		for j := 0; j < len(v); j++ {
			if c := v[j]; c == ':' || c == '\\' {
				b = append(b, '\\')
			}
			b = append(b, v[j])
		}
	}
	return string(b)
}

// ID identifies k in a map: its values joined with \x00, which cannot
// appear in a Postgres text value, so distinct keys never share an ID. It is
// the one key identity of build and its callers.
func (k Key) ID() string { return strings.Join(k, "\x00") }

// Doc is one built document. Its byte slices alias the driver's buffer:
// they are valid only during the callback.
//
// Key and ID spell the key as the root row does (t0.<key>: citext's case,
// numeric's scale), whatever spelling looked the row up; only a delete,
// whose row is gone, spells it as the looked-up value (cast to the key's
// type and printed back by the server). When a key was looked up in a
// spelling the row does not have (a child's citext foreign key in another
// case, 2 for the row's 2.0), Build hands out the upsert under the row's
// spelling and, after the batch's upserts, a delete under the looked-up one
// unless a row of the batch spells it: an id no row spells never holds a
// document.
type Doc struct {
	Key    []byte // JSON object of the root key columns as to_json gives them: {"id":42}
	ID     string // the key as one string (Key.String of the text form)
	Values Key    // Build: the key exactly as passed in; Scan: the row's key in text form
	Doc    []byte // the JSON document; nil when the root row is gone or no longer matches the root's where
	// Input is, for Build, the position in its keys of the key this
	// document was built for (the first, when a key was given twice); -1
	// for Scan. Callers find what they know about the key by it, whatever
	// spelling of the key the row has.
	Input int
}

// maxPairs is how many name/value pairs go into one json_build_object call:
// Postgres caps a function call at 100 arguments.
const maxPairs = 50

func quoteIdent(s string) string { return change.QuoteIdent(s) }
func lit(s string) string        { return change.QuoteLiteral(s) }
func col(alias, c string) string { return alias + "." + quoteIdent(c) }

// sqlgen hands out table aliases t1, t2, ... within one statement (t0 is the root).
type sqlgen struct{ n int }

func (g *sqlgen) alias() string {
	g.n++
	return "t" + strconv.Itoa(g.n)
}

// from gives "table AS alias", or a filtered derived table when the node has
// a where, so its unqualified column names refer to this table only.
func from(info *TableInfo, where, alias string) string {
	if where == "" {
		return info.Table.Quoted() + " AS " + alias
	}
	return "(SELECT * FROM " + info.Table.Quoted() + " WHERE (" + where + ")) AS " + alias
}

// source is from for node n: with computed fields, a derived table whose
// extra columns are the fields' values, each expression evaluated where only
// the node's own table is in scope (system columns such as xmin included).
func source(n *node, alias string) string {
	if len(n.fields) == 0 {
		return from(n.info, n.where, alias)
	}
	var b strings.Builder
	b.WriteString("(SELECT *")
	for i, f := range n.fields {
		// (A newline before the parenthesis: a -- comment ends there.)
		b.WriteString(", (" + f.Expr + "\n) AS " + quoteIdent(fieldColumn(i)))
	}
	b.WriteString(" FROM " + n.info.Table.Quoted())
	if n.where != "" {
		b.WriteString(" WHERE (" + n.where + ")")
	}
	return b.String() + ") AS " + alias
}

// fieldColumn names the derived table's column holding field i: a name no
// table column has (a dot cannot be written unquoted).
func fieldColumn(i int) string { return "flusso.field." + strconv.Itoa(i) }

// on gives lower.to = upper.from for each pair.
func on(pairs config.Pairs, upper, lower string) string {
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = col(lower, p.To) + " = " + col(upper, p.From)
	}
	return strings.Join(parts, " AND ")
}

// buildObject gives json_build_object over pairs of (SQL literal name, expression),
// chunked and merged as text when there are more than maxPairs, which keeps
// the keys in order and the values exactly as json gives them.
func buildObject(names, exprs []string) string {
	if len(names) == 0 {
		return "'{}'::json"
	}
	var chunks []string
	for start := 0; start < len(names); start += maxPairs {
		end := min(start+maxPairs, len(names))
		var b strings.Builder
		b.WriteString("json_build_object(")
		for i := start; i < end; i++ {
			if i > start {
				b.WriteString(", ")
			}
			b.WriteString(names[i] + ", " + exprs[i])
		}
		b.WriteString(")")
		chunks = append(chunks, b.String())
	}
	if len(chunks) == 1 {
		return chunks[0]
	}
	var b strings.Builder
	b.WriteString("(")
	for i, c := range chunks {
		switch {
		case i == 0:
			b.WriteString("left(" + c + "::text, -1)")
		case i == len(chunks)-1:
			b.WriteString(" || ', ' || substr(" + c + "::text, 2)")
		default:
			b.WriteString(" || ', ' || substr(left(" + c + "::text, -1), 2)")
		}
	}
	b.WriteString(")::json")
	return b.String()
}

// object gives the JSON object of node n for the row aliased a: its columns,
// then its relations and aggregates. joins are LATERAL subqueries to put in
// the FROM clause right after a: arrays and aggregates over the same table,
// join and where are computed in one pass over the related rows.
func (g *sqlgen) object(n *node, a string) (expr, joins string) {
	var names, exprs []string
	for _, c := range n.columns {
		field := c
		if to, ok := n.rename.Lookup(c); ok {
			field = to
		}
		names = append(names, lit(field))
		exprs = append(exprs, col(a, c))
	}
	for i, f := range n.fields {
		names = append(names, lit(f.Name))
		exprs = append(exprs, col(a, fieldColumn(i)))
	}
	grouped := map[*node]string{}
	var lateral strings.Builder
	for _, grp := range groups(n.children) {
		ga, gn := g.alias(), g.alias()
		var outs, inner []string
		for i, ch := range grp {
			f := gn + ".f" + strconv.Itoa(i)
			e, j := g.aggregateOf(ch, ga)
			inner = append(inner, j)
			outs = append(outs, e+" AS f"+strconv.Itoa(i))
			if ch.kind == config.HasMany || ch.fn == config.IDs {
				f = "COALESCE(" + f + ", '[]'::json)"
			}
			grouped[ch] = f
		}
		first := grp[0]
		lateral.WriteString(" CROSS JOIN LATERAL (SELECT " + strings.Join(outs, ", ") + " FROM " + source(first, ga) +
			strings.Join(inner, "") + " WHERE " + on(first.join, a, ga) + ") AS " + gn)
	}
	for _, ch := range n.children {
		names = append(names, lit(ch.field))
		if f, ok := grouped[ch]; ok {
			exprs = append(exprs, f)
		} else {
			exprs = append(exprs, g.child(ch, a))
		}
	}
	return buildObject(names, exprs), lateral.String()
}

// groups finds the children computed together: aggregates and unlimited
// has_many arrays over the same table, join and where, two or more.
func groups(children []*node) [][]*node {
	var out [][]*node
	index := map[string]int{}
	for _, ch := range children {
		if len(ch.fields) > 0 || (ch.kind != "aggregate" && (ch.kind != config.HasMany || ch.limit > 0)) {
			continue
		}
		k := ch.info.Table.Quoted() + "\x00" + ch.where
		for _, p := range ch.join {
			k += "\x00" + p.From + "\x00" + p.To
		}
		if i, ok := index[k]; ok {
			out[i] = append(out[i], ch)
		} else {
			index[k] = len(out)
			out = append(out, []*node{ch})
		}
	}
	kept := out[:0]
	for _, grp := range out {
		if len(grp) > 1 {
			kept = append(kept, grp)
		}
	}
	return kept
}

// aggregateOf gives the aggregate expression of a grouped child over rows aliased a.
func (g *sqlgen) aggregateOf(n *node, a string) (expr, joins string) {
	if n.kind == config.HasMany {
		v, j := g.value(n, a)
		return "json_agg(" + v + order(n, a) + ")", j
	}
	switch n.fn {
	case config.Count:
		return "count(*)", ""
	case config.IDs:
		return "json_agg(" + keyValue(n, a) + order(&node{key: n.key}, a) + ")", ""
	}
	return n.fn + "(" + col(a, n.column) + ")", ""
}

// keyValue is a row's key as ids gives it: the value, or an object for a composite key.
func keyValue(n *node, a string) string {
	if len(n.key) == 1 {
		return col(a, n.key[0])
	}
	var names, exprs []string
	for _, k := range n.key {
		names = append(names, lit(k))
		exprs = append(exprs, col(a, k))
	}
	return buildObject(names, exprs)
}

// value is what one related row contributes: its object, or with scalar its one column.
func (g *sqlgen) value(n *node, a string) (expr, joins string) {
	if n.scalar && len(n.columns) == 1 {
		return col(a, n.columns[0]), ""
	}
	return g.object(n, a)
}

// order gives the ORDER BY terms of an array: order_by, then the key as
// the last tie-breaker, so a document (and which rows a limit keeps) is the
// same every time it is built, by backfill and follow alike.
func order(n *node, a string) string {
	var terms []string
	for _, o := range n.orderBy {
		t := col(a, o.Column)
		if o.Desc {
			t += " DESC"
		}
		terms = append(terms, t)
	}
	for _, k := range n.key {
		if !slices.ContainsFunc(n.orderBy, func(o config.OrderBy) bool { return o.Column == k }) {
			terms = append(terms, col(a, k))
		}
	}
	if len(terms) == 0 {
		return ""
	}
	return " ORDER BY " + strings.Join(terms, ", ")
}

// child gives the expression of one relation or aggregate of the row aliased up.
func (g *sqlgen) child(n *node, up string) string {
	a := g.alias()
	switch n.kind {
	case config.BelongsTo, config.HasOne:
		v, j := g.value(n, a)
		ord := ""
		if n.kind == config.HasOne {
			ord = order(n, a) // several matching rows: the first in key order, the same every time
		}
		return "(SELECT " + v + " FROM " + source(n, a) + j + " WHERE " + on(n.join, up, a) + ord + " LIMIT 1)"
	case config.HasMany:
		v, j := g.value(n, a)
		var src string
		if n.limit > 0 {
			inner := g.alias()
			src = "(SELECT " + inner + ".* FROM " + source(n, inner) + " WHERE " + on(n.join, up, inner) +
				order(n, inner) + " LIMIT " + strconv.Itoa(n.limit) + ") AS " + a + j
		} else {
			src = source(n, a) + j + " WHERE " + on(n.join, up, a)
		}
		return "COALESCE((SELECT json_agg(" + v + order(n, a) + ") FROM " + src + "), '[]'::json)"
	case config.ManyToMany:
		th := g.alias()
		v, j := g.value(n, a)
		var src string
		if n.limit > 0 {
			inner := g.alias()
			src = "(SELECT " + inner + ".* FROM " + from(n.through, "", th) + " JOIN " + source(n, inner) +
				" ON " + on(n.targetJoin, th, inner) + " WHERE " + on(n.join, up, th) + order(n, inner) +
				" LIMIT " + strconv.Itoa(n.limit) + ") AS " + a + j
		} else {
			src = from(n.through, "", th) + " JOIN " + source(n, a) + " ON " + on(n.targetJoin, th, a) + j +
				" WHERE " + on(n.join, up, th)
		}
		return "COALESCE((SELECT json_agg(" + v + order(n, a) + ") FROM " + src + "), '[]'::json)"
	case "aggregate":
		src := source(n, a) + " WHERE " + on(n.join, up, a)
		switch n.fn {
		case config.Count:
			return "(SELECT count(*) FROM " + src + ")"
		case config.IDs:
			return "COALESCE((SELECT json_agg(" + keyValue(n, a) + order(&node{key: n.key}, a) + ") FROM " + src + "), '[]'::json)"
		default:
			return "(SELECT " + n.fn + "(" + col(a, n.column) + ") FROM " + src + ")"
		}
	}
	panic("build: unknown node kind " + n.kind)
}

// keyObject gives the key as compact JSON text, {"id":42}, each value as
// to_json prints it (null for a NULL, which validate refuses for tables
// but a view's key: may still give: the line stays JSON).
func keyObject(cols, exprs []string) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		name, _ := json.Marshal(c)
		sep := ","
		if i == 0 {
			sep = "{"
		}
		parts[i] = lit(sep+string(name)+":") + " || COALESCE(to_json(" + exprs[i] + ")::text, 'null')"
	}
	return "(" + strings.Join(parts, " || ") + " || '}')"
}

// documentSQL is Build's statement: one text[] parameter per key column;
// every key comes back: the key as passed in (i<n>), as looked up (its JSON
// and texts, for a delete), and as the row spells it (d.key, d.r<n>; NULL
// with a NULL document when the row is gone).
//
// With one, the statement for a single key: one text parameter per key
// column, the same rows. A commit of one row, the common case of a quiet
// stream, is then one index lookup the server can plan once: over unnest
// of an array the generic plan's estimate (ten keys) never beats the
// custom plan's, so that statement is planned again at every execution —
// most of its time on the server for one key (docs/benchmarks.md).
func documentSQL(ix *Index, one bool) string {
	g := &sqlgen{}
	var vs, casts, keyExprs, inputs, texts, rowExprs, rowTexts, conds []string
	for i, c := range ix.keyCols {
		v := "v" + strconv.Itoa(i)
		k := "k" + strconv.Itoa(i)
		vs = append(vs, v)
		casts = append(casts, "v."+v+" AS i"+strconv.Itoa(i)+", v."+v+"::"+ix.keyType[i]+" AS "+k)
		inputs = append(inputs, "k.i"+strconv.Itoa(i))
		keyExprs = append(keyExprs, "k."+k)
		texts = append(texts, "k."+k+"::text")
		rowExprs = append(rowExprs, col("t0", c))
		rowTexts = append(rowTexts, col("t0", c)+"::text AS r"+strconv.Itoa(i))
		conds = append(conds, col("t0", c)+" = k."+k)
	}
	params := make([]string, len(vs))
	for i := range vs {
		params[i] = "$" + strconv.Itoa(i+1) + "::text"
		if !one {
			params[i] += "[]"
		}
	}
	from := "unnest(" + strings.Join(params, ", ") + ")"
	if one {
		from = "(VALUES (" + strings.Join(params, ", ") + "))"
	}
	var dr []string
	for i := range ix.keyCols {
		dr = append(dr, "d.r"+strconv.Itoa(i))
	}
	var b strings.Builder
	b.WriteString("SELECT " + strings.Join(inputs, ", ") + ", " + keyObject(ix.keyCols, keyExprs) + " AS key, " + strings.Join(texts, ", ") +
		", d.key, " + strings.Join(dr, ", ") + ", d.doc\n")
	b.WriteString("FROM (SELECT " + strings.Join(casts, ", ") + " FROM " + from + " AS v(" + strings.Join(vs, ", ") + ")) AS k\n")
	obj, joins := g.object(ix.root, "t0")
	b.WriteString("LEFT JOIN LATERAL (SELECT " + keyObject(ix.keyCols, rowExprs) + " AS key, " + strings.Join(rowTexts, ", ") + ", " + obj + " AS doc\n")
	b.WriteString("  FROM " + source(ix.root, "t0") + joins + " WHERE " + strings.Join(conds, " AND ") + ") AS d ON true")
	return b.String()
}

// scanSQL is Scan's statement: keyset pagination over the root key, with
// the lower bound when after, the upper bound when upTo, and $n the limit
// (NULL: none).
func scanSQL(ix *Index, after, upTo bool) string {
	g := &sqlgen{}
	var keyExprs, texts, cols []string
	for _, c := range ix.keyCols {
		keyExprs = append(keyExprs, col("t0", c))
		texts = append(texts, col("t0", c)+"::text")
		cols = append(cols, col("t0", c))
	}
	n := 0
	params := func() string {
		ps := make([]string, len(ix.keyCols))
		for i := range ix.keyCols {
			n++
			ps[i] = "$" + strconv.Itoa(n) + "::" + ix.keyType[i]
		}
		return "(" + strings.Join(ps, ", ") + ")"
	}
	var conds []string
	row := "(" + strings.Join(cols, ", ") + ")"
	if after {
		conds = append(conds, row+" > "+params())
	}
	if upTo {
		conds = append(conds, row+" <= "+params())
	}
	var b strings.Builder
	obj, joins := g.object(ix.root, "t0")
	b.WriteString("SELECT " + keyObject(ix.keyCols, keyExprs) + " AS key, " + strings.Join(texts, ", ") + ",\n  " + obj + " AS doc\n")
	b.WriteString("FROM " + source(ix.root, "t0") + joins)
	if len(conds) > 0 {
		b.WriteString("\nWHERE " + strings.Join(conds, " AND "))
	}
	b.WriteString("\nORDER BY " + strings.Join(cols, ", ") + "\nLIMIT $" + strconv.Itoa(n+1) + "::bigint")
	return b.String()
}

// ScanSQL is Scan's statement, for explain: with both bounds.
func (ix *Index) ScanSQL() string { return ix.scanSQL[1][1] }

// Build builds the documents of keys with one query, calling fn once per
// distinct key (Doc.Doc nil: the root row is gone, write a delete).
func (ix *Index) Build(ctx context.Context, q Querier, keys []Key, fn func(Doc) error) error {
	if len(keys) == 0 {
		return nil
	}
	cols := make([][]string, len(ix.keyCols))
	first := make(map[string]int, len(keys)) // Key.ID → its first position in keys
	for pos, k := range keys {
		if len(k) != len(ix.keyCols) {
			return fmt.Errorf("index %s: key %v has %d values, the key %v has %d columns", ix.Name(), k, len(k), ix.keyCols, len(ix.keyCols))
		}
		id := k.ID()
		if _, ok := first[id]; ok {
			continue
		}
		first[id] = pos
		for i, v := range k {
			cols[i] = append(cols[i], v)
		}
	}
	args := make([]any, len(cols))
	sql := ix.docSQL
	for i := range cols {
		args[i] = cols[i]
		if len(first) == 1 {
			args[i] = cols[i][0]
		}
	}
	if len(first) == 1 {
		sql = ix.docSQL1
	}
	if err := ix.runBuild(ctx, q, sql, args, first, fn); err != nil {
		return fmt.Errorf("index %s: build documents: %w", ix.Name(), err)
	}
	return nil
}

// runBuild reads Build's rows (inputs, looked-up key json and texts, row key
// json and texts, doc) without copying the documents. first gives each
// input key's position in Build's keys (Doc.Input).
func (ix *Index) runBuild(ctx context.Context, q Querier, sql string, args []any, first map[string]int, fn func(Doc) error) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	nk := len(ix.keyCols)
	// Deletes of a spelling no row has go last, and not at all for an id
	// another row of this batch spells (a key: whose rows are equal but
	// spelt apart): they must never undo an upsert.
	var respelt []Doc
	var ids []string // of the upserts: looked up only when there are respelt deletes
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != 3*nk+3 {
			return fmt.Errorf("document query returned %d columns, want %d", len(raw), 3*nk+3)
		}
		input := make(Key, nk)
		looked := make(Key, nk)
		for i := range nk {
			input[i] = string(raw[i])
			looked[i] = string(raw[nk+1+i])
		}
		at, ok := first[input.ID()]
		if !ok {
			return fmt.Errorf("document query returned key %v, which it was not given", input)
		}
		docRaw := raw[3*nk+2]
		if docRaw == nil {
			if err := fn(Doc{Key: raw[nk], ID: looked.String(), Values: input, Input: at}); err != nil {
				return err
			}
			continue
		}
		spelt := make(Key, nk)
		same := true
		for i := range nk {
			spelt[i] = string(raw[2*nk+2+i])
			same = same && spelt[i] == looked[i]
		}
		if !same {
			// Looked up in a spelling the row does not have: no document
			// may live under it.
			respelt = append(respelt, Doc{Key: append([]byte(nil), raw[nk]...), ID: looked.String(), Values: input, Input: at})
		}
		id := spelt.String()
		ids = append(ids, id)
		if err := fn(Doc{Key: raw[2*nk+1], ID: id, Values: input, Doc: docRaw, Input: at}); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(respelt) == 0 {
		return nil
	}
	upserted := make(map[string]bool, len(ids))
	for _, id := range ids {
		upserted[id] = true
	}
	for _, d := range respelt {
		if !upserted[d.ID] {
			upserted[d.ID] = true // once
			if err := fn(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// Scan builds documents for root rows with key > after (nil: from the start)
// and key <= upTo (nil: no upper bound), in key order, at most limit rows
// (0: no limit). It returns the last key seen and the count.
func (ix *Index) Scan(ctx context.Context, q Querier, after, upTo Key, limit int, fn func(Doc) error) (Key, int, error) {
	var args []any
	for _, k := range []Key{after, upTo} {
		if k == nil {
			continue
		}
		if len(k) != len(ix.keyCols) {
			return nil, 0, fmt.Errorf("index %s: key %v has %d values, the key %v has %d columns", ix.Name(), k, len(k), ix.keyCols, len(ix.keyCols))
		}
		for _, v := range k {
			args = append(args, v)
		}
	}
	if limit > 0 {
		args = append(args, limit)
	} else {
		args = append(args, nil)
	}
	a, u := 0, 0
	if after != nil {
		a = 1
	}
	if upTo != nil {
		u = 1
	}
	last, n, err := ix.run(ctx, q, ix.scanSQL[a][u], args, fn)
	if err != nil {
		return nil, n, fmt.Errorf("index %s: scan documents: %w", ix.Name(), err)
	}
	return last, n, nil
}

// run reads Scan's (key json, key texts..., doc) rows without copying the documents.
func (ix *Index) run(ctx context.Context, q Querier, sql string, args []any, fn func(Doc) error) (Key, int, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	nk := len(ix.keyCols)
	var last Key
	n := 0
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != nk+2 {
			return nil, n, fmt.Errorf("document query returned %d columns, want %d", len(raw), nk+2)
		}
		vals := make(Key, nk)
		for i := range vals {
			vals[i] = string(raw[1+i])
		}
		d := Doc{Key: raw[0], ID: vals.String(), Values: vals, Doc: raw[nk+1], Input: -1}
		if err := fn(d); err != nil {
			return nil, n, err
		}
		last = vals
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, n, err
	}
	return last, n, nil
}
