package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// loadRecord reads the backfill record, nil when there is none.
func loadRecord(t testing.TB, store *state.Store) *record {
	t.Helper()
	var rec record
	ok, err := store.Load(state.BackfillRecord, &rec)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return nil
	}
	return &rec
}

// TestResumeAfterCancel stops a backfill once some checkpoints are saved,
// then runs it again under a fresh snapshot: the second run writes exactly
// the documents the checkpoints do not cover, reusing the recorded ranges,
// and the fold of both equals the reference.
func TestResumeAfterCancel(t *testing.T) {
	db, plan := loadBlog(t, "50", "3000", "9000")
	want := blogReference(t, db.Pool)
	store := state.New(t.TempDir(), "s")
	path := filepath.Join(t.TempDir(), "out.ndjson")
	cfg := Config{Workers: 2, BatchSize: 20, CheckpointInterval: 10 * time.Millisecond}

	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if rec := loadRecord(t, store); rec != nil && rec.Indexes["posts"].Rows >= 600 {
				cancel()
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	r := &run{cfg: cfg, store: store}
	err := r.do(t, ctx, db, plan, path)
	cancel()
	wg.Wait()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want context.Canceled (did it finish before the cancel?)", err)
	}
	if r.imported != 1 {
		t.Fatalf("imported called %d times", r.imported)
	}
	rec := loadRecord(t, store)
	ip := rec.Indexes["posts"]
	if ip.Done || ip.Rows < 600 || ip.Rows >= int64(len(want)) || len(ip.Ranges) < 2 || !validRanges(ip.Ranges, 1) {
		t.Fatalf("record after the cancel: done %v, rows %d, %d ranges: want partial progress over several ranges", ip.Done, ip.Rows, len(ip.Ranges))
	}
	first := len(readLines(t, path))
	if int64(first) != ip.Rows {
		t.Fatalf("%d lines written, the checkpoint says %d", first, ip.Rows)
	}

	r = &run{cfg: cfg, store: store}
	if err := r.do(t, ctxT(t), db, plan, path); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if got, wantN := len(lines)-first, len(want)-int(ip.Rows); got != wantN {
		t.Fatalf("the resumed run wrote %d lines, want %d (the rest after the checkpoints)", got, wantN)
	}
	sameDocs(t, fold(t, lines, "posts"), want)
	// The resumed lines keep the position the index's backfill began at.
	for _, l := range lines {
		if l.LSN != ip.LSN.String() {
			t.Fatalf("line at %s, want %s for every line of the index", l.LSN, ip.LSN)
		}
	}
	after := loadRecord(t, store).Indexes["posts"]
	if !after.Done || after.Rows != int64(len(want)) {
		t.Fatalf("record after the resume: done %v rows %d", after.Done, after.Rows)
	}
}

// TestResumeAfterWriterFails: the output fails mid-way (its file is closed
// under the writer); the checkpoints cover no more than the lines that
// reached the file, and a resume completes the fold.
func TestResumeAfterWriterFails(t *testing.T) {
	db, plan := loadBlog(t, "50", "4000", "8000")
	want := blogReference(t, db.Pool)
	store := state.New(t.TempDir(), "s")
	cfg := Config{Workers: 2, BatchSize: 25, CheckpointInterval: 5 * time.Millisecond}

	received := filepath.Join(t.TempDir(), "received.ndjson")
	f, err := os.Create(received)
	if err != nil {
		t.Fatal(err)
	}
	w, err := output.NewWriter(f, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if st, err := os.Stat(received); err == nil && st.Size() > 512<<10 {
				f.Close() // every later write fails
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	imported := 0
	err = New(cfg, plan, db.Pool, w, store, testLog(t)).Run(ctx, Snapshot{}, func() { imported++ })
	cancel()
	wg.Wait()
	if !errors.Is(err, os.ErrClosed) || imported != 1 {
		t.Fatalf("first run: %v (imported %d), want a write error", err, imported)
	}
	first := readLines(t, received)
	ip := loadRecord(t, store).Indexes["posts"]
	if ip.Rows > int64(len(first)) || ip.Done || ip.Rows == 0 {
		t.Fatalf("the checkpoint says %d documents, the file holds %d", ip.Rows, len(first))
	}

	path := filepath.Join(t.TempDir(), "out.ndjson")
	r := &run{cfg: cfg, store: store}
	if err := r.do(t, ctxT(t), db, plan, path); err != nil {
		t.Fatal(err)
	}
	second := readLines(t, path)
	if len(second) != len(want)-int(ip.Rows) {
		t.Fatalf("the resume wrote %d lines, want %d", len(second), len(want)-int(ip.Rows))
	}
	sameDocs(t, fold(t, append(first, second...), "posts"), want)
}

// TestResumeRules: a finished index is not read again; an index whose
// config changed starts over; an index gone from the config is forgotten;
// Fresh starts everything over.
func TestResumeRules(t *testing.T) {
	db, _ := loadBlog(t, "30", "400", "800")
	both := `indexes:
  - name: posts
    table: posts
    columns: [id, title]
  - name: authors
    table: authors
    columns: [id, name]
`
	changed := `indexes:
  - name: posts
    table: posts
    columns: [id, title]
  - name: authors
    table: authors
    columns: [id, name, email]
`
	store := state.New(t.TempDir(), "s")
	count := func(yaml string, cfg Config) map[string]int {
		t.Helper()
		plan := compile(t, db.Pool, parseConfig(t, yaml))
		path := filepath.Join(t.TempDir(), "out.ndjson")
		r := &run{cfg: cfg, store: store}
		if err := r.do(t, ctxT(t), db, plan, path); err != nil {
			t.Fatal(err)
		}
		if r.imported != 1 {
			t.Fatalf("imported called %d times", r.imported)
		}
		out := map[string]int{}
		for _, l := range readLines(t, path) {
			out[l.Index]++
		}
		return out
	}
	check := func(step string, got map[string]int, posts, authors int) {
		t.Helper()
		if got["posts"] != posts || got["authors"] != authors {
			t.Fatalf("%s: wrote %v, want posts %d, authors %d", step, got, posts, authors)
		}
	}
	check("first run", count(both, Config{Workers: 2}), 400, 30)
	check("same config again", count(both, Config{Workers: 2}), 0, 0)
	check("authors changed", count(changed, Config{Workers: 2}), 0, 30)
	check("only posts selected, all done", count(changed, Config{Indexes: []string{"posts"}}), 0, 0)
	if rec := loadRecord(t, store); rec.Indexes["posts"] == nil || !rec.Indexes["authors"].Done {
		t.Fatalf("record %+v", rec.Indexes)
	}
	check("authors dropped", count("indexes:\n  - name: posts\n    table: posts\n    columns: [id, title]\n", Config{}), 0, 0)
	if rec := loadRecord(t, store); rec.Indexes["authors"] != nil {
		t.Fatal("the dropped index is still in the record")
	}
	check("fresh", count(changed, Config{Fresh: true}), 400, 30)
	check("fresh, one index", count(changed, Config{Fresh: true, Indexes: []string{"authors"}}), 0, 30)
	check("after fresh one index: posts", count(changed, Config{}), 400, 0)

	// A damaged record is an error naming the file, not a silent restart.
	if err := os.WriteFile(filepath.Join(store.Dir, "s.backfill.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := compile(t, db.Pool, parseConfig(t, both))
	r := &run{store: store}
	if err := r.do(t, ctxT(t), db, plan, filepath.Join(t.TempDir(), "x")); err == nil || r.imported != 1 {
		t.Fatalf("damaged record: %v (imported %d)", err, r.imported)
	}
}
