package build

import (
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

const exactSchema = `
CREATE TABLE posts (id bigint PRIMARY KEY, title text, body text, user_id bigint, votes int,
	published_at timestamptz, slug text GENERATED ALWAYS AS (lower(title)) STORED);
CREATE TABLE comments (id bigint PRIMARY KEY, post_id bigint, body text, score int);
CREATE TABLE refs (id bigint PRIMARY KEY, post_slug text, body text);
CREATE TABLE genrefs (id bigint PRIMARY KEY, raw text, post_slug text GENERATED ALWAYS AS (lower(raw)) STORED);
CREATE TABLE banned (user_id bigint PRIMARY KEY);
CREATE TABLE t (a text NOT NULL, b text, v text, UNIQUE (a, b));
CREATE TABLE events (id bigint, day date, title text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE SEQUENCE s;
CREATE FUNCTION visible(bigint) RETURNS boolean LANGUAGE sql STABLE AS 'SELECT NOT EXISTS (SELECT 1 FROM banned WHERE user_id = $1)';
CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
CREATE FUNCTION touchy(int) RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN $1; END';
CREATE VIEW v AS SELECT id, title FROM posts;
CREATE UNLOGGED TABLE hits (id bigint PRIMARY KEY, n int);
ALTER TABLE comments REPLICA IDENTITY FULL;
ALTER TABLE refs REPLICA IDENTITY FULL;
ALTER TABLE genrefs REPLICA IDENTITY FULL;
ALTER TABLE t REPLICA IDENTITY FULL;
`

func problemsOf(t *testing.T, db *pgtest.DB, indexes string) ([]Problem, *Plan) {
	t.Helper()
	p, problems, err := Compile(ctxT(t), db.Pool, parseConfig(t, "indexes:\n"+indexes))
	if err != nil {
		t.Fatal(err)
	}
	return problems, p
}

// TestValidateExact: every config whose documents could not be exact is
// refused at start, naming the table, the column and the reason.
func TestValidateExact(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, exactSchema)
	cases := []struct {
		name, config, code, severity string
		contains                     []string
	}{
		{"nullable key", `  - {name: x, table: t, key: [a, b]}`, "nullable_key", "error",
			[]string{"public.t.b", "nullable", "NOT NULL", "ALTER TABLE public.t ALTER COLUMN b SET NOT NULL;"}},
		{"key without a unique index", `  - {name: x, table: posts, key: [title]}`, "key_not_unique", "warning",
			[]string{"public.posts", "(title)", "share one document", "CREATE UNIQUE INDEX ON public.posts (title);"}},
		{"generated key", `  - {name: x, table: posts, key: [slug]}`, "generated_column", "error", []string{"public.posts.slug", "generated", "pgoutput"}},
		{"generated child join", `  - name: x
    table: posts
    relations:
      - {name: refs, table: genrefs, kind: has_many, join: {slug: post_slug}}`, "generated_column", "error",
			[]string{"public.genrefs.post_slug", "generated", "stored column"}},
		{"duplicate field with default columns", `  - name: x
    table: posts
    relations:
      - {name: title, table: comments, kind: has_one, join: {id: post_id}, columns: [body], scalar: true}
    aggregates:
      - {name: votes, table: comments, join: {id: post_id}, fn: count}`, "duplicate_field", "error",
			[]string{`"title"`, `"votes"`, "column", "relation", "aggregate", "rename"}},
		{"duplicate field in a relation", `  - name: x
    table: posts
    columns: [id]
    relations:
      - name: comments
        table: comments
        kind: has_many
        join: {id: post_id}
        aggregates:
          - {name: score, table: comments, join: {id: id}, fn: count}`, "duplicate_field", "error", []string{`"score"`, "relations[comments]"}},
		{"unlogged table", `  - {name: x, table: hits}`, "unlogged", "warning", []string{"public.hits", "UNLOGGED", "WAL", "ALTER TABLE public.hits SET LOGGED;"}},
		{"view as root", `  - {name: x, table: v}`, "no_key", "error", []string{"public.v is a view", "not in the WAL", "key:"}},
		{"where reads another table", `  - name: x
    table: posts
    where: "user_id NOT IN (SELECT user_id FROM banned)"`, "where_reads_table", "error", []string{"public.banned", "stale", "relation"}},
		{"where exists", `  - name: x
    table: posts
    relations:
      - {name: c, table: comments, kind: has_many, join: {id: post_id}, where: "NOT EXISTS (SELECT 1 FROM banned b WHERE b.user_id = score)"}`,
			"where_reads_table", "error", []string{"public.banned", "public.comments"}},
		{"where reads other rows", `  - name: x
    table: posts
    relations:
      - {name: c, table: comments, kind: has_many, join: {id: post_id}, where: "score > (SELECT avg(score) FROM comments)"}`,
			"where_reads_table", "error", []string{"other rows of it"}},
		{"where now()", `  - name: x
    table: posts
    where: "published_at <= now()"`, "where_volatile", "error", []string{"now()", "clock"}},
		{"where CURRENT_TIMESTAMP", `  - name: x
    table: posts
    where: "published_at <= CURRENT_TIMESTAMP - interval '1 day'"`, "where_volatile", "error", []string{"CURRENT_TIMESTAMP", "clock"}},
		{"where 'now'", `  - name: x
    table: posts
    where: "published_at <= 'now'::timestamptz"`, "where_volatile", "error", []string{"'now'", "clock"}},
		{"where nextval", `  - name: x
    table: posts
    where: "id < 1000 OR nextval('s') > 0"`, "where_volatile", "error", []string{"nextval()", "VOLATILE", "read-only"}},
		{"where volatile user function", `  - name: x
    table: posts
    where: "touchy(votes) > 0"`, "where_volatile", "error", []string{"touchy()", "VOLATILE"}},
		{"where stable user function", `  - name: x
    table: posts
    where: "visible(user_id)"`, "where_volatile", "warning", []string{"visible()", "STABLE"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			problems, p := problemsOf(t, db, c.config)
			var found []string
			for _, pr := range problems {
				if pr.Code == c.code {
					found = append(found, pr.String())
					if pr.Severity != c.severity {
						t.Errorf("severity %s, want %s", pr.Severity, c.severity)
					}
				}
			}
			if found == nil {
				t.Fatalf("no %s problem; got %v", c.code, problems)
			}
			text := strings.Join(found, "\n")
			for _, s := range c.contains {
				if !strings.Contains(text, s) {
					t.Errorf("%q does not say %q", text, s)
				}
			}
			if c.severity == "error" && p != nil {
				t.Errorf("a plan was compiled despite the error")
			}
			if c.code == "no_key" && strings.Contains(text, "ALTER TABLE") {
				t.Errorf("a view gets an ALTER TABLE fix: %s", text)
			}
			for _, other := range problems {
				if c.code == "no_key" && other.Code == "replica_identity" {
					t.Errorf("a view gets a replica identity verdict: %s", other)
				}
			}
		})
	}
}

// TestValidateExactAccepts: conditions that are exact pass without a word.
func TestValidateExactAccepts(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, exactSchema)
	for _, where := range []string{
		"votes > 0 AND lower(title) LIKE 'a%'",
		"twice(votes) > 4",
		"published_at IS NOT NULL AND published_at > '2020-01-01'",
		"title IN ('now', 'today')", // strings that are not times
		"coalesce(votes, 0) > 0 AND greatest(votes, 1) < 10 AND id::text <> ''",
		"date_trunc('day', published_at) > '2020-01-01'",
	} {
		problems, p := problemsOf(t, db, "  - name: x\n    table: posts\n    where: \""+where+"\"\n")
		if p == nil || len(problems) > 0 {
			t.Errorf("where %q: %v", where, problems)
		}
	}
	problems, p := problemsOf(t, db, "  - {name: e, table: events, where: \"day >= '2025-06-01' AND title <> ''\"}\n")
	if p == nil || len(problems) > 0 {
		t.Errorf("partitioned table: %v", problems)
	}
	// A view's plan scans its tables: only not_a_table is said.
	problems, _ = problemsOf(t, db, "  - {name: v, table: v, key: [id], where: \"title <> ''\"}\n")
	for _, pr := range problems {
		if pr.Code == "where_reads_table" {
			t.Errorf("view with a where: %v", pr)
		}
	}
}

// TestGeneratedParentJoin: a generated column on the parent side of a join
// is not captured (pgoutput does not send it; resolution never reads it).
func TestGeneratedParentJoin(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, exactSchema)
	problems, p := problemsOf(t, db, `  - name: x
    table: posts
    relations:
      - {name: refs, table: refs, kind: has_many, join: {slug: post_slug}}
`)
	if p == nil {
		t.Fatalf("refused: %v", problems)
	}
	for _, c := range p.CaptureColumns()[tbl("public.posts")] {
		if c == "slug" {
			t.Fatalf("posts.slug is captured: %v", p.CaptureColumns()[tbl("public.posts")])
		}
	}
	db.Exec(t, "INSERT INTO posts (id, title) VALUES (1, 'Hello'); INSERT INTO refs VALUES (1, 'hello', 'r')")
	assertJSON(t, one(t, db, p.Indexes[0], "1"), `{"id":1,"title":"Hello","body":null,"user_id":null,"votes":null,"published_at":null,"slug":"hello","refs":[{"id":1,"post_slug":"hello","body":"r"}]}`)
}

// TestValidateWhereWithOtherErrors: a bad where is reported together with the other
// errors, not only once they are fixed.
func TestValidateWhereWithOtherErrors(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, exactSchema)
	problems, _ := problemsOf(t, db, `  - name: x
    table: posts
    columns: [id, titel]
    relations:
      - {name: c, table: comments, kind: has_many, join: {id: post_id}, where: "delted_at IS NULL"}
      - {name: r, table: refs, kind: has_many, join: {id: nope}}
  - name: y
    table: posts
    where: "published_at <= now()"
`)
	codes := map[string]int{}
	for _, p := range problems {
		codes[p.Code]++
		if p.Code == "replica_identity" {
			t.Errorf("a replica identity verdict on a join column that does not exist (refs is FULL): %s", p)
		}
	}
	if codes["missing_column"] < 2 || codes["invalid_sql"] != 1 || codes["where_volatile"] != 1 {
		t.Fatalf("want 2 missing_column, 1 invalid_sql, 1 where_volatile at once; got %v", problems)
	}
}

// TestValidatePartitionsAndInheritance: every leaf partition's replica
// identity is checked, with the fix per leaf; a table with inheritance
// children is refused, naming them.
func TestValidatePartitionsAndInheritance(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE posts (id bigint PRIMARY KEY, title text);
		CREATE TABLE comments (id bigint, created date, post_id bigint, body text, PRIMARY KEY (id, created)) PARTITION BY RANGE (created);
		CREATE TABLE comments_2024 PARTITION OF comments FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
		CREATE TABLE comments_2025 PARTITION OF comments FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		ALTER TABLE comments REPLICA IDENTITY FULL;
		CREATE TABLE events (id bigint PRIMARY KEY, title text);
		CREATE TABLE events_2025 (CHECK (id >= 1000)) INHERITS (events);
		CREATE TABLE notes (id bigint PRIMARY KEY, event_id bigint, body text);
		CREATE TABLE notes_old () INHERITS (notes);
		ALTER TABLE notes REPLICA IDENTITY FULL;`)
	comments := `  - name: posts
    table: posts
    relations:
      - {name: comments, table: comments, kind: has_many, join: {id: post_id}}
`
	// With the key map (the default), DEFAULT leaves send the partitioned
	// table's key: the map resolves its deletes and moves.
	problems, p := problemsOf(t, db, comments)
	if p == nil || len(problems) != 1 || problems[0].Code != "key_map" || problems[0].Severity != SeverityInfo {
		t.Fatalf("DEFAULT leaves of a partitioned child with the key map: want one key_map info line, got %v", problems)
	}
	if text := problemText(problems); !strings.Contains(text, "public.comments") || !strings.Contains(text, "key id, created") {
		t.Errorf("the key_map line does not name the table and its key:\n%s", text)
	}
	if tables, err := p.KeyMapTables(); err != nil || len(tables) != 1 || strings.Join(tables[0].Key, ",") != "id,created" {
		t.Fatalf("KeyMapTables() = %v, %v; want public.comments keyed by id, created", tables, err)
	}
	// Without it, each leaf is refused with its fix.
	p, problems, err := Compile(ctxT(t), db.Pool, parseConfig(t, "capture:\n  key_map: \"off\"\nindexes:\n"+comments))
	if err != nil {
		t.Fatal(err)
	}
	if p != nil {
		t.Fatalf("compiled with DEFAULT leaves under a FULL partitioned child and capture.key_map: off")
	}
	text := problemText(problems)
	for _, want := range []string{"partition public.comments_2024 of public.comments", "partition public.comments_2025",
		"ALTER TABLE public.comments_2024 REPLICA IDENTITY FULL;", "ALTER TABLE public.comments_2025 REPLICA IDENTITY FULL;", "does not reach"} {
		if !strings.Contains(text, want) {
			t.Errorf("problems do not say %q:\n%s", want, text)
		}
	}
	db.Exec(t, "ALTER TABLE comments_2024 REPLICA IDENTITY FULL; ALTER TABLE comments_2025 REPLICA IDENTITY FULL")
	if problems, p := problemsOf(t, db, comments); p == nil || len(problems) > 0 {
		t.Fatalf("leaves set FULL: %v", problems)
	}

	problems, p = problemsOf(t, db, `  - name: events
    table: events
    relations:
      - {name: notes, table: notes, kind: has_many, join: {id: event_id}}
`)
	if p != nil {
		t.Fatal("compiled with inheritance children")
	}
	text = problemText(problems)
	for _, want := range []string{"public.events_2025", "public.notes_old", "inheritance children", "under their own names",
		"ALTER TABLE public.events_2025 NO INHERIT public.events;", "ALTER TABLE public.notes_old NO INHERIT public.notes;"} {
		if !strings.Contains(text, want) {
			t.Errorf("problems do not say %q:\n%s", want, text)
		}
	}
}

func problemText(ps []Problem) string {
	var b strings.Builder
	WriteProblems(&b, ps)
	return b.String()
}
