package wal

import (
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Relation messages describe a table's columns, and come before the first
// change of a table on each connection and again after DDL on it. Besides
// refreshing the cache the decoder reads, they are how capture notices a
// captured table changing under it, before it decodes a change the new
// shape would get wrong: a column it carries dropped (ErrColumnMissing) or
// retyped, the table renamed, or the replica identity lowered so the old
// row no longer carries a column resolution needs. Those stop capture
// (ErrSchemaChanged) naming the table, the column and the fix. Columns
// nobody carries come and go freely.

// ErrSchemaChanged: a captured table changed in a way capture cannot
// follow; the SchemaError wrapping it names the table, the column and the
// fix.
var ErrSchemaChanged = errors.New("a captured table changed under flusso-pg")

// SchemaError is a captured table's change that stops capture.
type SchemaError struct {
	Table  change.Table
	Column string // "" for the table as a whole
	Why    string // what changed, and what it breaks
	Fix    string
}

func (e *SchemaError) Error() string {
	where := "table " + e.Table.String()
	if e.Column != "" {
		where += fmt.Sprintf(", column %q", e.Column)
	}
	return fmt.Sprintf("%s: %s: %s", where, e.Why, e.Fix)
}

func (e *SchemaError) Is(target error) bool { return target == ErrSchemaChanged }

// relation is the cached Relation message of one table, reduced to what the
// configured columns need.
type relation struct {
	table change.Table
	natts int
	cols  []string    // configured columns, key first; nil: the table is not captured
	attr  []attribute // per configured column: its position in the tuple, identity flag, type
}

// Replica identity settings in a Relation message.
const (
	identityDefault = 'd'
	identityNothing = 'n'
	identityFull    = 'f'
	identityIndex   = 'i'
)

// attribute is one column of a Relation message.
type attribute struct {
	pos   int
	ident bool   // part of the replica identity (under FULL, every column)
	typ   uint32 // type oid
}

// relation reads a Relation message into the cache, refreshing an older one
// (a Relation comes again after DDL).
func (d *decoder) relation(r *reader) error {
	id := r.u32()
	ns := r.cstring()
	name := r.cstring()
	identity := r.byte1()
	natts := int(r.u16())
	if r.bad {
		return decodeErr("relation message is truncated")
	}
	table := change.Table{Schema: ns, Name: name}
	key := table
	want, ok := d.tables[key]
	if !ok {
		key = change.Table{Name: name}
		want, ok = d.tables[key]
	}
	rel := &relation{table: table, natts: natts}
	var attrs map[string]attribute
	if ok {
		attrs = make(map[string]attribute, natts)
	}
	for i := range natts {
		flags := r.byte1()
		col := r.cstring()
		typ := r.u32()
		r.u32() // type modifier
		if r.bad {
			return decodeErr("relation %s: message is truncated", table)
		}
		if attrs != nil {
			attrs[col] = attribute{pos: i, ident: flags&1 != 0, typ: typ}
		}
	}
	prev := d.rels[id]
	if prev == nil {
		prev = d.seen[id] // from an earlier connection
	}
	if prev != nil && prev.cols == nil {
		prev = nil // not captured then: nothing to compare
	}
	if prev != nil && prev.table != table {
		return renamed(prev.table, table, id)
	}
	if ok {
		if err := d.check(rel, want, attrs, identity, prev, d.old[key]); err != nil {
			return err
		}
	}
	d.rels[id] = rel
	if d.lastID == id {
		d.last = rel
	}
	return nil
}

// check fills rel for the configured columns want and checks them: each is
// there, with the type it had, and the replica identity carries those
// resolution needs in old rows.
func (d *decoder) check(rel *relation, want []string, attrs map[string]attribute, identity byte, prev *relation, old []string) error {
	table := rel.table
	rel.cols = want
	rel.attr = make([]attribute, len(want))
	for i, col := range want {
		a, found := attrs[col]
		if !found {
			return fmt.Errorf("table %s, column %q: %w", table, col, ErrColumnMissing)
		}
		if prev != nil && len(prev.attr) == len(want) {
			if was := prev.attr[i].typ; was != a.typ {
				return &SchemaError{Table: table, Column: col,
					Why: fmt.Sprintf("its type changed from %s to %s, so documents built before and after would differ", typeName(was), typeName(a.typ)),
					Fix: "change it back, or run with --resync to rebuild the documents with the new type"}
			}
		}
		if slices.Contains(old, col) && (identity == identityNothing || !a.ident) {
			return &SchemaError{Table: table, Column: col,
				Why: fmt.Sprintf("its replica identity is now %s, which no longer carries %s in the old row of a DELETE or an UPDATE, so flusso-pg cannot tell which document held the row", identityName(identity), col),
				Fix: fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL; then run with --resync (changes made meanwhile lack the old value)", table)}
		}
		rel.attr[i] = a
	}
	return nil
}

// renamed is the stop for a captured table that now has another name.
func renamed(was, now change.Table, id uint32) error {
	back := fmt.Sprintf("ALTER TABLE %s RENAME TO %s", now, change.QuoteIdentIfNeeded(was.Name))
	if was.Schema != now.Schema {
		back = fmt.Sprintf("ALTER TABLE %s SET SCHEMA %s", now, change.QuoteIdentIfNeeded(was.Schema))
		if was.Name != now.Name {
			back += fmt.Sprintf(", then RENAME TO %s", change.QuoteIdentIfNeeded(was.Name))
		}
	}
	return &SchemaError{Table: was,
		Why: fmt.Sprintf("it was renamed to %s (the same table, relation id %d), so its changes no longer match the config", now, id),
		Fix: fmt.Sprintf("rename it back (%s), or name %s in the config and run with --resync", back, now)}
}

func identityName(b byte) string {
	switch b {
	case identityDefault:
		return "DEFAULT (the primary key)"
	case identityNothing:
		return "NOTHING"
	case identityFull:
		return "FULL"
	case identityIndex:
		return "USING INDEX"
	}
	return fmt.Sprintf("%q", b)
}

var types = pgtype.NewMap()

// typeName names a built-in type, or gives the oid of another.
func typeName(oid uint32) string {
	if t, ok := types.TypeForOID(oid); ok {
		return t.Name
	}
	return fmt.Sprintf("type oid %d", oid)
}
