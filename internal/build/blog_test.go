package build

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// loadBlog loads the blog workload with the given sizes and compiles its config.
func loadBlog(t testing.TB, authors, posts, comments string) (*pgtest.DB, *Plan) {
	t.Helper()
	db := pgtest.NewDB(t)
	db.LoadFile(t, workload(t, "schema.sql"), map[string]string{"authors": authors, "posts": posts, "comments": comments})
	cfg, err := config.Parse([]byte(readFile(t, workload(t, "flusso.yaml"))))
	if err != nil {
		t.Fatal(err)
	}
	return db, mustCompile(t, db, cfg)
}

// reference runs the blog reference query: key text -> document text.
func reference(t testing.TB, db *pgtest.DB) map[string]string {
	t.Helper()
	rows, err := db.Pool.Query(ctxT(t), "SELECT key::text, doc::text FROM ("+readFile(t, workload(t, "reference.sql"))+") AS r")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var k, d string
		if err := rows.Scan(&k, &d); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, []byte(k)); err != nil {
			t.Fatal(err)
		}
		out[b.String()] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBlogMatchesReference builds every blog document by Scan and by Build
// and compares each with workloads/blog/reference.sql.
func TestBlogMatchesReference(t *testing.T) {
	db, p := loadBlog(t, "20", "300", "1500")
	// Some edge cases: a post without author, comments or tags.
	db.Exec(t, `INSERT INTO posts VALUES (100000, NULL, 'lonely', NULL, NULL, 0)`)
	want := reference(t, db)
	ix := p.Indexes[0]

	got := map[string]string{}
	var keys []Key
	var after Key
	for {
		last, n, err := ix.Scan(ctxT(t), db.Pool, after, nil, 97, func(d Doc) error {
			got[string(d.Key)] = string(d.Doc)
			keys = append(keys, append(Key(nil), d.Values...))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		after = last
	}
	if len(got) != len(want) {
		t.Fatalf("scan gave %d documents, reference %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Fatalf("scan: no document for key %s", k)
		}
		assertJSON(t, g, w)
	}

	built := 0
	keys = append(keys, Key{"424242"})
	err := ix.Build(ctxT(t), db.Pool, keys, func(d Doc) error {
		built++
		if string(d.Key) == `{"id":424242}` {
			if d.Doc != nil {
				t.Errorf("missing key 424242: got a document %s", d.Doc)
			}
			return nil
		}
		w, ok := want[string(d.Key)]
		if !ok {
			t.Fatalf("build: unexpected key %s", d.Key)
		}
		assertJSON(t, string(d.Doc), w)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if built != len(want)+1 {
		t.Fatalf("build called back %d times, want %d", built, len(want)+1)
	}
}
