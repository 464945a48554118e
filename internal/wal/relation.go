package wal

import (
	"fmt"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// relation is the cached Relation message of one table, reduced to what the
// configured columns need.
type relation struct {
	table change.Table
	natts int
	cols  []string // configured columns, key first; nil: the table is not captured
	attr  []int    // per configured column, its position in the tuple
	ident []bool   // per configured column, whether it is part of the replica identity
}

// relation reads a Relation message into the cache, refreshing an older one
// (a Relation comes again after DDL).
func (d *decoder) relation(r *reader) error {
	id := r.u32()
	ns := r.cstring()
	name := r.cstring()
	r.byte1() // replica identity setting
	natts := int(r.u16())
	if r.bad {
		return decodeErr("relation message is truncated")
	}
	table := change.Table{Schema: ns, Name: name}
	want, ok := d.tables[table]
	if !ok {
		want, ok = d.tables[change.Table{Name: name}]
	}
	rel := &relation{table: table, natts: natts}
	type att struct {
		pos   int
		ident bool
	}
	var seen map[string]att
	if ok {
		seen = make(map[string]att, natts)
	}
	for i := range natts {
		flags := r.byte1()
		col := r.cstring()
		r.u32() // type oid
		r.u32() // type modifier
		if r.bad {
			return decodeErr("relation %s: message is truncated", table)
		}
		if seen != nil {
			seen[col] = att{pos: i, ident: flags&1 != 0}
		}
	}
	if ok {
		rel.cols = want
		rel.attr = make([]int, len(want))
		rel.ident = make([]bool, len(want))
		for i, col := range want {
			a, found := seen[col]
			if !found {
				return fmt.Errorf("table %s, column %q: %w", table, col, ErrColumnMissing)
			}
			rel.attr[i] = a.pos
			rel.ident[i] = a.ident
		}
	}
	d.rels[id] = rel
	if d.lastID == id {
		d.last = rel
	}
	return nil
}
