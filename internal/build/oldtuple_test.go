package build

import (
	"slices"
	"testing"
)

// OldTupleColumns names what Compile checked against the replica
// identity: each is captured, carried by the identity the plan was
// compiled against, and a child's column toward its parent is among them.
func TestOldTupleColumns(t *testing.T) {
	_, p := loadShop(t)
	old := p.OldTupleColumns()
	if len(old) == 0 {
		t.Fatal("no table needs old values")
	}
	capture := p.CaptureColumns()
	for table, cols := range old {
		for _, c := range cols {
			if !slices.Contains(capture[table], c) {
				t.Errorf("table %s: old-tuple column %s is not captured (%v)", table, c, capture[table])
			}
		}
		if info, ok := p.Catalog.Table(table); !ok || !info.InIdentity(cols) {
			t.Errorf("table %s: %v not in its replica identity (%+v)", table, cols, info)
		}
	}
	if cols := old[tbl(`"My Schema"."Order"`)]; !slices.Contains(cols, "customer_id") {
		t.Errorf("Order needs customer_id (toward customers) in old rows, got %v", cols)
	}
}
