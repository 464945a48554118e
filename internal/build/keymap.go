package build

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// KeyMapTable is a table whose old rows resolve through the key map
// (internal/keymap, docs/keymap.md): its replica identity sends the key but
// not the join columns a DELETE or a parent-changing UPDATE needs.
type KeyMapTable struct {
	Table change.Table
	Key   []string // the identity columns, which every old row carries
	Join  []string // the old columns the plan needs (OldTupleColumns)
}

// mappable reports whether the key map can stand in for a replica identity
// that does not carry cols: the map is on, and the table's old rows carry a
// key, mapKey. A partitioned table's WAL is written by its leaves, each with
// its own identity: the map keys it by its primary key (which holds the
// partition key, so it is unique across the leaves), when every leaf sends
// that key and some leaf does not send cols.
func mappable(on bool, t *TableInfo, cols []string) bool {
	if !on || !t.IsTable() {
		return false
	}
	if t.Kind == "p" {
		return len(t.PrimaryKey) > 0 && !leavesCarry(t, cols) && leavesCarry(t, t.PrimaryKey)
	}
	return len(t.Leaves) == 0 && t.ReplicaIdentity != IdentityFull &&
		t.ReplicaIdentity != IdentityNothing && len(t.IdentityColumns) > 0 && !t.InIdentity(cols)
}

// mapKey is the key the map keeps t's rows by: its identity's columns, a
// partitioned table's primary key.
func mapKey(t *TableInfo) []string {
	if t.Kind == "p" {
		return t.PrimaryKey
	}
	return t.IdentityColumns
}

// leavesCarry reports whether the old row of every leaf of t carries cols.
func leavesCarry(t *TableInfo, cols []string) bool {
	for _, l := range t.Leaves {
		if l.ReplicaIdentity == IdentityNothing || !containsAll(l.IdentityColumns, cols) {
			return false
		}
	}
	return true
}

// keyMapped turns the replica_identity verdict on a table below the root
// into an information line when the key map covers it (capture.key_map:
// auto). It reports whether it did.
func (c *compiler) keyMapped(path string, t *TableInfo, cols []string) bool {
	if !mappable(c.keyMap, t, cols) {
		return false
	}
	for _, p := range c.problems {
		if p.Code == "key_map" && p.Index == c.index && p.Table == t.Table.String() {
			return true
		}
	}
	c.add(Problem{Severity: SeverityInfo, Code: "key_map", Path: path, Table: t.Table.String(), Column: strings.Join(cols, ", "),
		Message: fmt.Sprintf("table %s: %s, not %s: a DELETE or an UPDATE that changes %s finds its old document through the key map in state.dir (capture.key_map: auto); REPLICA IDENTITY FULL would make the map unnecessary, and is cheaper for a table of a few thousand rows",
			t.Table, sends(t), strings.Join(cols, ", "), strings.Join(cols, ", "))})
	return true
}

// sends says what t's old rows carry, for keyMapped's line.
func sends(t *TableInfo) string {
	if t.Kind == "p" {
		return fmt.Sprintf("its partitions' replica identities send its key %s in the old row", strings.Join(t.PrimaryKey, ", "))
	}
	return fmt.Sprintf("REPLICA IDENTITY %s sends only %s in the old row", t.ReplicaIdentity, strings.Join(t.IdentityColumns, ", "))
}

// KeyMapTables lists, sorted, the tables the key map keeps: those whose
// replica identity does not carry their OldTupleColumns but sends a key
// (none with capture.key_map: off). Each key column is captured.
func (p *Plan) KeyMapTables() ([]KeyMapTable, error) {
	if !p.keyMap {
		return nil, nil
	}
	var out []KeyMapTable
	for t, cols := range p.OldTupleColumns() {
		info, ok := p.Catalog.Table(t)
		if !ok || info == nil || !mappable(true, info, cols) {
			continue
		}
		key := mapKey(info)
		for _, k := range key {
			if !slices.Contains(p.capture[t], k) {
				return nil, fmt.Errorf("table %s: the key map needs its key column %s, which no index reads as a key; make it the relation's key, or set REPLICA IDENTITY FULL", t, k)
			}
		}
		out = append(out, KeyMapTable{Table: t, Key: append([]string(nil), key...), Join: append([]string(nil), cols...)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table.String() < out[j].Table.String() })
	return out, nil
}

// OldColumnsWithKeyMap is OldTupleColumns with each key-mapped table's
// entry replaced by its key: what capture must find in the old rows (an
// identity lowered to NOTHING while following still stops it).
func (p *Plan) OldColumnsWithKeyMap(mapped []KeyMapTable) map[change.Table][]string {
	out := p.OldTupleColumns()
	for _, m := range mapped {
		out[m.Table] = append([]string(nil), m.Key...)
	}
	return out
}
