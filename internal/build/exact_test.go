package build

import (
	"strconv"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// TestKeyString: a composite key's parts are escaped, so distinct keys
// never share an id; a one-column key is its value as it is.
func TestKeyString(t *testing.T) {
	cases := []struct {
		key  Key
		want string
	}{
		{Key{"42"}, "42"},
		{Key{"a:b\\c"}, "a:b\\c"},
		{Key{"x:y", "z"}, `x\:y:z`},
		{Key{"x", "y:z"}, `x:y\:z`},
		{Key{`a\`, "b"}, `a\\:b`},
		{Key{"a", `\b`}, `a:\\b`},
		{Key{"", ""}, ":"},
		{Key{"1", "2", "3"}, "1:2:3"},
	}
	seen := map[string]Key{}
	for _, c := range cases {
		if got := c.key.String(); got != c.want {
			t.Errorf("%q: id %q, want %q", []string(c.key), got, c.want)
		}
		if prev, ok := seen[c.want]; ok {
			t.Errorf("%q and %q share id %q", []string(prev), []string(c.key), c.want)
		}
		seen[c.want] = c.key
	}
}

// collectDocs builds keys and returns every callback in order, copied.
func collectDocs(t *testing.T, db *pgtest.DB, ix *Index, keys ...Key) []Doc {
	t.Helper()
	var out []Doc
	err := ix.Build(ctxT(t), db.Pool, keys, func(d Doc) error {
		c := Doc{Key: append([]byte(nil), d.Key...), ID: d.ID, Values: append(Key(nil), d.Values...)}
		if d.Doc != nil {
			c.Doc = append([]byte{}, d.Doc...)
		}
		out = append(out, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func docLines(ds []Doc) string {
	var b strings.Builder
	for _, d := range ds {
		op := "upsert"
		if d.Doc == nil {
			op = "delete"
		}
		b.WriteString(op + " " + d.ID + " " + string(d.Key) + "\n")
	}
	return b.String()
}

// TestCompositeIDsDistinct: ('x:y','z') and ('x','y:z') are two documents
// with two ids, from Scan (backfill) and Build (follow) alike.
func TestCompositeIDsDistinct(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE c2 (a text, b text, v text, PRIMARY KEY (a, b));
		INSERT INTO c2 VALUES ('x:y', 'z', 'first'), ('x', 'y:z', 'second'), ('a\', 'b', 'third'), ('a', '\b', 'fourth')`)
	p := mustCompile(t, db, parseConfig(t, "indexes:\n  - {name: c2, table: c2}\n"))
	ix := p.Indexes[0]
	ids := map[string]string{}
	_, n, err := ix.Scan(ctxT(t), db.Pool, nil, nil, 0, func(d Doc) error {
		ids[d.ID] = string(d.Doc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 || len(ids) != 4 {
		t.Fatalf("scan: %d rows, %d distinct ids: %v", n, len(ids), ids)
	}
	for _, id := range []string{`x\:y:z`, `x:y\:z`, `a\\:b`, `a:\\b`} {
		if _, ok := ids[id]; !ok {
			t.Errorf("scan: no id %q in %v", id, ids)
		}
	}
	got := docLines(collectDocs(t, db, ix, Key{"x:y", "z"}, Key{"x", "y:z"}))
	if !strings.Contains(got, `upsert x\:y:z {"a":"x:y","b":"z"}`) || !strings.Contains(got, `upsert x:y\:z {"a":"x","b":"y:z"}`) {
		t.Fatalf("build:\n%s", got)
	}
}

// TestKeySpeltByTheRow: a key reached through a child whose foreign key
// spells it differently (citext in another case, numeric 2 for 2.0) writes
// the document under the row's own spelling, and a delete for the other
// spelling (never one another row of the batch spells: a key: over citext
// without a unique index may have 'Ada' and 'ada'); a gone row is a delete
// under the looked-up spelling.
func TestKeySpeltByTheRow(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE EXTENSION citext;
		CREATE TABLE users (email citext PRIMARY KEY, name text);
		CREATE TABLE posts (id bigint PRIMARY KEY, author_email citext, title text);
		ALTER TABLE posts REPLICA IDENTITY FULL;
		INSERT INTO users VALUES ('Ada@Example.com', 'ada');
		INSERT INTO posts VALUES (1, 'ada@example.com', 'p1');
		CREATE TABLE n (id numeric PRIMARY KEY, v text);
		CREATE TABLE nk (id bigint PRIMARY KEY, n_id numeric, v text);
		ALTER TABLE nk REPLICA IDENTITY FULL;
		INSERT INTO n VALUES (2.0, 'two');
		INSERT INTO nk VALUES (1, 2, 'k1');`)
	p := mustCompile(t, db, parseConfig(t, `indexes:
  - name: users
    table: users
    relations:
      - {name: posts, table: posts, kind: has_many, join: {email: author_email}, columns: [id, title]}
  - name: n
    table: n
    relations:
      - {name: nk, table: nk, kind: has_many, join: {id: n_id}, columns: [id, v]}
`))
	rows := []change.Row{
		{Table: tbl("public.posts"), Op: change.Update, Cols: p.CaptureColumns()[tbl("public.posts")],
			Old: []change.Value{{Text: "1"}, {Text: "ada@example.com"}}, New: []change.Value{{Text: "1"}, {Text: "ada@example.com"}}},
		{Table: tbl("public.nk"), Op: change.Update, Cols: p.CaptureColumns()[tbl("public.nk")],
			Old: []change.Value{{Text: "1"}, {Text: "2"}}, New: []change.Value{{Text: "1"}, {Text: "2"}}},
	}
	aff, err := p.Resolve(ctxT(t), db.Pool, rows)
	if err != nil {
		t.Fatal(err)
	}
	users, n := p.Indexes[0], p.Indexes[1]
	got := docLines(collectDocs(t, db, users, aff.Keys[users]...))
	want := "upsert Ada@Example.com {\"email\":\"Ada@Example.com\"}\ndelete ada@example.com {\"email\":\"ada@example.com\"}\n"
	if got != want {
		t.Errorf("users:\n got: %s\nwant: %s", got, want)
	}
	got = docLines(collectDocs(t, db, n, aff.Keys[n]...))
	want = "upsert 2.0 {\"id\":2.0}\ndelete 2 {\"id\":2}\n"
	if got != want {
		t.Errorf("n:\n got: %s\nwant: %s", got, want)
	}
	// The row's own spelling: one upsert, no delete.
	if got := docLines(collectDocs(t, db, users, Key{"Ada@Example.com"})); got != "upsert Ada@Example.com {\"email\":\"Ada@Example.com\"}\n" {
		t.Errorf("own spelling: %s", got)
	}
	// Values hand back the key as passed in, for the caller to match.
	for _, d := range collectDocs(t, db, users, Key{"ada@example.com"}) {
		if d.Values[0] != "ada@example.com" {
			t.Errorf("Values %q, want the key as passed in", d.Values)
		}
	}
	db.Exec(t, "DELETE FROM users")
	if got := docLines(collectDocs(t, db, users, Key{"Ada@Example.com"})); got != "delete Ada@Example.com {\"email\":\"Ada@Example.com\"}\n" {
		t.Errorf("gone row: %s", got)
	}
}

// TestTruncateThenInsert: BEGIN; TRUNCATE posts; INSERT ...; COMMIT in one
// resolve batch keeps the keys of the rows written after the TRUNCATE and
// drops those before it; an index that reads the table below its root is
// rebuilt.
func TestTruncateThenInsert(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE authors (id bigint PRIMARY KEY, name text);
		CREATE TABLE posts (id bigint PRIMARY KEY, author_id bigint, title text);
		ALTER TABLE posts REPLICA IDENTITY FULL;`)
	p := mustCompile(t, db, parseConfig(t, `indexes:
  - {name: posts, table: posts}
  - name: authors
    table: authors
    relations:
      - {name: posts, table: posts, kind: has_many, join: {id: author_id}}
  - {name: other, table: authors}
`))
	posts, authors, other := p.Indexes[0], p.Indexes[1], p.Indexes[2]
	cols := p.CaptureColumns()[tbl("public.posts")]
	ins := func(id string) change.Row {
		return change.Row{Table: tbl("public.posts"), Op: change.Insert, Cols: cols, New: []change.Value{{Text: id}, {Text: "1"}}}
	}
	trunc := change.Row{Table: tbl("public.posts"), Op: change.Truncate}
	aIns := change.Row{Table: tbl("public.authors"), Op: change.Insert, Cols: p.CaptureColumns()[tbl("public.authors")], New: []change.Value{{Text: "7"}}}
	rows := []change.Row{ins("1"), aIns, trunc, ins("2"), ins("3"), trunc, ins("4"), ins("5")}
	aff, err := p.Resolve(ctxT(t), db.Pool, rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(aff.Truncated) != 1 || aff.Truncated[0] != posts {
		t.Errorf("truncated %v, want posts", aff.Truncated)
	}
	if len(aff.Rebuild) != 1 || aff.Rebuild[0] != authors {
		t.Errorf("rebuild %v, want authors", aff.Rebuild)
	}
	if got := keysText(aff.Keys[posts]); got != "4 5" {
		t.Errorf("posts keys %q, want the rows after the last truncate: 4 5", got)
	}
	if got := keysText(aff.Keys[other]); got != "7" {
		t.Errorf("other keys %q: an index the truncate does not touch keeps its keys", got)
	}
	// A batch larger than any resolve batch would be: every row after the
	// truncate is kept.
	rows = []change.Row{trunc}
	for i := 1; i <= 2000; i++ {
		rows = append(rows, ins(strconv.Itoa(i)))
	}
	aff, err = p.Resolve(ctxT(t), db.Pool, rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(aff.Keys[posts]) != 2000 {
		t.Fatalf("%d keys after a truncate and 2000 inserts, want 2000", len(aff.Keys[posts]))
	}
}

func keysText(ks []Key) string {
	var parts []string
	for _, k := range ks {
		parts = append(parts, k.String())
	}
	return strings.Join(parts, " ")
}

// TestOrderTieBreaker: order_by on a column with ties, with a limit: the
// key breaks the tie, so which rows a document holds is determined.
func TestOrderTieBreaker(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE posts (id bigint PRIMARY KEY);
		CREATE TABLE comments (id bigint PRIMARY KEY, post_id bigint, score int);
		ALTER TABLE comments REPLICA IDENTITY FULL;
		INSERT INTO posts VALUES (1);
		INSERT INTO comments SELECT g, 1, 5 FROM generate_series(40, 1, -1) g;`)
	p := mustCompile(t, db, parseConfig(t, `indexes:
  - name: posts
    table: posts
    relations:
      - {name: top, table: comments, kind: has_many, join: {id: post_id}, order_by: ["score desc"], limit: 3, columns: [id]}
`))
	assertJSON(t, one(t, db, p.Indexes[0], "1"), `{"id":1,"top":[{"id":1},{"id":2},{"id":3}]}`)
}

// TestRespeltDeleteNeverUndoesAnUpsert: with a key: over citext and no
// unique index, 'Ada' and 'ada' are two rows, two documents; looking up
// one finds both, and no delete removes the other's document.
func TestRespeltDeleteNeverUndoesAnUpsert(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE EXTENSION citext;
		CREATE TABLE u (id bigint PRIMARY KEY, email citext NOT NULL, v text);
		ALTER TABLE u REPLICA IDENTITY FULL;
		INSERT INTO u VALUES (1, 'Ada', 'x'), (2, 'ada', 'y');`)
	p := mustCompile(t, db, parseConfig(t, "indexes:\n  - {name: u, table: u, key: [email], columns: [v]}\n"))
	for _, k := range []string{"ada", "Ada", "ADA"} {
		fold := map[string]bool{"Ada": true, "ada": true}
		for _, d := range collectDocs(t, db, p.Indexes[0], Key{k}) {
			fold[d.ID] = d.Doc != nil
		}
		if !fold["Ada"] || !fold["ada"] {
			t.Errorf("looking up %q: the fold lost a document: %v", k, fold)
		}
	}
}
