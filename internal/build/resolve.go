package build

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Affected is what a batch of changed rows means for the indexes.
type Affected struct {
	Keys      map[*Index][]Key // root keys to rebuild (deduplicated), old and new
	Truncated []*Index         // the index's root table was truncated: write a truncate line first
	Rebuild   []*Index         // another table the index reads was truncated: rebuild every document
}

// resolver turns changed rows of one table into root keys: straight from
// the row where the row holds the root key (the root itself, or a child
// whose join columns are the root's key), and with one query for every
// other place the table is read.
type resolver struct {
	info   *TableInfo
	cols   []string // capture columns: key first
	nkey   int
	roots  []direct // root keys taken from the row's own values
	query  string   // "" when every place is direct
	fill   string   // current capture values by key, for TOAST values not sent
	branch []string // the query's parts, for explain
	names  []string // the indexes that read the table
}

// direct takes an index's root key from positions of the row's values.
type direct struct {
	ix   *Index
	pos  []int
	path string
}

func (p *Plan) newResolver(t change.Table) *resolver {
	occ := p.occurs[t]
	r := &resolver{info: occ[0].info, cols: p.capture[t], nkey: len(p.keys[t])}
	pos := func(c string) int {
		for i, x := range r.cols {
			if x == c {
				return i
			}
		}
		panic("build: column " + c + " is not captured")
	}
	for _, o := range occ {
		ix := o.ix
		if !contains(r.names, ix.Name()) {
			r.names = append(r.names, ix.Name())
		}
		if len(o.hops) == 0 {
			d := direct{ix: ix, path: o.path}
			for _, k := range ix.root.key {
				d.pos = append(d.pos, pos(k))
			}
			r.roots = append(r.roots, d)
			continue
		}
		h := o.hops[0]
		if len(o.hops) == 1 && h.upper == ix.root.info {
			d := direct{ix: ix, path: o.path}
			for _, k := range ix.root.key {
				j := indexOf(h.upCols, k)
				if j < 0 {
					d.pos = nil
					break
				}
				d.pos = append(d.pos, pos(h.cols[j]))
			}
			if len(d.pos) == len(ix.root.key) && len(d.pos) > 0 {
				r.roots = append(r.roots, d)
				continue
			}
		}
		r.branch = append(r.branch, r.branchSQL(o, pos))
	}
	var vs, params []string
	for i := range r.cols {
		vs = append(vs, "c"+strconv.Itoa(i))
		params = append(params, "$"+strconv.Itoa(i+1)+"::text[]")
	}
	values := "unnest(" + strings.Join(params, ", ") + ") AS v(" + strings.Join(vs, ", ") + ")"
	if len(r.branch) > 0 {
		parts := make([]string, len(r.branch))
		for i, b := range r.branch {
			parts[i] = strings.Replace(b, "$VALUES", values, 1)
		}
		r.query = strings.Join(parts, "\nUNION\n")
	}
	if r.nkey > 0 {
		var out, conds []string
		var kv, kp []string
		for i := 0; i < r.nkey; i++ {
			kv = append(kv, "k"+strconv.Itoa(i))
			kp = append(kp, "$"+strconv.Itoa(i+1)+"::text[]")
			c, _ := r.info.Column(r.cols[i])
			conds = append(conds, col("t", r.cols[i])+" = v.k"+strconv.Itoa(i)+"::"+c.Type)
			out = append(out, "v.k"+strconv.Itoa(i))
		}
		for _, c := range r.cols {
			out = append(out, col("t", c)+"::text")
		}
		r.fill = "SELECT " + strings.Join(out, ", ") + "\nFROM unnest(" + strings.Join(kp, ", ") + ") AS v(" + strings.Join(kv, ", ") + ")\nJOIN " +
			r.info.Table.Quoted() + " AS t ON " + strings.Join(conds, " AND ")
	}
	return r
}

// branchSQL walks the hops of one place up to the root: the changed values
// join the table above, which joins the one above it, up to the root rows.
func (r *resolver) branchSQL(o *occurrence, pos func(string) int) string {
	var b strings.Builder
	alias := func(i int) string { return "a" + strconv.Itoa(i) }
	for i, h := range o.hops {
		a := alias(i + 1)
		where := ""
		if i == len(o.hops)-1 {
			where = o.ix.root.where // a root row outside the index has no document to rebuild
		}
		b.WriteString("\nJOIN " + from(h.upper, where, a) + " ON ")
		var conds []string
		for j, c := range h.cols {
			if i == 0 {
				ct, _ := r.info.Column(c)
				conds = append(conds, col(a, h.upCols[j])+" = v.c"+strconv.Itoa(pos(c))+"::"+ct.Type)
			} else {
				conds = append(conds, col(a, h.upCols[j])+" = "+col(alias(i), c))
			}
		}
		b.WriteString(strings.Join(conds, " AND "))
	}
	last := alias(len(o.hops))
	var keys []string
	for _, k := range o.ix.root.key {
		keys = append(keys, col(last, k)+"::text")
	}
	return "-- " + o.path + "\nSELECT " + strconv.Itoa(o.ix.ord) + " AS ix, ARRAY[" + strings.Join(keys, ", ") + "] AS key\nFROM $VALUES" + b.String()
}

// ResolveSQL describes, for explain, how changes of table t are resolved to
// root keys: the places read straight from the row, then the one query
// (its $n are one text[] per capture column).
func (p *Plan) ResolveSQL(t change.Table) string {
	r, ok := p.resolve[t]
	if !ok {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- capture columns: %s\n", strings.Join(r.cols, ", "))
	for _, d := range r.roots {
		var cols []string
		for _, i := range d.pos {
			cols = append(cols, r.cols[i])
		}
		fmt.Fprintf(&b, "-- %s: root key of index %s taken from the row's %s (old and new), no query\n", d.path, d.ix.Name(), strings.Join(cols, ", "))
	}
	if r.query != "" {
		b.WriteString(r.query + "\n")
	}
	return b.String()
}

// Resolve returns the root keys, per index, whose documents rows change:
// resolved from the old values as well as the new, so a deleted child or a
// child moved to another parent rebuilds the old parent too. It runs at most
// one query per table (plus one to look up TOAST values the server did not send).
//
// A TRUNCATE of a root drops the keys of the rows before it (their
// documents go with the truncate line); the rows written after it in the
// same batch (BEGIN; TRUNCATE t; INSERT ...; COMMIT) are resolved as usual.
func (p *Plan) Resolve(ctx context.Context, q Querier, rows []change.Row) (*Affected, error) {
	c := -1
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].Op == change.Truncate && p.truncatesRoot(rows[i].Table) {
			c = i
			break
		}
	}
	if c < 0 {
		return p.resolveRows(ctx, q, rows)
	}
	before, err := p.Resolve(ctx, q, rows[:c])
	if err != nil {
		return nil, err
	}
	after, err := p.resolveRows(ctx, q, rows[c+1:])
	if err != nil {
		return nil, err
	}
	truncated, rebuild := map[*Index]bool{}, map[*Index]bool{}
	for _, ix := range before.Truncated {
		truncated[ix] = true
	}
	for _, o := range p.occurs[rows[c].Table] {
		if len(o.hops) == 0 {
			truncated[o.ix] = true
		} else {
			rebuild[o.ix] = true
		}
	}
	for _, a := range []*Affected{before, after} {
		for _, ix := range a.Rebuild {
			rebuild[ix] = true
		}
	}
	aff := &Affected{Keys: map[*Index][]Key{}}
	cut := map[*Index]bool{}
	for _, o := range p.occurs[rows[c].Table] {
		cut[o.ix] = len(o.hops) == 0
	}
	for _, ix := range p.Indexes {
		if truncated[ix] {
			aff.Truncated = append(aff.Truncated, ix)
		} else if rebuild[ix] {
			aff.Rebuild = append(aff.Rebuild, ix)
		}
		seen := map[string]bool{}
		for _, part := range []struct {
			keys []Key
			drop bool
		}{{before.Keys[ix], cut[ix]}, {after.Keys[ix], false}} {
			if part.drop {
				continue
			}
			for _, k := range part.keys {
				if id := k.ID(); !seen[id] {
					seen[id] = true
					aff.Keys[ix] = append(aff.Keys[ix], k)
				}
			}
		}
		if len(aff.Keys[ix]) == 0 {
			delete(aff.Keys, ix)
		}
	}
	return aff, nil
}

// truncatesRoot reports whether t is the root of some index.
func (p *Plan) truncatesRoot(t change.Table) bool {
	for _, o := range p.occurs[t] {
		if len(o.hops) == 0 {
			return true
		}
	}
	return false
}

// resolveRows resolves rows among which Resolve found no TRUNCATE of a
// root (one would drop every key of its index from all of them).
func (p *Plan) resolveRows(ctx context.Context, q Querier, rows []change.Row) (*Affected, error) {
	aff := &Affected{Keys: map[*Index][]Key{}}
	seen := map[*Index]map[string]bool{}
	add := func(ix *Index, k Key) {
		s := seen[ix]
		if s == nil {
			s = map[string]bool{}
			seen[ix] = s
		}
		id := k.ID()
		if !s[id] {
			s[id] = true
			aff.Keys[ix] = append(aff.Keys[ix], k)
		}
	}
	var order []change.Table
	byTable := map[change.Table][][]change.Value{}
	truncated := map[*Index]bool{}
	rebuild := map[*Index]bool{}
	for i := range rows {
		row := &rows[i]
		r, ok := p.resolve[row.Table]
		if !ok {
			continue
		}
		if row.Op == change.Truncate {
			for _, o := range p.occurs[row.Table] {
				if len(o.hops) == 0 {
					truncated[o.ix] = true
				} else {
					rebuild[o.ix] = true
				}
			}
			continue
		}
		if _, ok := byTable[row.Table]; !ok {
			order = append(order, row.Table)
		}
		byTable[row.Table] = append(byTable[row.Table], r.tuples(row)...)
	}
	for _, ix := range p.Indexes {
		if truncated[ix] {
			aff.Truncated = append(aff.Truncated, ix)
		} else if rebuild[ix] {
			aff.Rebuild = append(aff.Rebuild, ix)
		}
	}
	for _, t := range order {
		r := p.resolve[t]
		tuples, err := r.fillMissing(ctx, q, byTable[t])
		if err != nil {
			return nil, fmt.Errorf("resolve changes of %s: %w", t, err)
		}
		for _, d := range r.roots {
			if truncated[d.ix] {
				continue
			}
			for _, tu := range tuples {
				if k := d.key(tu); k != nil {
					add(d.ix, k)
				}
			}
		}
		if r.query == "" || len(tuples) == 0 {
			continue
		}
		args := make([]any, len(r.cols))
		for i := range r.cols {
			vals := make([]*string, len(tuples))
			for j, tu := range tuples {
				if v := tu[i]; !v.Null && !v.Missing {
					s := v.Text
					vals[j] = &s
				}
			}
			args[i] = vals
		}
		res, err := q.Query(ctx, r.query, args...)
		if err != nil {
			return nil, fmt.Errorf("resolve changes of %s: %w", t, err)
		}
		for res.Next() {
			var ord int
			var key []string
			if err := res.Scan(&ord, &key); err != nil {
				res.Close()
				return nil, fmt.Errorf("resolve changes of %s: %w", t, err)
			}
			if ix := p.Indexes[ord]; !truncated[ix] {
				add(ix, key)
			}
		}
		if err := res.Err(); err != nil {
			return nil, fmt.Errorf("resolve changes of %s: %w", t, err)
		}
	}
	return aff, nil
}

// tuples maps a row's old and new values onto the capture columns. A value
// the new tuple did not send (unchanged TOAST) is taken from the old one.
func (r *resolver) tuples(row *change.Row) [][]change.Value {
	pick := func(vals []change.Value) []change.Value {
		if vals == nil {
			return nil
		}
		out := make([]change.Value, len(r.cols))
		for i, c := range r.cols {
			j := row.Col(c)
			if j < 0 || j >= len(vals) {
				out[i] = change.Value{Missing: true}
			} else {
				out[i] = vals[j]
			}
		}
		return out
	}
	old, cur := pick(row.Old), pick(row.New)
	if old != nil && cur != nil {
		for i := range cur {
			if cur[i].Missing && !old[i].Missing {
				cur[i] = old[i]
			}
		}
	}
	var out [][]change.Value
	if old != nil {
		out = append(out, old)
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}

// fillMissing replaces values the server did not send with the row's current
// ones, looked up by key. A Missing value is never a NULL: when the row is
// gone it stays Missing and joins nothing.
func (r *resolver) fillMissing(ctx context.Context, q Querier, tuples [][]change.Value) ([][]change.Value, error) {
	var need []int
	for i, tu := range tuples {
		if r.nkey == 0 || !complete(tu[:r.nkey]) {
			continue
		}
		for _, v := range tu[r.nkey:] {
			if v.Missing {
				need = append(need, i)
				break
			}
		}
	}
	if len(need) == 0 {
		return tuples, nil
	}
	args := make([]any, r.nkey)
	for k := 0; k < r.nkey; k++ {
		vals := make([]string, len(need))
		for j, i := range need {
			vals[j] = tuples[i][k].Text
		}
		args[k] = vals
	}
	rows, err := q.Query(ctx, r.fill, args...)
	if err != nil {
		return nil, fmt.Errorf("look up unsent values: %w", err)
	}
	defer rows.Close()
	current := map[string][]*string{}
	for rows.Next() {
		vals := make([]*string, r.nkey+len(r.cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		var id Key
		for _, v := range vals[:r.nkey] {
			id = append(id, *v)
		}
		current[id.ID()] = vals[r.nkey:]
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, i := range need {
		tu := tuples[i]
		var id Key
		for _, v := range tu[:r.nkey] {
			id = append(id, v.Text)
		}
		cur, ok := current[id.ID()]
		if !ok {
			continue
		}
		for c := range tu {
			if tu[c].Missing {
				if cur[c] == nil {
					tu[c] = change.Value{Null: true}
				} else {
					tu[c] = change.Value{Text: *cur[c]}
				}
			}
		}
	}
	return tuples, nil
}

func complete(vals []change.Value) bool {
	for _, v := range vals {
		if v.Null || v.Missing {
			return false
		}
	}
	return true
}

// key takes the root key from a tuple; nil when a value is NULL or not sent.
func (d direct) key(tu []change.Value) Key {
	k := make(Key, len(d.pos))
	for i, p := range d.pos {
		v := tu[p]
		if v.Null || v.Missing {
			return nil
		}
		k[i] = v.Text
	}
	return k
}

func indexOf(list []string, s string) int {
	for i, e := range list {
		if e == s {
			return i
		}
	}
	return -1
}

func (r *resolver) ixNames() string {
	return strings.Join(r.names, ", ")
}
