package build

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// ResolveEach hands on the keys of a row shared by many documents one by
// one while its query is read: add may query the pool meanwhile (building
// the keys so far), an error of add stops the resolution and comes back
// as it is, and the keys are those Resolve gives.
func TestResolveEachStreamsAndStops(t *testing.T) {
	db, p := loadBlog(t, "3", "3000", "10")
	db.Exec(t, "INSERT INTO tags VALUES (1000, 'everywhere'); INSERT INTO post_tags SELECT id, 1000 FROM posts")
	rows := []change.Row{
		{Table: tbl("public.posts"), Op: change.Update, Cols: []string{"id", "author_id"}, New: vals("7", "1")},
		{Table: tbl("public.tags"), Op: change.Update, Cols: []string{"id"}, New: vals("1000")},
	}
	var got []string
	err := p.ResolveEach(ctxT(t), db.Pool, rows, func(ix *Index, k Key) error {
		if len(got)%500 == 0 { // a query on another connection while the resolution reads on
			var one int
			if err := db.Pool.QueryRow(ctxT(t), "SELECT 1").Scan(&one); err != nil {
				return err
			}
		}
		got = append(got, k.String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// post 7 comes twice: from its own row, then from the tag (the caller
	// de-duplicates as far as its memory bound allows).
	if len(got) != 3001 || got[0] != "7" {
		t.Fatalf("%d keys (first %v), want post 7 then the tag's 3000 posts", len(got), got[:min(3, len(got))])
	}
	ids, _ := resolved(t, db, p, rows...)
	sort.Strings(got)
	distinct := slices.Compact(got)
	if want := queryIDs(t, db, "SELECT id::text FROM posts"); ids["posts"] != want || strings.Join(distinct, ",") != want {
		t.Fatal("ResolveEach and Resolve do not give every post the tag is on")
	}

	stop := errors.New("the output is gone")
	calls := 0
	err = p.ResolveEach(ctxT(t), db.Pool, rows, func(*Index, Key) error {
		calls++
		if calls == 10 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 10 {
		t.Fatalf("add's error: got %v after %d calls, want %v after 10", err, calls, stop)
	}
	// The query is cancelled, not read to its end (the cancel reaches the
	// server a moment later).
	for wait := 0; ; wait++ {
		var active int
		if err := db.Pool.QueryRow(ctxT(t), "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%-- tags%' AND pid <> pg_backend_pid()").Scan(&active); err != nil {
			t.Fatal(err)
		}
		if active == 0 {
			break
		}
		if wait == 50 {
			t.Fatalf("%d resolution queries still running 5 s after add stopped it", active)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
