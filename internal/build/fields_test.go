package build

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

const fieldsSchema = `
CREATE TABLE publishers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE authors (id int PRIMARY KEY, first_name text, last_name text, email text, nickname text, name text,
  doc jsonb, tags jsonb, publisher_id int REFERENCES publishers);
CREATE TABLE books (id int PRIMARY KEY, author_id int REFERENCES authors, title text, publisher_id int REFERENCES publishers);
ALTER TABLE books REPLICA IDENTITY FULL;
INSERT INTO publishers VALUES (1, 'Penguin'), (2, 'Faber');
INSERT INTO authors VALUES (1, 'Ann', 'Lee', 'Ann@X.org', NULL, 'ann', '{"address": {"city": "Oslo"}}', '["go", "sql"]', 2);
INSERT INTO books VALUES (10, 1, 'Alpha', 1), (11, 1, 'Beta', 2);
`

const fieldsIndex = `indexes:
  - name: authors
    table: public.authors
    columns: [id]
    fields:
      - {name: full_name, expr: "first_name || ' ' || last_name"}
      - {name: city, expr: "doc->'address'->>'city'"}
      - {name: first_tag, expr: "tags->0"}
      - {name: email, expr: "lower(email)"}
      - {name: display, expr: "coalesce(nickname, name)"}
      - {name: shout, expr: "replace(name, 'a', 'A')"}
      - {name: version, expr: "xmin::text::bigint"}
    relations:
      - name: publisher
        table: public.publishers
        kind: has_many
        join: {publisher_id: id}
        columns: [name]
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
`

// TestComputedFields: each use of a computed field, at the root, in a
// relation and in a nested relation, with the columns and type the server
// resolves for it.
func TestComputedFields(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, fieldsSchema)
	p := mustCompile(t, db, parseConfig(t, fieldsIndex))
	ix := p.Indexes[0]
	doc := one(t, db, ix, "1")
	var xmin string
	if err := db.Pool.QueryRow(ctxT(t), "SELECT xmin::text FROM authors WHERE id = 1").Scan(&xmin); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, doc, `{"id": 1, "full_name": "Ann Lee", "city": "Oslo", "first_tag": "go", "email": "ann@x.org",
		"display": "ann", "shout": "Ann", "version": `+xmin+`, "publisher": [{"name": "Faber"}],
		"books": [{"id": 10, "loud": "ALPHA", "publisher": {"name": "Penguin", "initial": "P"}},
		          {"id": 11, "loud": "BETA", "publisher": {"name": "Faber", "initial": "F"}}]}`)
	if !strings.Contains(doc, `"full_name" : "Ann Lee", "city"`) {
		t.Errorf("fields are not after the columns in config order: %s", doc)
	}
	// The backfill's scan gives the same document.
	var scanned string
	if _, _, err := ix.Scan(ctxT(t), db.Pool, nil, nil, 10, func(d Doc) error { scanned = string(d.Doc); return nil }); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, scanned, doc)

	type fact struct{ typ, cols string }
	got := map[string]fact{}
	for _, f := range ix.Fields() {
		if f.Unknown != "" {
			t.Errorf("%s: columns unknown: %s", f.Path, f.Unknown)
		}
		got[f.Path] = fact{f.Type, strings.Join(f.Columns, ",")}
	}
	want := map[string]fact{
		`index "authors".fields[full_name]`:                                     {"text", "first_name,last_name"},
		`index "authors".fields[city]`:                                          {"text", "doc"},
		`index "authors".fields[first_tag]`:                                     {"jsonb", "tags"},
		`index "authors".fields[email]`:                                         {"text", "email"},
		`index "authors".fields[display]`:                                       {"text", "nickname,name"},
		`index "authors".fields[shout]`:                                         {"text", "name"},
		`index "authors".fields[version]`:                                       {"bigint", "xmin"},
		`index "authors".relations[books].fields[loud]`:                         {"text", "title"},
		`index "authors".relations[books].relations[publisher].fields[initial]`: {"text", "name"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("field facts\n got: %v\nwant: %v", got, want)
	}
}

// TestComputedFieldProblems: validate names the index, the field and the
// server's message for a bad expression, refuses one reading other rows or
// tables, and warns of a volatile one.
func TestComputedFieldProblems(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, fieldsSchema+`CREATE FUNCTION publisher_name(int) RETURNS text STABLE LANGUAGE sql AS 'SELECT name FROM publishers WHERE id = $1';`)
	cfg := parseConfig(t, `indexes:
  - name: authors
    table: public.authors
    fields:
      - {name: pub, expr: "publisher_name(publisher_id)"}
      - {name: bad, expr: "first_nam || 'x'"}
      - {name: sub, expr: "(SELECT count(*) FROM books b WHERE b.author_id = id)"}
      - {name: agg, expr: "count(*)"}
      - {name: rnd, expr: "random()"}
      - {name: clock, expr: "now()"}
      - {name: ok, expr: "lower(email)"}
`)
	p, problems, err := Compile(ctxT(t), db.Pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p != nil {
		t.Error("a plan despite bad fields")
	}
	var b bytes.Buffer
	WriteProblems(&b, problems)
	out := b.String()
	for _, want := range []string{
		`error: index "authors".fields[bad]: index authors, field bad: expression "first_nam || 'x'" on table public.authors: ERROR: column "first_nam" does not exist`,
		`error: index "authors".fields[sub]: index authors, field sub: expression "(SELECT count(*) FROM books b WHERE b.author_id = id)" on table public.authors reads public.books: a field is computed from its own row only; relations and aggregates`,
		`error: index "authors".fields[agg]: index authors, field agg: expression "count(*)" on table public.authors reads public.authors (other rows of it, through aggregate)`,
		`warning: index "authors".fields[rnd]: index authors, field rnd: expression "random()" calls random()`,
		`warning: index "authors".fields[clock]: index authors, field clock: expression "now()" calls now()`,
		`warning: index "authors".fields[pub]: index authors, field pub: expression "publisher_name(publisher_id)" calls STABLE publisher_name(): if it reads other tables`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing\n  %s\nin\n%s", want, out)
		}
	}
	if strings.Contains(out, "fields[ok]") {
		t.Errorf("a good field was reported:\n%s", out)
	}
}

// TestComputedFieldShapes: fields on a root with where, a limited has_many
// with where, a many_to_many, and next to aggregates over the same table.
func TestComputedFieldShapes(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, fieldsSchema+`
CREATE TABLE tags (id int PRIMARY KEY, name text);
CREATE TABLE author_tags (author_id int, tag_id int, PRIMARY KEY (author_id, tag_id));
INSERT INTO tags VALUES (1, 'go'), (2, 'sql');
INSERT INTO author_tags VALUES (1, 1), (1, 2);
INSERT INTO books VALUES (12, 1, 'Gamma', NULL);`)
	p := mustCompile(t, db, parseConfig(t, `indexes:
  - name: authors
    table: public.authors
    columns: [id]
    where: "email IS NOT NULL"
    fields:
      - {name: initials, expr: "left(first_name, 1) || left(last_name, 1) -- a comment ends at the line"}
    relations:
      - name: recent
        table: public.books
        kind: has_many
        join: {id: author_id}
        columns: [id]
        where: "title <> 'Beta'"
        order_by: [id desc]
        limit: 1
        fields:
          - {name: t, expr: "lower(title)"}
      - name: tags
        table: public.tags
        kind: many_to_many
        through: {table: public.author_tags, join: {id: author_id}, target_join: {tag_id: id}}
        columns: [id]
        fields:
          - {name: label, expr: "'#' || name"}
      - name: all_books
        table: public.books
        kind: has_many
        join: {id: author_id}
        columns: [id]
        fields:
          - {name: len, expr: "length(title)"}
    aggregates:
      - {name: book_count, table: public.books, join: {id: author_id}, fn: count}
`))
	assertJSON(t, one(t, db, p.Indexes[0], "1"), `{"id": 1, "initials": "AL", "recent": [{"id": 12, "t": "gamma"}],
		"tags": [{"id": 1, "label": "#go"}, {"id": 2, "label": "#sql"}],
		"all_books": [{"id": 10, "len": 5}, {"id": 11, "len": 4}, {"id": 12, "len": 5}], "book_count": 3}`)
}

// TestComputedFieldsReadOnly: where no temporary view can be created (here
// a read-only transaction; a standby likewise), the fields still compile
// and build, and validate says their columns could not be derived.
func TestComputedFieldsReadOnly(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, fieldsSchema)
	tx, err := db.Pool.BeginTx(ctxT(t), pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxT(t))
	p, problems, err := Compile(ctxT(t), tx, parseConfig(t, `indexes:
  - name: authors
    table: public.authors
    columns: [id]
    fields:
      - {name: full_name, expr: "first_name || ' ' || last_name"}
`))
	if err != nil || p == nil {
		t.Fatalf("compile: %v %v", err, problems)
	}
	var b bytes.Buffer
	WriteProblems(&b, problems)
	if want := `info: index "authors".fields: the columns the fields of public.authors read could not be derived`; !strings.Contains(b.String(), want) {
		t.Errorf("problems lack %q:\n%s", want, b.String())
	}
	if f := p.Indexes[0].Fields(); len(f) != 1 || f[0].Unknown == "" || f[0].Columns != nil {
		t.Errorf("fields: %+v", f)
	}
	assertJSON(t, one(t, db, p.Indexes[0], "1"), `{"id": 1, "full_name": "Ann Lee"}`)
}
