package build

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// The documents Postgres builds, of every kind of value a document carries,
// come out of output's compaction as encoding/json's Compact makes them:
// only the whitespace Postgres puts between tokens (and a json column's
// own) goes, every value stays as Postgres spelt it.
func TestDocumentsCompactExactly(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE a (id int PRIMARY KEY, name text);
CREATE TABLE p (id int PRIMARY KEY, a_id int REFERENCES a, title text, j json, jb jsonb, n numeric, f float8, ts timestamptz, tags text[]);
CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p, body text); ALTER TABLE c REPLICA IDENTITY FULL;
INSERT INTO a VALUES (1, 'Ann " : , Lee');
INSERT INTO p VALUES
 (1, 1, 'title : with , punctuation "quoted" \ back', E'{\n  "x" : [1, 2],\n\t"y": "a b"\n}', '{"k": {"z": [1, "two", null]}, "e": ""}', 2.50, 1e300, '2026-12-03 01:02:03+00', '{"a b", "c,d"}'),
 (2, NULL, E'tab\there\nline', '"just a string"', '[]', -0.0, 'NaN', NULL, '{}');
INSERT INTO c VALUES (1, 1, 'x : y'), (2, 1, E'uni é 🙂 \\u0041');`)
	cfg := parseConfig(t, `indexes:
  - name: p
    table: p
    key: id
    relations:
      - name: author
        table: a
        kind: belongs_to
        join: {a_id: id}
      - name: comments
        table: c
        kind: has_many
        join: {id: p_id}
        order_by: [id]
`)
	ix := mustCompile(t, db, cfg).Indexes[0]
	for id, doc := range buildAll(t, db, ix, Key{"1"}, Key{"2"}) {
		line := output.AppendUpsert(nil, "p", []byte(`{"id" : `+id+`}`), id, 1, []byte(doc))
		var want bytes.Buffer
		if err := json.Compact(&want, []byte(doc)); err != nil {
			t.Fatalf("document %s is not JSON: %v\n%s", id, err, doc)
		}
		wantLine := `{"index":"p","op":"upsert","key":{"id":` + id + `},"id":"` + id + `","lsn":"0/1","doc":` + want.String() + "}\n"
		if string(line) != wantLine {
			t.Errorf("document %s:\n got %s\nwant %s", id, line, wantLine)
		}
		if !bytes.Contains([]byte(doc), []byte(`" : `)) {
			t.Errorf("document %s from Postgres has no spaced separator: the test no longer shows what compaction removes\n%s", id, doc)
		}
	}
}
