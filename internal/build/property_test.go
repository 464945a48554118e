package build

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// TestFoldEqualsReference is the property the stream promises: apply random
// (seeded) changes to the blog, hand Resolve the rows capture would deliver
// (old and new, as the replica identities give them), rebuild the keys it
// returns, fold the documents (nil: delete) — and the fold must equal
// workloads/blog/reference.sql after every round.
func TestFoldEqualsReference(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { foldRounds(t, seed) })
	}
}

func foldRounds(t *testing.T, seed uint64) {
	db, p := loadBlog(t, "10", "60", "300")
	ix := p.Indexes[0]
	// Dangling references are allowed: changes may move a comment to a post
	// that is gone, and the documents must still follow.
	db.Exec(t, "ALTER TABLE comments DROP CONSTRAINT comments_post_id_fkey; ALTER TABLE post_tags DROP CONSTRAINT post_tags_post_id_fkey")
	rnd := rand.New(rand.NewPCG(seed, 42))
	fold := map[string]string{}
	var after Key
	for {
		last, n, err := ix.Scan(ctxT(t), db.Pool, after, nil, 25, func(d Doc) error {
			fold[string(d.Key)] = string(d.Doc)
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
	capture := p.CaptureColumns()
	// values reads a row's capture columns as capture would send them.
	values := func(table, where string) []change.Value {
		t.Helper()
		tb := tbl(table)
		var sel []string
		for _, c := range capture[tb] {
			sel = append(sel, quoteIdent(c)+"::text")
		}
		rows, err := db.Pool.Query(ctxT(t), "SELECT "+strings.Join(sel, ", ")+" FROM "+table+" WHERE "+where)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		if !rows.Next() {
			return nil
		}
		raw := rows.RawValues()
		out := make([]change.Value, len(raw))
		for i, r := range raw {
			if r == nil {
				out[i] = change.Value{Null: true}
			} else {
				out[i] = change.Value{Text: string(r)}
			}
		}
		return out
	}
	// identity keeps what a DEFAULT identity's old row carries: the key.
	identity := func(table string, full []change.Value) []change.Value {
		if full == nil {
			return nil
		}
		out := append([]change.Value(nil), full...)
		if table == "public.comments" || table == "public.posts" {
			return out // REPLICA IDENTITY FULL
		}
		nk := len(p.keys[tbl(table)])
		for i := nk; i < len(out); i++ {
			out[i] = change.Value{Missing: true}
		}
		return out
	}
	var rows []change.Row
	// change runs sql on the rows matching where, recording old and new.
	exec := func(op change.Op, table, where, sql, newWhere string) {
		t.Helper()
		var old, cur []change.Value
		if op != change.Insert {
			old = values(table, where)
			if old == nil {
				return
			}
		}
		db.Exec(t, sql)
		if op != change.Delete {
			cur = values(table, newWhere)
		}
		r := change.Row{Table: tbl(table), Op: op, Cols: capture[tbl(table)], New: cur}
		if op == change.Delete {
			r.Old = identity(table, old)
		} else if op == change.Update {
			r.Old = identity(table, old)
			if table != "public.comments" && table != "public.posts" && old[0] == cur[0] {
				r.Old = nil // DEFAULT: no old row unless the key changed
			}
		}
		rows = append(rows, r)
	}
	nextID := 1_000_000
	for round := 0; round < 6; round++ {
		rows = nil
		for i := 0; i < 12; i++ {
			post := 1 + rnd.IntN(60)
			other := 1 + rnd.IntN(60)
			comment := 1 + rnd.IntN(300)
			switch rnd.IntN(11) {
			case 0:
				w := fmt.Sprintf("id = %d", comment)
				exec(change.Update, "public.comments", w, fmt.Sprintf("UPDATE comments SET post_id = %d WHERE %s", other, w), w)
			case 1:
				w := fmt.Sprintf("id = %d", comment)
				exec(change.Delete, "public.comments", w, "DELETE FROM comments WHERE "+w, "")
			case 2:
				nextID++
				w := fmt.Sprintf("id = %d", nextID)
				exec(change.Insert, "public.comments", "", fmt.Sprintf("INSERT INTO comments VALUES (%d, %d, %d, 'new', %d)", nextID, post, 1+rnd.IntN(10), rnd.IntN(50)), w)
			case 3:
				w := fmt.Sprintf("id = %d", 1+rnd.IntN(10))
				exec(change.Update, "public.authors", w, "UPDATE authors SET name = name || '!' WHERE "+w, w)
			case 4:
				w := fmt.Sprintf("id = %d", 1+rnd.IntN(10))
				exec(change.Update, "public.users", w, "UPDATE users SET handle = handle || '!' WHERE "+w, w)
			case 5:
				w := fmt.Sprintf("post_id = %d AND tag_id IN (SELECT tag_id FROM post_tags WHERE post_id = %d LIMIT 1)", post, post)
				exec(change.Delete, "public.post_tags", w, "DELETE FROM post_tags WHERE "+w, "")
			case 6:
				tag := 1 + rnd.IntN(200)
				w := fmt.Sprintf("post_id = %d AND tag_id = %d", post, tag)
				exec(change.Insert, "public.post_tags", "", fmt.Sprintf("INSERT INTO post_tags VALUES (%d, %d) ON CONFLICT DO NOTHING", post, tag), w)
			case 7:
				w := fmt.Sprintf("id = %d", 1+rnd.IntN(200))
				exec(change.Update, "public.tags", w, "UPDATE tags SET name = name || '!' WHERE "+w, w)
			case 8:
				w := fmt.Sprintf("id = %d", post)
				exec(change.Update, "public.posts", w, "UPDATE posts SET author_id = NULL, votes = votes + 1 WHERE "+w, w)
			case 9:
				// Delete a post with its children, as the cascade would.
				w := fmt.Sprintf("post_id = %d", post)
				for values("public.comments", w) != nil {
					cw := "id = (SELECT min(id) FROM comments WHERE " + w + ")"
					id := values("public.comments", cw)[0].Text
					exec(change.Delete, "public.comments", "id = "+id, "DELETE FROM comments WHERE id = "+id, "")
				}
				for values("public.post_tags", w) != nil {
					tag := values("public.post_tags", w)[1].Text
					tw := w + " AND tag_id = " + tag
					exec(change.Delete, "public.post_tags", tw, "DELETE FROM post_tags WHERE "+tw, "")
				}
				exec(change.Delete, "public.posts", fmt.Sprintf("id = %d", post), fmt.Sprintf("DELETE FROM posts WHERE id = %d", post), "")
			case 10:
				nextID++
				w := fmt.Sprintf("id = %d", nextID)
				exec(change.Insert, "public.posts", "", fmt.Sprintf("INSERT INTO posts VALUES (%d, %d, 'new post', NULL, NULL, 1)", nextID, 1+rnd.IntN(10)), w)
			}
		}
		aff, err := p.Resolve(ctxT(t), db.Pool, rows)
		if err != nil {
			t.Fatal(err)
		}
		err = ix.Build(ctxT(t), db.Pool, aff.Keys[ix], func(d Doc) error {
			if d.Doc == nil {
				delete(fold, string(d.Key))
			} else {
				fold[string(d.Key)] = string(d.Doc)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := reference(t, db)
		if len(fold) != len(want) {
			t.Fatalf("round %d: fold has %d documents, reference %d", round, len(fold), len(want))
		}
		for k, w := range want {
			if !sameJSON(t, fold[k], w) {
				t.Fatalf("round %d: document %s is stale\n fold: %s\n  ref: %s\nrows: %+v", round, k, fold[k], w, rows)
			}
		}
	}
}

// TestFoldExactKeys is the same property over the keys and load patterns
// that used to diverge: citext and numeric root keys reached through
// children that spell them otherwise, composite text keys with ':' and '\'
// in them, and truncate-and-reload transactions larger than a resolve
// batch. Rows go to Resolve in batches of 7, as capture hands them; per
// transaction, truncates and rebuilds come before the documents (as
// follow writes them); the fold, by index and id, must equal a Scan of
// every index after every transaction.
func TestFoldExactKeys(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { foldExact(t, seed) })
	}
}

func foldExact(t *testing.T, seed uint64) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE EXTENSION citext;
		CREATE TABLE users (email citext PRIMARY KEY, name text);
		CREATE TABLE posts (id bigint PRIMARY KEY, author_email citext, title text);
		CREATE TABLE n (id numeric PRIMARY KEY, v text);
		CREATE TABLE nk (id bigint PRIMARY KEY, n_id numeric, v text);
		CREATE TABLE c2 (a text, b text, v text, PRIMARY KEY (a, b));
		CREATE TABLE c2kids (id bigint PRIMARY KEY, a text, b text, body text);
		CREATE TABLE reload (id bigint PRIMARY KEY, v text);
		ALTER TABLE posts REPLICA IDENTITY FULL;
		ALTER TABLE nk REPLICA IDENTITY FULL;
		ALTER TABLE c2kids REPLICA IDENTITY FULL;
		INSERT INTO users VALUES ('Ada@Example.com', 'ada'), ('Bob@Example.com', 'bob');
		INSERT INTO n VALUES (2.0, 'two'), (3.50, 'three');
		INSERT INTO reload SELECT g, 'v' FROM generate_series(1, 30) g;`)
	p := mustCompile(t, db, parseConfig(t, `indexes:
  - name: users
    table: users
    relations:
      - {name: posts, table: posts, kind: has_many, join: {email: author_email}, columns: [id, title]}
  - name: posts
    table: posts
    relations:
      - {name: author, table: users, kind: belongs_to, join: {author_email: email}}
  - name: n
    table: n
    relations:
      - {name: nk, table: nk, kind: has_many, join: {id: n_id}, columns: [id, v]}
  - name: c2
    table: c2
    relations:
      - {name: kids, table: c2kids, kind: has_many, join: {a: a, b: b}, columns: [id, body]}
  - {name: reload, table: reload}
`))
	capture := p.CaptureColumns()
	full := map[string]bool{"posts": true, "nk": true, "c2kids": true}
	scan := func(ix *Index) map[string]string {
		out := map[string]string{}
		if _, _, err := ix.Scan(ctxT(t), db.Pool, nil, nil, 0, func(d Doc) error {
			out[d.ID] = string(d.Doc)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	fold := map[*Index]map[string]string{}
	for _, ix := range p.Indexes {
		fold[ix] = scan(ix)
	}
	values := func(table, where string) [][]change.Value {
		var sel []string
		for _, c := range capture[tbl("public."+table)] {
			sel = append(sel, quoteIdent(c)+"::text")
		}
		rows, err := db.Pool.Query(ctxT(t), "SELECT "+strings.Join(sel, ", ")+" FROM "+table+" WHERE "+where)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out [][]change.Value
		for rows.Next() {
			var vals []change.Value
			for _, r := range rows.RawValues() {
				if r == nil {
					vals = append(vals, change.Value{Null: true})
				} else {
					vals = append(vals, change.Value{Text: string(r)})
				}
			}
			out = append(out, vals)
		}
		return out
	}
	// oldRow is what the replica identity puts in the WAL for the old row.
	oldRow := func(table string, v []change.Value) []change.Value {
		if full[table] {
			return v
		}
		out := append([]change.Value(nil), v...)
		for i := len(p.keys[tbl("public."+table)]); i < len(out); i++ {
			out[i] = change.Value{Missing: true}
		}
		return out
	}
	var txn []change.Row
	// stmt runs sql, recording the rows it changes: matched by where before
	// and newWhere after (by key, for the tables used here).
	stmt := func(op change.Op, table, where, sql, newWhere string) {
		t.Helper()
		tb := tbl("public." + table)
		var before [][]change.Value
		if op == change.Update || op == change.Delete {
			before = values(table, where)
		}
		db.Exec(t, sql)
		switch op {
		case change.Insert:
			for _, v := range values(table, newWhere) {
				txn = append(txn, change.Row{Table: tb, Op: op, Cols: capture[tb], New: v})
			}
		case change.Delete:
			for _, v := range before {
				txn = append(txn, change.Row{Table: tb, Op: op, Cols: capture[tb], Old: oldRow(table, v)})
			}
		case change.Update:
			after := values(table, newWhere)
			for i, v := range before {
				r := change.Row{Table: tb, Op: op, Cols: capture[tb], New: after[i]}
				if full[table] {
					r.Old = v
				}
				txn = append(txn, r)
			}
		case change.Truncate:
			txn = append(txn, change.Row{Table: tb, Op: op})
		}
	}
	commit := func() {
		t.Helper()
		keys := map[*Index][]Key{}
		for start := 0; start < len(txn); start += 7 {
			aff, err := p.Resolve(ctxT(t), db.Pool, txn[start:min(start+7, len(txn))])
			if err != nil {
				t.Fatal(err)
			}
			for _, ix := range aff.Truncated {
				fold[ix] = map[string]string{}
			}
			for _, ix := range aff.Rebuild {
				for id, d := range scan(ix) {
					fold[ix][id] = d
				}
			}
			for ix, ks := range aff.Keys {
				keys[ix] = append(keys[ix], ks...)
			}
		}
		for ix, ks := range keys {
			if err := ix.Build(ctxT(t), db.Pool, ks, func(d Doc) error {
				if d.Doc == nil {
					delete(fold[ix], d.ID)
				} else {
					fold[ix][d.ID] = string(d.Doc)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		txn = nil
	}
	rnd := rand.New(rand.NewPCG(seed, 7))
	emails := []string{"ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.com", "bob@example.com", "BOB@example.COM", "carl@example.com"}
	numbers := []string{"2", "2.0", "2.00", "3.5", "3.50", "4"}
	parts := []string{"x", "y", ":", `\`, "x:y", `a\`, `\:`, "z:", ""}
	lit := func(s string) string { return change.QuoteLiteral(s) }
	id := 0
	for round := 0; round < 40; round++ {
		for i := 0; i < 1+rnd.IntN(4); i++ {
			id++
			switch rnd.IntN(10) {
			case 0:
				stmt(change.Insert, "posts", "", fmt.Sprintf("INSERT INTO posts VALUES (%d, %s, 'p')", id, lit(emails[rnd.IntN(len(emails))])), fmt.Sprintf("id = %d", id))
			case 1:
				w := "id = (SELECT min(id) FROM posts)"
				stmt(change.Update, "posts", w, fmt.Sprintf("UPDATE posts SET title = title || '!', author_email = %s WHERE %s", lit(emails[rnd.IntN(len(emails))]), w), w)
			case 2:
				stmt(change.Insert, "nk", "", fmt.Sprintf("INSERT INTO nk VALUES (%d, %s, 'k')", id, numbers[rnd.IntN(len(numbers))]), fmt.Sprintf("id = %d", id))
			case 3:
				w := "id = (SELECT max(id) FROM nk)"
				stmt(change.Update, "nk", w, fmt.Sprintf("UPDATE nk SET n_id = %s WHERE %s", numbers[rnd.IntN(len(numbers))], w), w)
			case 4:
				a, b := lit(parts[rnd.IntN(len(parts))]), lit(parts[rnd.IntN(len(parts))])
				w := fmt.Sprintf("(a, b) = (%s, %s)", a, b)
				if len(values("c2", w)) == 0 {
					stmt(change.Insert, "c2", "", fmt.Sprintf("INSERT INTO c2 VALUES (%s, %s, 'v%d')", a, b, id), w)
				} else {
					stmt(change.Update, "c2", w, fmt.Sprintf("UPDATE c2 SET v = 'v%d' WHERE %s", id, w), w)
				}
			case 5:
				a, b := lit(parts[rnd.IntN(len(parts))]), lit(parts[rnd.IntN(len(parts))])
				stmt(change.Insert, "c2kids", "", fmt.Sprintf("INSERT INTO c2kids VALUES (%d, %s, %s, 'kid')", id, a, b), fmt.Sprintf("id = %d", id))
			case 6:
				w := "(a, b) = (SELECT a, b FROM c2 ORDER BY v LIMIT 1)"
				stmt(change.Delete, "c2", w, "DELETE FROM c2 WHERE "+w, "")
			case 7:
				// Reload: rows before the truncate, the truncate, more rows
				// after it than a batch holds, an update of some of them.
				stmt(change.Insert, "reload", "", fmt.Sprintf("INSERT INTO reload VALUES (%d, 'before')", 100000+id), fmt.Sprintf("id = %d", 100000+id))
				stmt(change.Truncate, "reload", "", "TRUNCATE reload", "")
				k := 1 + rnd.IntN(40)
				stmt(change.Insert, "reload", "", fmt.Sprintf("INSERT INTO reload SELECT g, 'r%d' FROM generate_series(1, %d) g", id, k), "true")
				w := "id % 3 = 0"
				stmt(change.Update, "reload", w, "UPDATE reload SET v = v || '!' WHERE "+w, w)
			case 8:
				w := fmt.Sprintf("email = %s", lit(emails[rnd.IntN(len(emails))]))
				if rnd.IntN(3) == 0 {
					stmt(change.Delete, "users", w, "DELETE FROM users WHERE "+w, "")
				} else {
					stmt(change.Update, "users", w, "UPDATE users SET name = name || '!' WHERE "+w, w)
				}
			case 9:
				e := emails[rnd.IntN(len(emails))]
				stmt(change.Insert, "users", "", fmt.Sprintf("INSERT INTO users VALUES (%s, 'new') ON CONFLICT DO NOTHING", lit(e)), fmt.Sprintf("email::text = %s", lit(e)))
			}
		}
		commit()
		for _, ix := range p.Indexes {
			want := scan(ix)
			got := fold[ix]
			for k, w := range want {
				if g, ok := got[k]; !ok || !sameJSON(t, g, w) {
					t.Fatalf("round %d: index %s: document %q is %q, the database says %s", round, ix.Name(), k, g, w)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Fatalf("round %d: index %s: the fold has %q, which the database does not", round, ix.Name(), k)
				}
			}
		}
	}
}
