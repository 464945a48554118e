package build

import (
	"sort"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

var missing = change.Value{Missing: true}

// vals makes values: a string is a value, nil is NULL, a change.Value is itself.
func vals(in ...any) []change.Value {
	out := make([]change.Value, len(in))
	for i, v := range in {
		switch v := v.(type) {
		case nil:
			out[i] = change.Value{Null: true}
		case string:
			out[i] = change.Value{Text: v}
		case change.Value:
			out[i] = v
		}
	}
	return out
}

func tbl(s string) change.Table {
	t, err := change.ParseTable(s)
	if err != nil {
		panic(err)
	}
	return t
}

// resolved runs Resolve and gives, per index name, the sorted key ids.
func resolved(t *testing.T, db *pgtest.DB, p *Plan, rows ...change.Row) (map[string]string, *Affected) {
	t.Helper()
	aff, err := p.Resolve(ctxT(t), db.Pool, rows)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	out := map[string]string{}
	for ix, keys := range aff.Keys {
		var ids []string
		for _, k := range keys {
			ids = append(ids, k.String())
		}
		sort.Strings(ids)
		out[ix.Name()] = strings.Join(ids, ",")
	}
	return out, aff
}

// queryIDs runs SQL returning one text column, sorted and joined with ",".
func queryIDs(t *testing.T, db *pgtest.DB, sql string) string {
	t.Helper()
	rows, err := db.Pool.Query(ctxT(t), sql)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

func TestResolveBlog(t *testing.T) {
	db, p := loadBlog(t, "3", "12", "40")
	posts, comments, tags, postTags, authors, users := tbl("public.posts"), tbl("public.comments"), tbl("public.tags"), tbl("public.post_tags"), tbl("public.authors"), tbl("public.users")
	ccols := []string{"id", "post_id", "user_id"}
	cases := []struct {
		name string
		rows []change.Row
		want string
	}{
		{"root update", []change.Row{{Table: posts, Op: change.Update, Cols: []string{"id", "author_id"}, New: vals("2", "1")}}, "2"},
		{"root insert with a null foreign key", []change.Row{{Table: posts, Op: change.Insert, Cols: []string{"id", "author_id"}, New: vals("99", nil)}}, "99"},
		{"root key change", []change.Row{{Table: posts, Op: change.Update, Cols: []string{"id", "author_id"}, Old: vals("2", "1"), New: vals("20", "1")}}, "2,20"},
		{"root delete", []change.Row{{Table: posts, Op: change.Delete, Cols: []string{"id", "author_id"}, Old: vals("3", missing)}}, "3"},
		{"child insert", []change.Row{{Table: comments, Op: change.Insert, Cols: ccols, New: vals("1000", "3", "1")}}, "3"},
		{"child update", []change.Row{{Table: comments, Op: change.Update, Cols: ccols, Old: vals("5", "6", "3"), New: vals("5", "6", "2")}}, "6"},
		{"child delete", []change.Row{{Table: comments, Op: change.Delete, Cols: ccols, Old: vals("5", "6", "3")}}, "6"},
		{"child moved to another parent", []change.Row{{Table: comments, Op: change.Update, Cols: ccols, Old: vals("5", "6", "3"), New: vals("5", "8", "3")}}, "6,8"},
		{"m2m through insert", []change.Row{{Table: postTags, Op: change.Insert, Cols: []string{"post_id", "tag_id"}, New: vals("4", "150")}}, "4"},
		{"m2m through delete", []change.Row{{Table: postTags, Op: change.Delete, Cols: []string{"post_id", "tag_id"}, Old: vals("5", "36")}}, "5"},
		{"m2m target update", []change.Row{{Table: tags, Op: change.Update, Cols: []string{"id"}, New: vals("8")}},
			queryIDs(t, db, "SELECT post_id::text FROM post_tags WHERE tag_id = 8")},
		{"belongs_to target update", []change.Row{{Table: authors, Op: change.Update, Cols: []string{"id"}, New: vals("2")}},
			queryIDs(t, db, "SELECT id::text FROM posts WHERE author_id = 2")},
		{"three levels: a comment's user", []change.Row{{Table: users, Op: change.Update, Cols: []string{"id"}, New: vals("2")}},
			queryIDs(t, db, "SELECT DISTINCT post_id::text FROM comments WHERE user_id = 2")},
		{"columns in another order, and extra", []change.Row{{Table: comments, Op: change.Insert, Cols: []string{"body", "user_id", "post_id", "id"}, New: vals("x", "1", "7", "1001")}}, "7"},
		{"unsent TOAST value is looked up by key, not taken as NULL", []change.Row{{Table: comments, Op: change.Update, Cols: ccols, New: vals("10", missing, "1")}},
			queryIDs(t, db, "SELECT post_id::text FROM comments WHERE id = 10")},
		{"a batch of several tables", []change.Row{
			{Table: posts, Op: change.Update, Cols: []string{"id", "author_id"}, New: vals("1", "1")},
			{Table: comments, Op: change.Delete, Cols: ccols, Old: vals("7", "1", "2")},
			{Table: comments, Op: change.Insert, Cols: ccols, New: vals("1002", "2", "2")},
		}, "1,2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, aff := resolved(t, db, p, c.rows...)
			if got["posts"] != c.want {
				t.Errorf("keys %q, want %q", got["posts"], c.want)
			}
			if len(aff.Truncated)+len(aff.Rebuild) != 0 {
				t.Errorf("unexpected truncate/rebuild: %v %v", aff.Truncated, aff.Rebuild)
			}
		})
	}
	if c := queryIDs(t, db, "SELECT count(*)::text FROM post_tags WHERE tag_id = 8"); c == "0" {
		t.Fatal("test data: tag 8 has no posts, the m2m case proves nothing")
	}

	t.Run("truncate", func(t *testing.T) {
		_, aff := resolved(t, db, p, change.Row{Table: posts, Op: change.Truncate}, change.Row{Table: comments, Op: change.Truncate})
		if len(aff.Truncated) != 1 || aff.Truncated[0].Name() != "posts" || len(aff.Rebuild) != 0 {
			t.Errorf("root truncate: truncated %v rebuild %v", aff.Truncated, aff.Rebuild)
		}
		_, aff = resolved(t, db, p, change.Row{Table: tags, Op: change.Truncate})
		if len(aff.Rebuild) != 1 || len(aff.Truncated) != 0 {
			t.Errorf("other table truncate: truncated %v rebuild %v", aff.Truncated, aff.Rebuild)
		}
	})
	t.Run("unrelated table", func(t *testing.T) {
		got, _ := resolved(t, db, p, change.Row{Table: tbl("public.other"), Op: change.Insert, Cols: []string{"id"}, New: vals("1")})
		if len(got) != 0 {
			t.Errorf("got %v", got)
		}
	})
}

func TestResolveNested(t *testing.T) {
	db, p := loadShop(t)
	order := tbl(`"My Schema"."Order"`)
	cols := p.CaptureColumns()[order]
	if cols[0] != "ArtistId" {
		t.Fatalf("capture columns of Order: %v, want the key first", cols)
	}
	row := func(op change.Op, old, new map[string]any) change.Row {
		r := change.Row{Table: order, Op: op, Cols: cols}
		mk := func(m map[string]any) []change.Value {
			if m == nil {
				return nil
			}
			var in []any
			for _, c := range cols {
				in = append(in, m[c])
			}
			return vals(in...)
		}
		r.Old, r.New = mk(old), mk(new)
		return r
	}
	ann, bob := "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
	// An order moves from Ann (region it) to Bob (no region): the regions
	// index, three levels up, rebuilds it; the customers index both.
	got, _ := resolved(t, db, p, row(change.Update, map[string]any{"ArtistId": "1", "customer_id": ann}, map[string]any{"ArtistId": "1", "customer_id": bob}))
	if got["regions"] != "it" || got["customers"] != ann+","+bob || got["orders"] != "1" || got["lines"] != "1:1,1:2,1:3,1:4" {
		t.Errorf("order moved: %v", got)
	}
	// A note two levels below the orders root.
	notes := tbl("public.line_notes")
	got, _ = resolved(t, db, p, change.Row{Table: notes, Op: change.Delete, Cols: p.CaptureColumns()[notes], Old: vals("2", "1", "1")})
	if got["orders"] != "1" {
		t.Errorf("note deleted: %v (capture %v)", got, p.CaptureColumns()[notes])
	}
	// A region's label: customers and regions.
	got, _ = resolved(t, db, p, change.Row{Table: tbl("public.regions"), Op: change.Update, Cols: []string{"code"}, New: vals("it")})
	if got["regions"] != "it" || got["customers"] != ann || got["orders"] != "1" {
		t.Errorf("region updated: %v", got)
	}
}

func TestResolveSelfReference(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE categories (id int PRIMARY KEY, parent_id int REFERENCES categories, name text);
		ALTER TABLE categories REPLICA IDENTITY FULL;
		INSERT INTO categories VALUES (1, NULL, 'root'), (2, 1, 'child'), (3, 2, 'grandchild')`)
	p := mustCompile(t, db, parseConfig(t, `
indexes:
  - name: categories
    table: categories
    relations:
      - {name: parent, table: categories, kind: belongs_to, join: {parent_id: id}, columns: [name]}
      - {name: children, table: categories, kind: has_many, join: {id: parent_id}, columns: [name]}
`))
	cat := tbl("public.categories")
	cols := p.CaptureColumns()[cat]
	got, _ := resolved(t, db, p, change.Row{Table: cat, Op: change.Update, Cols: cols, Old: vals("2", "1", "child"), New: vals("2", "1", "renamed")})
	// Itself, its parent (children list) and its children (parent object).
	if got["categories"] != "1,2,3" {
		t.Errorf("self reference: %v (capture %v)", got, cols)
	}
	assertJSON(t, one(t, db, p.Indexes[0], "2"), `{"id": 2, "parent_id": 1, "name": "child", "parent": {"name": "root"}, "children": [{"name": "grandchild"}]}`)
}

// TestResolveRootWhere: a change below a root row outside the root's where
// rebuilds nothing.
func TestResolveRootWhere(t *testing.T) {
	db, _ := loadBlog(t, "3", "12", "40")
	p := mustCompile(t, db, parseConfig(t, `
indexes:
  - name: popular
    table: public.posts
    where: votes > 5
    columns: [id]
    relations:
      - {name: author, table: public.authors, kind: belongs_to, join: {author_id: id}, columns: [name]}
`))
	got, _ := resolved(t, db, p, change.Row{Table: tbl("public.authors"), Op: change.Update, Cols: []string{"id"}, New: vals("2")})
	want := queryIDs(t, db, "SELECT id::text FROM posts WHERE author_id = 2 AND votes > 5")
	if got["popular"] != want || want == "" || want == queryIDs(t, db, "SELECT id::text FROM posts WHERE author_id = 2") {
		t.Errorf("got %q, want %q (and the where must leave some out)", got["popular"], want)
	}
}
