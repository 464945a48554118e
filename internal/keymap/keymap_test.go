package keymap

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

func comment(op change.Op, id, post string) change.Row {
	r := change.Row{Table: tComments, Op: op, Cols: testCols[tComments]}
	switch op {
	case change.Insert, change.Update:
		r.New = []change.Value{text(id), text(post), null}
	case change.Delete:
		r.Old = []change.Value{text(id), missing, missing}
	}
	return r
}

func mustTxn(t *testing.T, m *Map, lsn uint64, rows ...change.Row) []string {
	t.Helper()
	b, err := m.Begin(pglogrepl.LSN(lsn))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := range rows {
		prev, ok, err := b.Row(&rows[i])
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, prev[0].Text)
		} else {
			out = append(out, "-")
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	return out
}

func newLoaded(t *testing.T, dir string, rows map[string]string) *Map {
	t.Helper()
	m, err := Create(dir, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.NewLoader()
	if err != nil {
		t.Fatal(err)
	}
	for id, post := range rows {
		if err := l.Add(tComments, []change.Value{text(id)}, []change.Value{text(post), null}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.FinishLoad(100); err != nil {
		t.Fatal(err)
	}
	return m
}

// A delete and a parent-changing update under DEFAULT identity find their
// old parents; a key change moves the entry; TRUNCATE clears the table.
func TestRowResolvesOldParents(t *testing.T) {
	m := newLoaded(t, t.TempDir(), map[string]string{"1": "10", "2": "20"})
	defer m.Close()
	move := comment(change.Update, "2", "21")
	keyChange := comment(change.Update, "9", "10")
	keyChange.Old = []change.Value{text("1"), missing, missing}
	got := mustTxn(t, m, 200, comment(change.Delete, "1", ""), comment(change.Insert, "1", "11"), move, keyChange)
	if want := "10 - 20 11"; strings.Join(got, " ") != want {
		t.Fatalf("old parents %q, want %q", strings.Join(got, " "), want)
	}
	if _, ok, _ := m.Lookup(tComments, []change.Value{text("1")}); ok {
		t.Fatal("the old key of a key change is still in the map")
	}
	if v, ok, _ := m.Lookup(tComments, []change.Value{text("9")}); !ok || v[0].Text != "10" {
		t.Fatalf("the new key of a key change holds %v (found %v), want post 10", v, ok)
	}
	if got := m.Entries(); got != 2 {
		t.Fatalf("Entries() = %d, want 2", got)
	}
	mustTxn(t, m, 300, change.Row{Table: tComments, Op: change.Truncate})
	if got := m.Entries(); got != 0 {
		t.Fatalf("after TRUNCATE Entries() = %d, want 0", got)
	}
	if _, ok, _ := m.Lookup(tComments, []change.Value{text("2")}); ok {
		t.Fatal("TRUNCATE left an entry")
	}
}

// A replay of a transaction before a truncate (one that also rewrote the
// key) still reads the key's value from before the truncate.
func TestReplayAcrossTruncate(t *testing.T) {
	m := newLoaded(t, t.TempDir(), map[string]string{"1": "10"})
	defer m.Close()
	mustTxn(t, m, 200, comment(change.Insert, "5", "50"))
	b, err := m.Begin(300)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Clear(tComments); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(tComments, []change.Value{text("1")}, []change.Value{text("99"), null}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	// The slot replays 200 and 300 (confirmed was 100).
	if got := strings.Join(mustTxn(t, m, 200, comment(change.Delete, "1", "")), " "); got != "10" {
		t.Fatalf("replay of 200 reads comment 1's post as %q, want 10", got)
	}
	b, err = m.Begin(300)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := b.Get(tComments, []change.Value{text("1")}); err != nil || !ok || v[0].Text != "10" {
		t.Fatalf("replay of 300 before its truncate reads %v (found %v, %v), want post 10", v, ok, err)
	}
	if err := b.Clear(tComments); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Get(tComments, []change.Value{text("1")}); ok {
		t.Fatal("replay of 300 after its truncate still reads comment 1")
	}
	b.Discard()
	if v, _, _ := m.Lookup(tComments, []change.Value{text("1")}); v[0].Text != "99" {
		t.Fatalf("replays changed the map: comment 1 has post %v, want 99", v)
	}
}

// Replays change nothing, also across a reopen; the LSN survives.
func TestReplayIsNoOp(t *testing.T) {
	dir := t.TempDir()
	m := newLoaded(t, dir, map[string]string{"1": "10"})
	mustTxn(t, m, 200, comment(change.Update, "1", "11"))
	if err := m.flushSync(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.LSN() != 200 || m.DurableLSN() != 200 {
		t.Fatalf("reopened at %s (durable %s), want 0/C8", m.LSN(), m.DurableLSN())
	}
	// The replay reads what the first run read, and writes nothing.
	if got := mustTxn(t, m, 200, comment(change.Update, "1", "11"), comment(change.Delete, "1", "")); strings.Join(got, " ") != "10 11" {
		t.Fatalf("replay read %v, want [10 11]", got)
	}
	if v, ok, _ := m.Lookup(tComments, []change.Value{text("1")}); !ok || v[0].Text != "11" {
		t.Fatalf("a replayed delete changed the map: %v %v", v, ok)
	}
	if err := m.Prune(200); err != nil {
		t.Fatal(err)
	}
	if got := mustTxn(t, m, 300, comment(change.Delete, "1", "")); got[0] != "11" {
		t.Fatalf("after a prune a new delete reads %v, want 11", got)
	}
}

// A missing map, one of another configuration or format, and one whose load
// never finished are refused with ErrRebuild, saying why.
func TestOpenRefuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "km")
	if _, err := Open(dir, testOptions(nil)); !errors.Is(err, ErrRebuild) || !strings.Contains(err.Error(), "no key map") {
		t.Fatalf("open of a missing map: %v", err)
	}
	m, err := Create(dir, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, testOptions(nil)); !errors.Is(err, ErrRebuild) || !strings.Contains(err.Error(), "never completely loaded") {
		t.Fatalf("open of an unfinished load: %v", err)
	}
	m = newLoaded(t, dir, map[string]string{"1": "10"})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	other := testOptions(nil)
	other.Fingerprint = "system 43 slot flusso"
	if _, err := Open(dir, other); !errors.Is(err, ErrRebuild) || !strings.Contains(err.Error(), "another configuration") {
		t.Fatalf("open with another fingerprint: %v", err)
	}
	cols := testOptions(nil)
	cols.Tables = []Spec{{Table: tComments, Key: []string{"id"}, Join: []string{"post_id"}}, testSpecs[1]}
	if _, err := Open(dir, cols); !errors.Is(err, ErrRebuild) {
		t.Fatalf("open with other join columns: %v", err)
	}
	// Another format version.
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(metaFormat, []byte("flusso-keymap/0"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, testOptions(nil)); !errors.Is(err, ErrRebuild) || !strings.Contains(err.Error(), "format") {
		t.Fatalf("open of another format: %v", err)
	}
	// Create starts over.
	m = newLoaded(t, dir, map[string]string{"7": "70"})
	defer m.Close()
	if _, ok, _ := m.Lookup(tComments, []change.Value{text("1")}); ok {
		t.Fatal("Create kept an entry of the old map")
	}
}

// A damaged store is refused with ErrRebuild, at Open or at the first read
// of the damaged part.
func TestDamagedRefused(t *testing.T) {
	dir := t.TempDir()
	rows := map[string]string{}
	for i := range 2000 {
		rows[strings.Repeat("k", 20)+string(rune('a'+i%26))+strconv.Itoa(i)] = strconv.Itoa(i)
	}
	m := newLoaded(t, dir, rows)
	if err := m.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(ssts) == 0 {
		t.Fatal("no table file to damage")
	}
	for _, p := range ssts {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(b) / 8; i < len(b)/2; i += 97 {
			b[i] ^= 0x5a
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Open(dir, testOptions(nil))
	if err == nil {
		defer m.Close()
		err = m.Verify()
	}
	if !errors.Is(err, ErrRebuild) {
		t.Fatalf("a damaged map: %v, want ErrRebuild", err)
	}
}

// Fill gives a DELETE and an UPDATE without old tuple the old values the map
// holds, as FULL identity would have sent them.
func TestFill(t *testing.T) {
	m := newLoaded(t, t.TempDir(), map[string]string{"1": "10", "2": "20"})
	defer m.Close()
	b, err := m.Begin(200)
	if err != nil {
		t.Fatal(err)
	}
	del, move, ins := comment(change.Delete, "1", ""), comment(change.Update, "2", "21"), comment(change.Insert, "3", "30")
	for _, r := range []*change.Row{&del, &move, &ins} {
		if err := b.Fill(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := del.Old; got[0].Text != "1" || got[1].Text != "10" || !got[2].Null {
		t.Fatalf("filled delete: Old = %v, want [1 10 NULL]", got)
	}
	if got := move.Old; len(got) != 3 || got[0].Text != "2" || got[1].Text != "20" || move.New[1].Text != "21" {
		t.Fatalf("filled update: Old = %v New = %v, want Old [2 20 NULL]", got, move.New)
	}
	if ins.Old != nil {
		t.Fatalf("an insert got an old tuple: %v", ins.Old)
	}
}

// The metrics' readers (Entries, Bytes, LSN, DurableLSN, Lookup) may run
// while the pipeline writes (run with -race); a Sync with nothing new does
// not move the durable LSN past what was written.
func TestConcurrentReaders(t *testing.T) {
	m := newLoaded(t, t.TempDir(), map[string]string{"1": "10"})
	defer m.Close()
	done := make(chan struct{})
	read := make(chan int)
	go func() {
		n := 0
		defer func() { read <- n }()
		for {
			select {
			case <-done:
				return
			default:
			}
			_, _, _ = m.Entries(), m.Bytes(), m.LSN()
			if _, _, err := m.Lookup(tComments, []change.Value{text("1")}); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	for i := range 200 {
		mustTxn(t, m, uint64(200+i), comment(change.Update, "1", strconv.Itoa(i)), comment(change.Insert, strconv.Itoa(i+2), "5"))
		if i%10 == 0 {
			if err := m.flushSync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	if n := <-read; n == 0 {
		t.Fatal("the reader never ran")
	}
	if err := m.flushSync(); err != nil {
		t.Fatal(err)
	}
	if err := m.flushSync(); err != nil {
		t.Fatal(err)
	}
	if m.DurableLSN() != m.LSN() || m.Entries() != 201 {
		t.Fatalf("durable %s, LSN %s, %d entries; want durable = LSN and 201 entries", m.DurableLSN(), m.LSN(), m.Entries())
	}
}

// A transaction larger than the chunk size is written in chunks; one that a
// crash cut (here: the process stops before Commit) is rolled back by Open,
// entries and counts, and a truncate it had written is remembered until the
// transaction is applied again.
func TestChunkedRollback(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(nil)
	o.chunkBytes = 64
	m, err := Create(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.FinishLoad(100); err != nil {
		t.Fatal(err)
	}
	mustTxn(t, m, 200, comment(change.Insert, "1", "10"), comment(change.Insert, "2", "20"))
	link := []change.Value{text("1"), text("1")}
	b, err := m.Begin(250)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(tLinks, link, []change.Value{text("5")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	cut := func(truncate bool) {
		b, err := m.Begin(300)
		if err != nil {
			t.Fatal(err)
		}
		rows := []change.Row{comment(change.Delete, "1", ""), comment(change.Update, "2", "21")}
		for i := 3; i < 40; i++ {
			rows = append(rows, comment(change.Insert, strconv.Itoa(i), "30"))
		}
		if truncate {
			rows = append(rows, change.Row{Table: tLinks, Op: change.Truncate}, comment(change.Insert, "99", "99"))
		}
		for i := range rows {
			if _, _, err := b.Row(&rows[i]); err != nil {
				t.Fatal(err)
			}
		}
		if b.chunks < 2 {
			t.Fatalf("a 40-row transaction was written in %d chunks, want several", b.chunks)
		}
		b.Discard() // the crash: no Commit
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if m, err = Open(dir, o); err != nil {
			t.Fatal(err)
		}
		if !m.rolledBack || m.LSN() != 250 {
			t.Fatalf("after the cut the map is at %s, rolled back %v; want 0/FA, rolled back", m.LSN(), m.rolledBack)
		}
		for id, post := range map[string]string{"1": "10", "2": "20", "3": "", "99": ""} {
			v, ok, err := m.Lookup(tComments, []change.Value{text(id)})
			if err != nil || ok != (post != "") || (ok && v[0].Text != post) {
				t.Fatalf("after the rollback comment %s has %v (found %v, %v), want %q", id, v, ok, err, post)
			}
		}
		if got := m.TableEntries(tComments); got != 2 {
			t.Fatalf("after the rollback comments has %d entries, want 2", got)
		}
	}
	cut(false)
	if len(m.lostClear) != 0 {
		t.Fatalf("a rollback without truncate lost tables %v", m.lostClear)
	}
	cut(true)
	if !m.lostClear[1] {
		t.Fatalf("the rolled-back truncate of links is not remembered: %v", m.lostClear)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if m, err = Open(dir, o); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.lostClear[1] {
		t.Fatal("a reopen forgot that links lost entries")
	}
	// The slot sends 300 again: reads of links are flagged until its truncate.
	b, err = m.Begin(300)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get(tLinks, link); err != nil || !b.Uncertain() {
		t.Fatalf("a read of links before the resent truncate: uncertain %v, %v", b.Uncertain(), err)
	}
	if err := b.Clear(tLinks); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if len(m.lostClear) != 0 {
		t.Fatalf("after the transaction is applied again, lost tables %v", m.lostClear)
	}
}

// Reload replaces a table's entries with the rows read now, survives a
// reopen, keeps the map's LSN, and is refused while a batch is open; a
// later transaction applies on top of the reloaded entries.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	m := newLoaded(t, dir, map[string]string{"1": "10", "2": "20"})
	b, err := m.Begin(150)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(tComments, func(func(key, join []change.Value) error) error { return nil }); err == nil {
		t.Fatal("Reload ran while a batch was open")
	}
	b.Discard()
	err = m.Reload(tComments, func(add func(key, join []change.Value) error) error {
		for id, post := range map[string]string{"2": "21", "3": "30", "4": "40"} {
			if err := add([]change.Value{text(id)}, []change.Value{text(post), null}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Entries(); got != 3 {
		t.Fatalf("Entries() = %d after the reload, want 3", got)
	}
	if m.LSN() != 100 {
		t.Fatalf("LSN() = %s after the reload, want 0/64 (unchanged)", m.LSN())
	}
	if got := mustTxn(t, m, 200, comment(change.Delete, "3", ""), comment(change.Delete, "1", "")); strings.Join(got, " ") != "30 -" {
		t.Fatalf("old parents %q after the reload, want \"30 -\"", strings.Join(got, " "))
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m, err = Open(dir, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if v, ok, _ := m.Lookup(tComments, []change.Value{text("2")}); !ok || v[0].Text != "21" {
		t.Fatalf("after a reopen key 2 holds %v (found %v), want post 21", v, ok)
	}
	if got := m.Entries(); got != 2 {
		t.Fatalf("Entries() = %d after a reopen, want 2", got)
	}
}

// flushSync is what follow does at the end of a group: the group's
// batches to the store, then the fsync.
func (m *Map) flushSync() error {
	if err := m.FlushGroup(); err != nil {
		return err
	}
	return m.Sync()
}
