package follow_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// fieldsSchema: authors whose doc is a jsonb stored out of line (TOAST,
// uncompressed), under REPLICA IDENTITY DEFAULT, so an update of another
// column sends it as unchanged ('u').
const fieldsSchema = `
CREATE TABLE publishers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE authors (id int PRIMARY KEY, first_name text, last_name text, email text, nickname text, name text,
  doc jsonb, tags jsonb);
ALTER TABLE authors ALTER doc SET STORAGE EXTERNAL;
CREATE TABLE books (id int PRIMARY KEY, author_id int REFERENCES authors, title text, publisher_id int REFERENCES publishers);
CREATE TABLE marker (id int PRIMARY KEY, round int);
INSERT INTO publishers VALUES (1, 'Penguin'), (2, 'Faber');
INSERT INTO authors SELECT g, 'First' || g, 'Last' || g, 'Mail' || g || '@X.org', NULL, 'name' || g,
  jsonb_build_object('address', jsonb_build_object('city', 'City' || g), 'filler', (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 200) i)),
  jsonb_build_array('tag' || g, 'other')
  FROM generate_series(1, 5) g;
INSERT INTO books VALUES (10, 1, 'alpha', 1), (11, 1, 'beta', 2), (12, 2, 'gamma', 1);
INSERT INTO marker VALUES (1, 0);
`

const fieldsIndexes = `
indexes:
  - name: authors
    table: public.authors
    columns: [id]
    fields:
      - {name: full_name, expr: "first_name || ' ' || last_name"}
      - {name: city, expr: "doc->'address'->>'city'"}
      - {name: first_tag, expr: "tags->0"}
      - {name: email, expr: "lower(email)"}
      - {name: display, expr: "coalesce(nickname, name)"}
      - {name: shout, expr: "replace(name, 'name', 'NAME')"}
      - {name: version, expr: "xmin::text::bigint"}
    relations:
      - name: books
        table: public.books
        kind: has_many
        join: {id: author_id}
        columns: [id]
        order_by: [id]
        fields:
          - {name: loud, expr: "upper(title)"}
        relations:
          - name: publisher
            table: public.publishers
            kind: belongs_to
            join: {publisher_id: id}
            columns: [name]
            fields:
              - {name: initial, expr: "left(name, 1)"}
  - {name: marker, table: marker}
`

// TestComputedFieldsFollow: computed fields through backfill and follow.
// A change to only a column an expression reads rebuilds the field, a jsonb
// path over a TOASTed value the update left unchanged keeps its value, xmin
// follows every change of the row, and a nested relation's field follows
// its table; after each round the fold equals a fresh backfill and the
// values the database gives.
func TestComputedFieldsFollow(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, fieldsSchema)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "flusso.yaml")
	conf := fmt.Sprintf("source:\n  dsn: %s\n  slot: %s\n  publication: pub_%s\nstate:\n  dir: %s\ncapture:\n  status_interval: 1s\n%s",
		db.DSN, db.Name, db.Name, filepath.Join(dir, "state"), fieldsIndexes)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var toastBytes int64
	if err := db.Pool.QueryRow(context.Background(), "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'authors'::regclass").Scan(&toastBytes); err != nil || toastBytes == 0 {
		t.Fatalf("authors.doc is not stored out of line (%v): the test would not cover unchanged TOAST values", err)
	}
	out := filepath.Join(dir, "out.ndjson")
	p := xStart(t, out, "follow", "--config", cfg)
	xWaitFold(t, p, out, cfg, 0, 30*time.Second)
	check := func(id string, want map[string]string) {
		t.Helper()
		doc := xFold(t, out)["authors"][id].(map[string]any)
		for k, v := range want {
			if got := fmt.Sprint(doc[k]); got != v {
				t.Errorf("authors %s: %s = %s, want %s (doc %v)", id, k, got, v, doc)
			}
		}
		var xmin string
		if err := db.Pool.QueryRow(context.Background(), "SELECT xmin::text FROM authors WHERE id = $1::int", id).Scan(&xmin); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(doc["version"]); got != xmin {
			t.Errorf("authors %s: version = %s, want the row's xmin %s", id, got, xmin)
		}
	}
	check("1", map[string]string{"full_name": "First1 Last1", "city": "City1", "first_tag": "tag1", "email": "mail1@x.org",
		"display": "name1", "shout": "NAME1", "books": "[map[id:10 loud:ALPHA publisher:map[initial:P name:Penguin]] map[id:11 loud:BETA publisher:map[initial:F name:Faber]]]"})

	db.Exec(t, `UPDATE authors SET last_name = 'Smith' WHERE id = 1;
UPDATE authors SET email = 'NEW@Example.ORG', nickname = 'nick' WHERE id = 2;
UPDATE authors SET tags = '["first", "second"]' WHERE id = 3;
UPDATE authors SET doc = jsonb_set(doc, '{address,city}', '"Bergen"') WHERE id = 4;
UPDATE publishers SET name = 'Zebra' WHERE id = 1;
UPDATE books SET title = 'delta' WHERE id = 11;
UPDATE marker SET round = 1`)
	xWaitFold(t, p, out, cfg, 1, 30*time.Second)
	check("1", map[string]string{"full_name": "First1 Smith", "city": "City1",
		"books": "[map[id:10 loud:ALPHA publisher:map[initial:Z name:Zebra]] map[id:11 loud:DELTA publisher:map[initial:F name:Faber]]]"})
	check("2", map[string]string{"email": "new@example.org", "display": "nick", "city": "City2",
		"books": "[map[id:12 loud:GAMMA publisher:map[initial:Z name:Zebra]]]"})
	check("3", map[string]string{"first_tag": "first", "city": "City3"})
	check("4", map[string]string{"city": "Bergen", "full_name": "First4 Last4"})
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
