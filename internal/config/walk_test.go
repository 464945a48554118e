package config

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// Walk visits every place an index names a table, in the order written
// (relations before aggregates), with the columns named there: the root's
// key; a relation's parent side, its through table, its table (key, join),
// the levels below; an aggregate's parent side and table.
func TestWalk(t *testing.T) {
	cfg, err := Parse([]byte(`
indexes:
  - name: orders
    table: shop.orders
    key: [order_id]
    aggregates:
      - {name: paid, table: shop.payments, join: {order_id: order_ref}, fn: count}
    relations:
      - name: labels
        table: shop.labels
        kind: many_to_many
        through: {table: shop.order_labels, join: {order_id: oid}, target_join: {lid: label_id}}
      - name: lines
        table: shop.lines
        kind: has_many
        join: {order_id: order_ref}
        relations:
          - {name: product, table: shop.products, kind: belongs_to, join: {sku: sku}}
  - name: products
    table: shop.products
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = Walk(cfg, func(index, table string, cols []string) error {
		got = append(got, fmt.Sprintf("%s %s %v", index, table, cols))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"orders shop.orders [order_id]",
		"orders shop.orders [order_id]", "orders shop.order_labels [oid lid]", "orders shop.labels [label_id]",
		"orders shop.orders [order_id]", "orders shop.lines [order_ref]",
		"orders shop.lines [sku]", "orders shop.products [sku]",
		"orders shop.orders [order_id]", "orders shop.payments [order_ref]",
		"products shop.products []",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("walk:\n got %q\nwant %q", got, want)
	}

	stop := errors.New("stop")
	n := 0
	if err := Walk(cfg, func(string, string, []string) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("an error from fn: Walk returned %v after %d calls, want it after 1", err, n)
	}
}
