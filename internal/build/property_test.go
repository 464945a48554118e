package build

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/change"
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
