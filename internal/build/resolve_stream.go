package build

import (
	"context"
	"fmt"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Resolve returns the root keys, per index, whose documents rows change:
// resolved from the old values as well as the new, so a deleted child or a
// child moved to another parent rebuilds the old parent too. It runs at most
// one query per table (plus one to look up TOAST values the server did not
// send). It holds every key in memory: the pipeline streams them with
// ResolveEach instead.
//
// A TRUNCATE of a root drops the keys of the rows before it (their
// documents go with the truncate line); the rows written after it in the
// same batch (BEGIN; TRUNCATE t; INSERT ...; COMMIT) are resolved as usual.
func (p *Plan) Resolve(ctx context.Context, q Querier, rows []change.Row) (*Affected, error) {
	aff := &Affected{Keys: map[*Index][]Key{}}
	aff.Truncated, aff.Rebuild = p.Events(rows)
	seen := map[*Index]map[string]bool{}
	err := p.ResolveEach(ctx, q, rows, func(ix *Index, k Key) error {
		s := seen[ix]
		if s == nil {
			s = map[string]bool{}
			seen[ix] = s
		}
		if id := k.ID(); !s[id] {
			s[id] = true
			aff.Keys[ix] = append(aff.Keys[ix], k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return aff, nil
}

// Events says what the TRUNCATEs among rows mean, without a query: the
// indexes whose root table was truncated (a truncate line) and, apart from
// those, the indexes that read another truncated table (every document
// again), each in the plan's order. Both are Affected's.
func (p *Plan) Events(rows []change.Row) (truncated, rebuild []*Index) {
	isTrunc, isRebuild := map[*Index]bool{}, map[*Index]bool{}
	for i := range rows {
		if rows[i].Op != change.Truncate {
			continue
		}
		if _, ok := p.resolve[rows[i].Table]; !ok {
			continue
		}
		for _, o := range p.occurs[rows[i].Table] {
			if len(o.hops) == 0 {
				isTrunc[o.ix] = true
			} else {
				isRebuild[o.ix] = true
			}
		}
	}
	for _, ix := range p.Indexes {
		if isTrunc[ix] {
			truncated = append(truncated, ix)
		} else if isRebuild[ix] {
			rebuild = append(rebuild, ix)
		}
	}
	return truncated, rebuild
}

// ResolveEach hands each root key rows affect to add as soon as it is
// read, in the order Resolve lists them, so that its memory does not grow
// with the number of documents one row resolves to (a tag shared by a
// million posts): the resolution query's rows are read from the connection
// one by one while add builds and writes the keys received so far, on
// other connections of q's pool (q must then be a pool). The keys of one
// query are distinct (UNION); a key reached from two tables or two places
// comes twice, and the caller de-duplicates as far as its memory bound
// allows. Events gives what the TRUNCATEs mean; hand it on first.
//
// An error of add is returned as it is; the resolution's own errors name
// the table.
func (p *Plan) ResolveEach(ctx context.Context, q Querier, rows []change.Row, add func(*Index, Key) error) error {
	return p.resolveEach(ctx, q, rows, nil, add)
}

// resolveEach streams rows' keys but those of the indexes in drop: a
// TRUNCATE of a root drops the keys its index's rows before it resolve to.
func (p *Plan) resolveEach(ctx context.Context, q Querier, rows []change.Row, drop map[*Index]bool, add func(*Index, Key) error) error {
	c := -1
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].Op == change.Truncate && p.truncatesRoot(rows[i].Table) {
			c = i
			break
		}
	}
	if c < 0 {
		return p.streamRows(ctx, q, rows, drop, add)
	}
	cut := map[*Index]bool{}
	for ix := range drop {
		cut[ix] = true
	}
	for _, o := range p.occurs[rows[c].Table] {
		if len(o.hops) == 0 {
			cut[o.ix] = true
		}
	}
	if err := p.resolveEach(ctx, q, rows[:c], cut, add); err != nil {
		return err
	}
	return p.streamRows(ctx, q, rows[c+1:], drop, add)
}

// addError marks an error of the caller's add, returned untouched.
type addError struct{ err error }

func (e addError) Error() string { return e.err.Error() }
func (e addError) Unwrap() error { return e.err }

// streamRows resolves rows among which resolveEach found no TRUNCATE of a
// root, table by table in the order they first appear: the keys taken
// from the rows themselves, then those the table's query reads.
func (p *Plan) streamRows(ctx context.Context, q Querier, rows []change.Row, drop map[*Index]bool, add func(*Index, Key) error) error {
	var order []change.Table
	byTable := map[change.Table][][]change.Value{}
	for i := range rows {
		row := &rows[i]
		r, ok := p.resolve[row.Table]
		if !ok || row.Op == change.Truncate {
			continue
		}
		if _, ok := byTable[row.Table]; !ok {
			order = append(order, row.Table)
		}
		byTable[row.Table] = append(byTable[row.Table], r.tuples(row)...)
	}
	for _, t := range order {
		r := p.resolve[t]
		tuples, err := r.fillMissing(ctx, q, byTable[t])
		if err != nil {
			return fmt.Errorf("resolve changes of %s: %w", t, err)
		}
		for _, d := range r.roots {
			if drop[d.ix] {
				continue
			}
			for _, tu := range tuples {
				if k := d.key(tu); k != nil {
					if err := add(d.ix, k); err != nil {
						return err
					}
				}
			}
		}
		if r.query == "" || len(tuples) == 0 {
			continue
		}
		if err := p.streamQuery(ctx, q, r, tuples, drop, add); err != nil {
			if a, ok := err.(addError); ok {
				return a.err
			}
			return fmt.Errorf("resolve changes of %s: %w", t, err)
		}
	}
	return nil
}

// streamQuery runs r's query for tuples and hands each key to add as its
// row arrives.
func (p *Plan) streamQuery(ctx context.Context, q Querier, r *resolver, tuples [][]change.Value, drop map[*Index]bool, add func(*Index, Key) error) error {
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
	// An error of add cancels the query, so that closing it does not
	// read the rest of a million rows first.
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res, err := q.Query(qctx, r.query, args...)
	if err != nil {
		return err
	}
	defer res.Close()
	for res.Next() {
		var ord int
		var key []string
		if err := res.Scan(&ord, &key); err != nil {
			return err
		}
		if ix := p.Indexes[ord]; !drop[ix] {
			if err := add(ix, key); err != nil {
				cancel()
				return addError{err}
			}
		}
	}
	return res.Err()
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
