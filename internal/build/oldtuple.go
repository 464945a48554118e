package build

import (
	"slices"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// OldTupleColumns gives, per table, the columns the old row of a DELETE (or
// of an UPDATE that changes them) must carry for resolution to find the
// documents that held the row: a root's key, and for a table below the
// root its columns pointing toward its parent — what Compile checks against
// the replica identity (validate.go). Capture checks the same against each
// Relation message, so an identity lowered while following stops it.
func (p *Plan) OldTupleColumns() map[change.Table][]string {
	out := map[change.Table][]string{}
	add := func(t *TableInfo, cols []string) {
		if t == nil {
			return
		}
		for _, c := range cols {
			if c != "" && !slices.Contains(out[t.Table], c) {
				out[t.Table] = append(out[t.Table], c)
			}
		}
	}
	var walk func(n *node)
	walk = func(n *node) {
		switch {
		case n.kind == "root":
			add(n.info, n.key)
		case n.through != nil:
			add(n.through, n.join.Tos())
			add(n.info, n.targetJoin.Tos())
		default:
			add(n.info, n.join.Tos())
		}
		for _, ch := range n.children {
			walk(ch)
		}
	}
	for _, ix := range p.Indexes {
		if ix.root != nil {
			walk(ix.root)
		}
	}
	return out
}
