package build

import (
	"strings"
	"testing"
)

// TestValidateMessages checks each catalog verdict: its code, severity,
// where it points, and that the message and fix say what to do.
func TestValidateMessages(t *testing.T) {
	db, _ := loadBlog(t, "1", "1", "1")
	db.Exec(t, `CREATE TABLE nokey (id int, title text);
		CREATE TABLE notes (id int PRIMARY KEY, post_id bigint, body text);
		CREATE TABLE nothing (id int PRIMARY KEY); ALTER TABLE nothing REPLICA IDENTITY NOTHING;`)
	cases := []struct {
		name, config, code, severity string
		contains                     []string
	}{
		{"missing schema", `
  - name: x
    table: publc.posts`, "missing_schema", "error", []string{"publc", "did you mean public"}},
		{"missing table", `
  - name: x
    table: public.post`, "missing_table", "error", []string{"public.post", "did you mean public.posts"}},
		{"missing column", `
  - name: x
    table: public.posts
    columns: [id, titel]`, "missing_column", "error", []string{"titel", "public.posts", "did you mean title"}},
		{"no key", `
  - name: x
    table: public.nokey`, "no_key", "error", []string{"public.nokey", "no primary key", "ADD PRIMARY KEY"}},
		{"join types", `
  - name: x
    table: public.posts
    relations:
      - {name: a, table: public.authors, kind: belongs_to, join: {title: id}}`, "join_types", "error", []string{"public.posts.title (text)", "public.authors.id (bigint)"}},
		{"sum of text", `
  - name: x
    table: public.posts
    aggregates:
      - {name: s, table: public.comments, join: {id: post_id}, fn: sum, column: body}`, "aggregate_type", "error", []string{"sum(body)", "numeric", "text"}},
		{"order_by column", `
  - name: x
    table: public.posts
    relations:
      - {name: c, table: public.comments, kind: has_many, join: {id: post_id}, order_by: [scor]}`, "order_by_column", "error", []string{"scor", "public.comments", "did you mean score"}},
		{"replica identity of a child", `
  - name: x
    table: public.posts
    relations:
      - {name: n, table: public.notes, kind: has_many, join: {id: post_id}}`, "replica_identity", "error", []string{"public.notes", "DEFAULT", "post_id", "stale", "ALTER TABLE public.notes REPLICA IDENTITY FULL;"}},
		{"key map covers a child", `
  - name: x
    table: public.posts
    relations:
      - {name: n, table: public.notes, kind: has_many, join: {id: post_id}}`, "key_map", "info", []string{"public.notes", "DEFAULT", "sends only id", "post_id", "key map"}},
		{"replica identity nothing", `
  - name: x
    table: public.nothing`, "replica_identity", "error", []string{"public.nothing", "NOTHING", "ALTER TABLE public.nothing REPLICA IDENTITY FULL;"}},
		{"nullable belongs_to", `
  - name: x
    table: public.posts
    relations:
      - {name: a, table: public.authors, kind: belongs_to, join: {author_id: id}}`, "nullable_join", "info", []string{"public.posts.author_id", "null"}},
		{"bad where", `
  - name: x
    table: public.posts
    relations:
      - {name: c, table: public.comments, kind: has_many, join: {id: post_id}, where: "delted_at IS NULL"}`, "invalid_sql", "error", []string{"delted_at", "public.comments"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pre := "" // capture.key_map: auto, the default
			if c.code == "replica_identity" {
				pre = "capture:\n  key_map: off\n"
			}
			p, problems, err := Compile(ctxT(t), db.Pool, parseConfig(t, pre+"indexes:"+c.config+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			var found *Problem
			for i := range problems {
				if problems[i].Code == c.code {
					found = &problems[i]
				}
			}
			if found == nil {
				t.Fatalf("no %s problem; got %v", c.code, problems)
			}
			if found.Severity != c.severity || found.Index != "x" || found.Path == "" {
				t.Errorf("problem %+v: want severity %s, index x, a path", *found, c.severity)
			}
			text := found.String()
			for _, s := range c.contains {
				if !strings.Contains(text, s) {
					t.Errorf("problem does not say %q:\n%s", s, text)
				}
			}
			if (p == nil) != (c.severity == "error") {
				t.Errorf("plan returned %v with a %s problem", p != nil, c.severity)
			}
		})
	}
}

// TestValidateAllAtOnce: every problem of every index is reported together.
func TestValidateAllAtOnce(t *testing.T) {
	db, _ := loadBlog(t, "1", "1", "1")
	_, problems, err := Compile(ctxT(t), db.Pool, parseConfig(t, `indexes:
  - name: a
    table: public.nope
  - name: b
    table: public.posts
    columns: [nope]
    aggregates:
      - {name: s, table: public.comments, join: {id: post_id}, fn: avg, column: body}
`))
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{}
	for _, p := range problems {
		codes[p.Index+"/"+p.Code] = true
	}
	for _, want := range []string{"a/missing_table", "b/missing_column", "b/aggregate_type"} {
		if !codes[want] {
			t.Errorf("missing %s in %v", want, problems)
		}
	}
}

// TestCatalogRefresh: after the fix is applied, a refreshed catalog passes.
func TestCatalogRefresh(t *testing.T) {
	db, _ := loadBlog(t, "1", "1", "1")
	db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT")
	cfg := parseConfig(t, "capture:\n  key_map: off\n"+readFile(t, workload(t, "flusso.yaml"))[strings.Index(readFile(t, workload(t, "flusso.yaml")), "indexes:"):])
	cat, err := LoadCatalog(ctxT(t), db.Pool, ConfigTables(cfg))
	if err != nil {
		t.Fatal(err)
	}
	info, ok := cat.Table(tbl("public.comments"))
	if !ok || info.ReplicaIdentity != IdentityDefault || strings.Join(info.IdentityColumns, ",") != "id" || strings.Join(info.PrimaryKey, ",") != "id" {
		t.Fatalf("comments: %+v", info)
	}
	p, problems := NewPlan(cat, cfg)
	if p != nil || !HasError(problems) {
		t.Fatalf("DEFAULT identity on comments: want an error, got %v", problems)
	}
	var fix string
	for _, pr := range problems {
		if pr.Code == "replica_identity" {
			fix = pr.Fix
		}
	}
	db.Exec(t, fix)
	if err := cat.Refresh(ctxT(t), db.Pool); err != nil {
		t.Fatal(err)
	}
	if info, _ := cat.Table(tbl("public.comments")); info.ReplicaIdentity != IdentityFull || len(info.IdentityColumns) != 6 {
		t.Fatalf("after %s: %+v", fix, info)
	}
	if p, problems := NewPlan(cat, cfg); p == nil {
		t.Fatalf("after %s: still %v", fix, problems)
	}
	// USING INDEX: the index's columns.
	db.Exec(t, "CREATE UNIQUE INDEX comments_post_id_id ON comments (post_id, id); ALTER TABLE comments REPLICA IDENTITY USING INDEX comments_post_id_id")
	if err := cat.Refresh(ctxT(t), db.Pool); err != nil {
		t.Fatal(err)
	}
	if info, _ := cat.Table(tbl("public.comments")); info.ReplicaIdentity != IdentityIndex || strings.Join(info.IdentityColumns, ",") != "post_id,id" {
		t.Fatalf("using index: %+v", info)
	}
	if p, problems := NewPlan(cat, cfg); p == nil {
		t.Fatalf("identity (post_id, id) holds the join column: %v", problems)
	}
}
