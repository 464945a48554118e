package config

import (
	"strings"
	"testing"
)

// an index that is valid on its own; cases add to it or replace it.
const validIndex = `
indexes:
  - name: posts
    table: public.posts
    columns: [id, title, author_id]
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {author_id: id}
`

// TestParseErrors checks that each static mistake is refused with one line
// that names the index and the path of the bad key.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the one line that reports the problem
	}{
		{
			name: "unknown key in an index (typo)",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relatons: []
`,
			want: []string{`line 5: index "posts".relatons: unknown key "relatons"`, `did you mean "relations"?`},
		},
		{
			name: "unknown key in a relation",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {author_id: id}
        colums: [id]
`,
			want: []string{`index "posts".relations[author].colums: unknown key "colums"`, `did you mean "columns"?`},
		},
		{
			name: "unknown key in through",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: many_to_many
        through: {table: public.post_tags, join: {id: post_id}, target: {tag_id: id}}
`,
			want: []string{`index "posts".relations[tags].through.target: unknown key "target"`},
		},
		{
			name: "unknown key in an aggregate",
			yaml: validIndex + `
    aggregates:
      - name: n
        table: public.comments
        join: {id: post_id}
        function: count
`,
			want: []string{`index "posts".aggregates[n].function: unknown key "function"`},
		},
		{
			name: "unknown top-level key",
			yaml: "sourse:\n  dsn: x\n" + validIndex,
			want: []string{`line 1: sourse: unknown key "sourse"`, `did you mean "source"?`},
		},
		{
			name: "unknown key in a section",
			yaml: "source:\n  slott: x\n" + validIndex,
			want: []string{`line 2: source.slott: unknown key "slott"`, `did you mean "slot"?`},
		},
		{
			name: "key given twice",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    table: public.posts2
`,
			want: []string{`line 5: index "posts".table: key given twice`},
		},
		{
			name: "duplicate index name",
			yaml: validIndex + `
  - name: posts
    table: public.other
`,
			want: []string{`index "posts".name: index name "posts" is used twice`},
		},
		{
			name: "duplicate relation name",
			yaml: validIndex + `
      - name: author
        table: public.users
        kind: belongs_to
        join: {author_id: id}
`,
			want: []string{`index "posts".relations[author].name: field "author" is defined twice in index "posts": by relation "author" and by relation "author"`},
		},
		{
			name: "duplicate column",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    columns: [id, title, id]
`,
			want: []string{`index "posts".columns: column "id" is listed twice`},
		},
		{
			name: "duplicate join column",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {author_id: id, author_id: id2}
`,
			want: []string{`index "posts".relations[author].join.author_id: key given twice`},
		},
		{
			name: "kind that does not exist",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: comments
        table: public.comments
        kind: has_manny
        join: {id: post_id}
`,
			want: []string{`index "posts".relations[comments].kind: "has_manny" is not a relation kind`, `did you mean "has_many"?`, "belongs_to, has_one, has_many, many_to_many"},
		},
		{
			name: "missing kind",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: comments
        table: public.comments
        join: {id: post_id}
`,
			want: []string{`index "posts".relations[comments].kind: missing: one of belongs_to, has_one, has_many, many_to_many`},
		},
		{
			name: "many_to_many without through",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: many_to_many
        join: {id: post_id}
`,
			want: []string{`index "posts".relations[tags].through: missing: many_to_many needs through`},
		},
		{
			name: "many_to_many with an empty target_join",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: many_to_many
        through: {table: public.post_tags, join: {id: post_id}, target_join: {}}
`,
			want: []string{`index "posts".relations[tags].through.target_join: missing or empty`},
		},
		{
			name: "through on a has_many",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: has_many
        join: {id: post_id}
        through: {table: public.post_tags, join: {id: post_id}, target_join: {tag_id: id}}
`,
			want: []string{`index "posts".relations[tags].through: only many_to_many relations go through a join table`},
		},
		{
			name: "empty join",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {}
`,
			want: []string{`index "posts".relations[author].join: missing or empty`},
		},
		{
			name: "missing join",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
`,
			want: []string{`index "posts".relations[author].join: missing or empty`},
		},
		{
			name: "join that is not a mapping",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: [author_id, id]
`,
			want: []string{`line 9: index "posts".relations[author].join: must be a mapping such as {author_id: id}`},
		},
		{
			name: "aggregate with an empty join",
			yaml: validIndex + `
    aggregates:
      - name: n
        table: public.comments
        join: {}
        fn: count
`,
			want: []string{`index "posts".aggregates[n].join: missing or empty`},
		},
		{
			name: "sum without column",
			yaml: validIndex + `
    aggregates:
      - name: total
        table: public.comments
        join: {id: post_id}
        fn: sum
`,
			want: []string{`index "posts".aggregates[total].column: missing: sum needs the column to aggregate`},
		},
		{
			name: "count with a column",
			yaml: validIndex + `
    aggregates:
      - name: n
        table: public.comments
        join: {id: post_id}
        fn: count
        column: score
`,
			want: []string{`index "posts".aggregates[n].column: count takes no column`},
		},
		{
			name: "aggregate function that does not exist",
			yaml: validIndex + `
    aggregates:
      - name: n
        table: public.comments
        join: {id: post_id}
        fn: cuont
`,
			want: []string{`index "posts".aggregates[n].fn: "cuont" is not an aggregate function`, `did you mean "count"?`},
		},
		{
			name: "column and relation with the same name",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    columns: [id, author]
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {author_id: id}
`,
			want: []string{`index "posts".relations[author].name: field "author" is defined twice in index "posts": by column "author" and by relation "author"`},
		},
		{
			name: "relation and aggregate with the same name",
			yaml: validIndex + `
    aggregates:
      - name: author
        table: public.comments
        join: {id: post_id}
        fn: count
`,
			want: []string{`index "posts".aggregates[author].name: field "author" is defined twice in index "posts": by relation "author" and by aggregate "author"`},
		},
		{
			name: "renamed column and aggregate with the same name",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    columns: [id, votes]
    rename: {votes: score}
    aggregates:
      - name: score
        table: public.comments
        join: {id: post_id}
        fn: count
`,
			want: []string{`index "posts".aggregates[score].name: field "score" is defined twice in index "posts": by column "votes" and by aggregate "score"`},
		},
		{
			name: "field and column with the same name",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    columns: [id, title]
    fields:
      - {name: title, expr: "upper(title)"}
`,
			want: []string{`index "posts".fields[title].name: field "title" is defined twice in index "posts": by column "title" and by field "title"`},
		},
		{
			name: "field and relation with the same name",
			yaml: validIndex + `    fields:
      - {name: author, expr: "author_id::text"}
`,
			want: []string{`index "posts".relations[author].name: field "author" is defined twice in index "posts": by field "author" and by relation "author"`},
		},
		{
			name: "field without expr or name",
			yaml: validIndex + `    fields:
      - {name: loud}
`,
			want: []string{`index "posts".fields[loud].expr: missing: a SQL expression`},
		},
		{
			name: "field without a name",
			yaml: validIndex + `    fields:
      - {expr: "upper(title)"}
`,
			want: []string{`index "posts".fields[0].name: missing: every field needs a name`},
		},
		{
			name: "field with a misspelt key",
			yaml: validIndex + `    fields:
      - {name: x, exp: "1"}
`,
			want: []string{`index "posts".fields[x].exp: unknown key "exp" (did you mean "expr"?)`},
		},
		{
			name: "fields on a scalar relation",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: has_many
        join: {id: post_id}
        columns: [name]
        scalar: true
        fields:
          - {name: loud, expr: "upper(name)"}
`,
			want: []string{`index "posts".relations[tags].fields: scalar: true writes one column's value, not an object`},
		},
		{
			name: "clash inside a nested relation",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: comments
        table: public.comments
        kind: has_many
        join: {id: post_id}
        columns: [id, user]
        relations:
          - name: user
            table: public.users
            kind: belongs_to
            join: {user_id: id}
`,
			want: []string{`index "posts".relations[comments].relations[user].name: field "user" is defined twice in index "posts".relations[comments]`},
		},
		{
			name: "rename of a column not in columns",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    columns: [id]
    rename: {title: headline}
`,
			want: []string{`index "posts".rename.title: column "title" is not in columns [id]`},
		},
		{
			name: "scalar with two columns",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: has_many
        join: {id: post_id}
        columns: [id, name]
        scalar: true
`,
			want: []string{`index "posts".relations[tags].scalar: scalar: true needs exactly one column in columns, have 2`},
		},
		{
			name: "scalar that is not a boolean",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: has_many
        join: {id: post_id}
        columns: [name]
        scalar: yes please
`,
			want: []string{`index "posts".relations[tags].scalar: must be true or false`},
		},
		{
			name: "limit without order_by",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: comments
        table: public.comments
        kind: has_many
        join: {id: post_id}
        limit: 5
`,
			want: []string{`index "posts".relations[comments].limit: limit needs order_by`},
		},
		{
			name: "limit on an object",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {author_id: id}
        order_by: [id]
        limit: 1
`,
			want: []string{`index "posts".relations[author].limit: limit applies to arrays only`},
		},
		{
			name: "negative limit",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: comments
        table: public.comments
        kind: has_many
        join: {id: post_id}
        order_by: [id]
        limit: -1
`,
			want: []string{`index "posts".relations[comments].limit: must be a non-negative whole number`},
		},
		{
			name: "bad order_by",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: comments
        table: public.comments
        kind: has_many
        join: {id: post_id}
        order_by: [id, score sideways]
`,
			want: []string{`line 10: index "posts".relations[comments].order_by[1]: "score sideways" must be a column optionally followed by asc or desc`},
		},
		{
			name: "relations that are not a list",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      author: {table: public.authors}
`,
			want: []string{`index "posts".relations: must be a list of relations`},
		},
		{
			name: "index without a name",
			yaml: `
indexes:
  - table: public.posts
`,
			want: []string{`indexes[0].name: missing: every index needs a name`},
		},
		{
			name: "relation without a name",
			yaml: `
indexes:
  - name: posts
    table: public.posts
    relations:
      - table: public.authors
        kind: belongs_to
        join: {author_id: id}
`,
			want: []string{`index "posts".relations[0].name: missing: every relation needs a name`},
		},
		{
			name: "index without a table",
			yaml: `
indexes:
  - name: posts
`,
			want: []string{`index "posts".table: missing: name the table as schema.table`},
		},
		{
			name: "table with too many dots",
			yaml: `
indexes:
  - name: posts
    table: a.b.c
`,
			want: []string{`index "posts".table: table name "a.b.c": write it as schema.table`},
		},
		{
			name: "no index",
			yaml: "source:\n  slot: s\n",
			want: []string{`indexes: no index is configured`},
		},
		{
			name: "bad provision",
			yaml: "source:\n  provision: sometimes\n" + validIndex,
			want: []string{`source.provision: "sometimes" is not one of auto, check, off`},
		},
		{
			name: "bad key map",
			yaml: "capture:\n  key_map: on\n" + validIndex,
			want: []string{`capture.key_map: "on" is not one of auto, off`},
		},
		{
			name: "bad slot name",
			yaml: "source:\n  slot: Flusso-App\n" + validIndex,
			want: []string{`source.slot: "Flusso-App" is not a valid slot name`},
		},
		{
			name: "bad log level",
			yaml: "log:\n  level: loud\n" + validIndex,
			want: []string{`log.level: "loud" is not one of debug, info, warn, error`},
		},
		{
			name: "bad memory budget",
			yaml: "capture:\n  memory_budget: lots\n" + validIndex,
			want: []string{`capture.memory_budget: "lots" is not a size such as 64MiB`},
		},
		{
			name: "bad status interval",
			yaml: "capture:\n  status_interval: 10\n" + validIndex,
			want: []string{`capture.status_interval: "10" is not a duration from 100ms to 10m0s, such as 10s`},
		},
		{
			name: "bad coalesce",
			yaml: "capture:\n  coalesce: 5s\n" + validIndex,
			want: []string{`capture.coalesce: "5s" is not a duration from 0 (off) to 1s, such as 1ms`},
		},
		{
			name: "bad worker count",
			yaml: "backfill:\n  workers: many\n" + validIndex,
			want: []string{`backfill.workers: "many" is not a non-negative whole number`},
		},
		{
			name: "section value that is a list",
			yaml: "source:\n  dsn: [a, b]\n" + validIndex,
			want: []string{`line 2: source.dsn: must be a single value`},
		},
		{
			name: "config that is not a mapping",
			yaml: "- a\n- b\n",
			want: []string{`line 1: config: must be a mapping with keys source, output, state, log, backfill, capture, indexes`},
		},
		{
			name: "invalid YAML",
			yaml: "indexes:\n  - name: posts\n    table: [\n",
			want: []string{`invalid YAML: line `},
		},
		{
			name: "tab indentation",
			yaml: "source:\n\tdsn: x\n",
			want: []string{`invalid YAML: line 2: found character that cannot start any token`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want an error containing %q", cfg, tt.want)
			}
			line := lineWith(err.Error(), tt.want[0])
			if line == "" {
				t.Fatalf("error does not report %q:\n%s", tt.want[0], err)
			}
			for _, w := range tt.want[1:] {
				if !strings.Contains(line, w) {
					t.Errorf("the line %q does not contain %q", line, w)
				}
			}
		})
	}
}

// lineWith returns the line of msg that contains want, or "".
func lineWith(msg, want string) string {
	for _, l := range strings.Split(msg, "\n") {
		if strings.Contains(l, want) {
			return l
		}
	}
	return ""
}

// TestParseReportsEveryProblemOnItsOwnLine checks that Validate reports all
// problems at once, one per line, in the order they were written.
func TestParseReportsEveryProblemOnItsOwnLine(t *testing.T) {
	_, err := Parse([]byte(`
source:
  provision: sometimes
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: tags
        table: public.tags
        kind: many_to_many
      - name: author
        table: public.authors
        kind: belongs_to
        join: {}
    aggregates:
      - name: total
        table: public.comments
        join: {id: post_id}
        fn: sum
`))
	if err == nil {
		t.Fatal("Parse succeeded, want three problems")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`line 3: source.provision: `,
		`line 8: index "posts".relations[tags].through: `,
		`line 14: index "posts".relations[author].join: `,
		`line 16: index "posts".aggregates[total].column: `,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], w)
		}
	}
}

// TestParseErrorsAreStable checks that the same bad config gives the same
// message every time (no map iteration order in it).
func TestParseErrorsAreStable(t *testing.T) {
	yaml := "source:\n  slott: a\n  publicaton: b\n  provison: c\noutput:\n  pth: x\nlog:\n  lvl: y\n" + validIndex
	_, first := Parse([]byte(yaml))
	if first == nil {
		t.Fatal("Parse succeeded, want errors")
	}
	for range 20 {
		if _, err := Parse([]byte(yaml)); err == nil || err.Error() != first.Error() {
			t.Fatalf("messages differ between runs:\n%v\n---\n%v", first, err)
		}
	}
	if n := strings.Count(first.Error(), "\n") + 1; n != 5 {
		t.Errorf("got %d lines, want 5:\n%s", n, first)
	}
}

// TestPasswordNeverInErrors checks that a config with a password in its DSN
// and other problems never repeats the password.
func TestPasswordNeverInErrors(t *testing.T) {
	const secret = "s3cr3t-pa55"
	cases := map[string]string{
		"url dsn":             "source:\n  dsn: postgres://flusso:" + secret + "@db/app\n  provision: maybe\n",
		"key=value dsn":       "source:\n  dsn: host=db password=" + secret + "\n  slot: BAD\n",
		"dsn with a bad key":  "source:\n  dsn: postgres://flusso:" + secret + "@db/app\n  dns: x\n",
		"dsn that is a list":  "source:\n  dsn: [postgres://flusso:" + secret + "@db/app]\n",
		"dsn with bad yaml":   "source:\n  dsn: postgres://flusso:" + secret + "@db/app\n  slot: [\n",
		"dsn and a bad index": "source:\n  dsn: postgres://flusso:" + secret + "@db/app\nindexes:\n  - name: x\n",
	}
	for name, yaml := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(yaml))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error shows the password:\n%s", err)
			}
		})
	}
}
