package build

import (
	"strconv"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// shopSchema has every relation kind, three levels of nesting, composite
// keys, uuid and text keys, the awkward types and awkward names.
const shopSchema = `
CREATE SCHEMA "My Schema";
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE regions   (code text PRIMARY KEY, label text);
CREATE TABLE customers (id uuid PRIMARY KEY, name text, region_code text REFERENCES regions);
CREATE TABLE "My Schema"."Order" ("ArtistId" bigint PRIMARY KEY, "select" text, big bigint, num numeric(30,10),
	j jsonb, arr int[], ts timestamptz, b bytea, m mood, d posint, customer_id uuid REFERENCES customers);
CREATE TABLE lines      (order_id bigint, n int, sku text, qty int, price numeric(10,2), PRIMARY KEY (order_id, n));
CREATE TABLE line_notes (id serial PRIMARY KEY, order_id bigint, n int, note text);
CREATE TABLE profiles   (order_id bigint PRIMARY KEY, bio text);
CREATE TABLE labels     (id int PRIMARY KEY, name text);
CREATE TABLE order_labels (order_id bigint, label_id int, PRIMARY KEY (order_id, label_id));
ALTER TABLE line_notes REPLICA IDENTITY FULL;

INSERT INTO regions VALUES ('it', 'Italy'), ('fr', 'France');
INSERT INTO customers VALUES ('11111111-1111-1111-1111-111111111111', 'Ann', 'it'), ('22222222-2222-2222-2222-222222222222', 'Bob', NULL);
INSERT INTO "My Schema"."Order" VALUES
	(1, 'x', 9007199254740993, 12345678901234567890.0123456789, '{"a": [1, 2.50], "b": null}', '{1,NULL,3}',
	 '2026-01-02 03:04:05.123456+00', '\xdeadbeef', 'happy', 5, '11111111-1111-1111-1111-111111111111'),
	(2, NULL, NULL, NULL, NULL, '{}', NULL, NULL, NULL, NULL, NULL);
INSERT INTO lines VALUES (1, 1, 'a', 2, 1.50), (1, 2, 'b', 1, 10.00), (1, 3, 'c', 5, 0.10), (1, 4, 'd', 0, 9.99);
INSERT INTO line_notes (order_id, n, note) VALUES (1, 1, 'first'), (1, 1, 'second'), (1, 2, 'third');
INSERT INTO profiles VALUES (1, 'bio one');
INSERT INTO labels VALUES (1, 'red'), (2, 'blue'), (3, 'green');
INSERT INTO order_labels VALUES (1, 1), (1, 2);
`

const shopConfig = `
indexes:
  - name: orders
    table: '"My Schema"."Order"'
    rename: {select: choice}
    relations:
      - name: customer
        table: public.customers
        kind: belongs_to
        join: {customer_id: id}
        columns: [name, region_code]
        relations:
          - name: region
            table: regions
            kind: belongs_to
            join: {region_code: code}
            columns: [label]
      - name: lines
        table: lines
        kind: has_many
        join: {ArtistId: order_id}
        columns: [n, sku, qty, price]
        where: qty > 0
        order_by: [price desc]
        limit: 2
        relations:
          - name: notes
            table: line_notes
            kind: has_many
            join: {order_id: order_id, n: n}
            columns: [note]
            scalar: true
            order_by: [id]
      - name: profile
        table: profiles
        kind: has_one
        join: {ArtistId: order_id}
        columns: [bio]
      - name: labels
        table: labels
        kind: many_to_many
        through: {table: order_labels, join: {ArtistId: order_id}, target_join: {label_id: id}}
        columns: [name]
        scalar: true
        order_by: [name]
    aggregates:
      - {name: line_count, table: lines, join: {ArtistId: order_id}, fn: count}
      - {name: qty_sum, table: lines, join: {ArtistId: order_id}, fn: sum, column: qty}
      - {name: price_min, table: lines, join: {ArtistId: order_id}, fn: min, column: price}
      - {name: price_max, table: lines, join: {ArtistId: order_id}, fn: max, column: price}
      - {name: qty_avg, table: lines, join: {ArtistId: order_id}, fn: avg, column: qty}
      - {name: line_ids, table: lines, join: {ArtistId: order_id}, fn: ids}
  - name: lines
    table: lines
    columns: [sku]
    relations:
      - {name: order, table: '"My Schema"."Order"', kind: belongs_to, join: {order_id: ArtistId}, columns: [select]}
  - name: customers
    table: customers
    columns: [name]
    relations:
      - {name: region, table: regions, kind: belongs_to, join: {region_code: code}, columns: [label]}
      - {name: orders, table: '"My Schema"."Order"', kind: has_many, join: {id: customer_id}, columns: [ArtistId]}
  - name: regions
    table: regions
    columns: [label]
    relations:
      - name: customers
        table: customers
        kind: has_many
        join: {code: region_code}
        columns: [name]
        relations:
          - {name: orders, table: '"My Schema"."Order"', kind: has_many, join: {id: customer_id}, columns: [ArtistId], scalar: true}
`

func loadShop(t *testing.T) (*pgtest.DB, *Plan) {
	t.Helper()
	db := pgtest.NewDB(t)
	db.Exec(t, shopSchema)
	// Whoever sees Order must see the customer's old values for the
	// customers index's has_many to follow moves.
	db.Exec(t, `ALTER TABLE "My Schema"."Order" REPLICA IDENTITY FULL; ALTER TABLE customers REPLICA IDENTITY FULL`)
	return db, mustCompile(t, db, parseConfig(t, shopConfig))
}

func sqlText(t *testing.T, db *pgtest.DB, sql string) string {
	t.Helper()
	var s string
	if err := db.Pool.QueryRow(ctxT(t), sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEveryKindAndType(t *testing.T) {
	db, p := loadShop(t)
	ix := p.Indexes[0]
	ts := sqlText(t, db, `SELECT to_json('2026-01-02 03:04:05.123456+00'::timestamptz)::text`)
	avg := sqlText(t, db, `SELECT to_json(avg(x))::text FROM (VALUES (2), (1), (5), (0)) v(x)`)
	docs := buildAll(t, db, ix, Key{"1"}, Key{"2"}, Key{"3"})
	want1 := `{"ArtistId": 1, "choice": "x", "big": 9007199254740993, "num": 12345678901234567890.0123456789,
		"j": {"a": [1, 2.50], "b": null}, "arr": [1, null, 3], "ts": ` + ts + `, "b": "\\xdeadbeef", "m": "happy", "d": 5,
		"customer_id": "11111111-1111-1111-1111-111111111111",
		"customer": {"name": "Ann", "region_code": "it", "region": {"label": "Italy"}},
		"lines": [{"n": 2, "sku": "b", "qty": 1, "price": 10.00, "notes": ["third"]},
		          {"n": 1, "sku": "a", "qty": 2, "price": 1.50, "notes": ["first", "second"]}],
		"profile": {"bio": "bio one"}, "labels": ["blue", "red"],
		"line_count": 4, "qty_sum": 8, "price_min": 0.10, "price_max": 10.00, "qty_avg": ` + avg + `,
		"line_ids": [{"order_id": 1, "n": 1}, {"order_id": 1, "n": 2}, {"order_id": 1, "n": 3}, {"order_id": 1, "n": 4}]}`
	want2 := `{"ArtistId": 2, "choice": null, "big": null, "num": null, "j": null, "arr": [], "ts": null, "b": null, "m": null,
		"d": null, "customer_id": null, "customer": null, "lines": [], "profile": null, "labels": [],
		"line_count": 0, "qty_sum": null, "price_min": null, "price_max": null, "qty_avg": null, "line_ids": []}`
	assertJSON(t, docs["1"], want1)
	assertJSON(t, docs["2"], want2)
	if d, ok := docs["3"]; !ok || d != "" {
		t.Errorf("missing key 3: want a delete (nil document), got %q (present %v)", d, ok)
	}
	// Exactness on the wire: never through a float.
	for _, s := range []string{"9007199254740993", "12345678901234567890.0123456789", "2.50", "10.00"} {
		if !strings.Contains(docs["1"], s) {
			t.Errorf("document 1 does not hold %s verbatim: %s", s, docs["1"])
		}
	}
	// Field order follows the config: columns, relations, aggregates.
	if i, j := strings.Index(docs["1"], `"customer_id"`), strings.Index(docs["1"], `"line_ids"`); i < 0 || j < i {
		t.Errorf("field order: %s", docs["1"])
	}

	// A composite key: typed key JSON, id joined with ":".
	lines := p.Indexes[1]
	var got []Doc
	err := lines.Build(ctxT(t), db.Pool, []Key{{"1", "2"}, {"9", "9"}}, func(d Doc) error {
		got = append(got, Doc{Key: append([]byte(nil), d.Key...), ID: d.ID, Values: d.Values, Doc: append([]byte(nil), d.Doc...)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Doc{}
	for _, d := range got {
		byID[d.ID] = d
	}
	if k := string(byID["1:2"].Key); k != `{"order_id":1,"n":2}` {
		t.Errorf("composite key JSON %s", k)
	}
	assertJSON(t, string(byID["1:2"].Doc), `{"sku": "b", "order": {"select": "x"}}`)
	assertJSON(t, string(byID["9:9"].Key), `{"order_id": 9, "n": 9}`)
	if len(byID["9:9"].Doc) != 0 {
		t.Errorf("missing composite key: want a nil document, got %s", byID["9:9"].Doc)
	}

	// Composite keyset scan: after (1,1), up to (1,3).
	var ids []string
	last, n, err := lines.Scan(ctxT(t), db.Pool, Key{"1", "1"}, Key{"1", "3"}, 0, func(d Doc) error {
		ids = append(ids, d.ID)
		return nil
	})
	if err != nil || n != 2 || strings.Join(ids, ",") != "1:2,1:3" || last.String() != "1:3" {
		t.Errorf("composite scan: ids %v last %v n %d err %v", ids, last, n, err)
	}

	// A root where: a row that does not match is a delete.
	whereIx := mustCompile(t, db, parseConfig(t, `
indexes:
  - name: big
    table: '"My Schema"."Order"'
    where: big > 0
    columns: [ArtistId]
`)).Indexes[0]
	docs = buildAll(t, db, whereIx, Key{"1"}, Key{"2"})
	if docs["1"] == "" || docs["2"] != "" {
		t.Errorf("root where: %v", docs)
	}

	// A uuid key, and a has_many to the quoted table.
	cust := p.Indexes[2]
	d := one(t, db, cust, "11111111-1111-1111-1111-111111111111")
	assertJSON(t, d, `{"name": "Ann", "region": {"label": "Italy"}, "orders": [{"ArtistId": 1}]}`)
	d = one(t, db, cust, "22222222-2222-2222-2222-222222222222")
	assertJSON(t, d, `{"name": "Bob", "region": null, "orders": []}`)

	// A text key, three levels down.
	reg := p.Indexes[3]
	assertJSON(t, one(t, db, reg, "it"), `{"label": "Italy", "customers": [{"name": "Ann", "orders": [1]}]}`)
	assertJSON(t, one(t, db, reg, "fr"), `{"label": "France", "customers": []}`)
}

func TestWideTable(t *testing.T) {
	db := pgtest.NewDB(t)
	var cols []string
	for i := 1; i < 150; i++ {
		cols = append(cols, "c"+strconv.Itoa(i)+" int DEFAULT "+strconv.Itoa(i))
	}
	db.Exec(t, "CREATE TABLE wide (id int PRIMARY KEY, "+strings.Join(cols, ", ")+"); INSERT INTO wide (id) VALUES (1), (2)")
	p := mustCompile(t, db, parseConfig(t, "indexes:\n  - name: wide\n    table: wide\n"))
	got := one(t, db, p.Indexes[0], "1")
	want := sqlText(t, db, "SELECT to_json(w)::text FROM wide w WHERE id = 1")
	strip := func(s string) string { return strings.ReplaceAll(s, " ", "") }
	if strip(got) != strip(want) {
		t.Errorf("150 columns: keys or values differ\n got: %s\nwant: %s", got, want)
	}
}

func TestOddNames(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE SCHEMA "we""ird"; CREATE TABLE "we""ird"."Sel ect" ("from" int PRIMARY KEY, "a""b" text, "Mixed" int);
		CREATE TABLE "we""ird".kids (id int PRIMARY KEY, "parentId" int, "order" int);
		ALTER TABLE "we""ird".kids REPLICA IDENTITY FULL;
		INSERT INTO "we""ird"."Sel ect" VALUES (1, 'x"y', 7); INSERT INTO "we""ird".kids VALUES (10, 1, 2), (11, 1, 1)`)
	p := mustCompile(t, db, parseConfig(t, `
indexes:
  - name: odd
    table: '"we""ird"."Sel ect"'
    rename: {a"b: it's}
    relations:
      - {name: kids, table: '"we""ird".kids', kind: has_many, join: {from: parentId}, order_by: [order desc], columns: [id]}
    aggregates:
      - {name: n, table: '"we""ird".kids', join: {from: parentId}, fn: sum, column: order}
`))
	assertJSON(t, one(t, db, p.Indexes[0], "1"), `{"from": 1, "it's": "x\"y", "Mixed": 7, "kids": [{"id": 10}, {"id": 11}], "n": 3}`)
	kids := change.Table{Schema: `we"ird`, Name: "kids"}
	got, _ := resolved(t, db, p, change.Row{Table: kids, Op: change.Delete, Cols: p.CaptureColumns()[kids], Old: vals("10", "1")})
	if got["odd"] != "1" {
		t.Errorf("resolve: %v", got)
	}
}

func TestLimitsAndDefaultOrder(t *testing.T) {
	db, _ := loadShop(t)
	p := mustCompile(t, db, parseConfig(t, `
indexes:
  - name: o
    table: '"My Schema"."Order"'
    columns: [ArtistId]
    relations:
      - name: top_label
        table: labels
        kind: many_to_many
        through: {table: order_labels, join: {ArtistId: order_id}, target_join: {label_id: id}}
        columns: [name]
        scalar: true
        where: name <> 'zzz'
        order_by: [name desc]
        limit: 1
      - name: lines
        table: lines
        kind: has_many
        join: {ArtistId: order_id}
        columns: [n]
        scalar: true
      - name: lines_where
        table: lines
        kind: has_many
        join: {ArtistId: order_id}
        columns: [n]
        where: qty > 1
        scalar: true
    aggregates:
      - {name: qty_where, table: lines, join: {ArtistId: order_id}, fn: sum, column: qty, where: qty > 1}
      - {name: ids_where, table: lines, join: {ArtistId: order_id}, fn: ids, where: qty > 1}
`))
	assertJSON(t, one(t, db, p.Indexes[0], "1"), `{"ArtistId": 1, "top_label": ["red"], "lines": [1, 2, 3, 4],
		"lines_where": [1, 3], "qty_where": 7, "ids_where": [{"order_id": 1, "n": 1}, {"order_id": 1, "n": 3}]}`)
	assertJSON(t, one(t, db, p.Indexes[0], "2"), `{"ArtistId": 2, "top_label": [], "lines": [], "lines_where": [], "qty_where": null, "ids_where": []}`)
}
