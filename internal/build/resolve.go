package build

import (
	"context"
	"fmt"
	"slices"
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
		if !slices.Contains(r.names, ix.Name()) {
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
				j := slices.Index(h.upCols, k)
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

func (r *resolver) ixNames() string {
	return strings.Join(r.names, ", ")
}
