package keymap

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// The tables of the tests: a has_many child with one key column and two
// join columns (one nullable), and a table with a composite key.
var (
	tComments = change.Table{Schema: "public", Name: "comments"}
	tLinks    = change.Table{Schema: "public", Name: "links"}
	testSpecs = []Spec{
		{Table: tComments, Key: []string{"id"}, Join: []string{"post_id", "tag"}},
		{Table: tLinks, Key: []string{"a", "b"}, Join: []string{"x"}},
	}
	testCols = map[change.Table][]string{
		tComments: {"id", "post_id", "tag"},
		tLinks:    {"a", "b", "x"},
	}
)

func testOptions(fs vfs.FS) Options {
	return Options{Tables: testSpecs, Fingerprint: "system 42 slot flusso", CacheBytes: 1 << 20, MemTableBytes: 1 << 20, fs: fs}
}

func text(s string) change.Value { return change.Value{Text: s} }

var (
	null    = change.Value{Null: true}
	missing = change.Value{Missing: true}
)

// entry is what the model holds for a key.
type entry struct{ join []change.Value }

// state is the model: table → key (as fmt.Sprint of its values) → entry.
type state map[change.Table]map[string]entry

func (s state) clone() state {
	c := state{}
	for t, m := range s {
		c[t] = maps.Clone(m)
	}
	return c
}

func (s state) count() int64 {
	var n int64
	for _, m := range s {
		n += int64(len(m))
	}
	return n
}

func keyOf(v []change.Value) string { return fmt.Sprint(v) }

// apply is the model's meaning of a thin row, written independently of
// Batch.Row: the join values the key had before, then the change.
func (s state) apply(r *change.Row) (entry, bool) {
	if r.Op == change.Truncate {
		s[r.Table] = map[string]entry{}
		return entry{}, false
	}
	nk := 1
	if r.Table == tLinks {
		nk = 2
	}
	m := s[r.Table]
	if m == nil {
		m = map[string]entry{}
		s[r.Table] = m
	}
	var look []change.Value
	switch {
	case r.Op == change.Delete, r.Op == change.Update && r.Old != nil:
		look = r.Old[:nk]
	default:
		look = r.New[:nk]
	}
	prev, had := m[keyOf(look)]
	if r.Op == change.Delete {
		delete(m, keyOf(look))
		return prev, had
	}
	join := append([]change.Value(nil), r.New[nk:]...)
	for i := range join {
		if join[i].Missing {
			if r.Old != nil && !r.Old[nk+i].Missing {
				join[i] = r.Old[nk+i]
			} else if had {
				join[i] = prev.join[i]
			}
		}
	}
	delete(m, keyOf(look))
	m[keyOf(r.New[:nk])] = entry{join: join}
	return prev, had
}

// gen makes random transactions of thin rows, as pgoutput would send them
// under DEFAULT identity (and now and then FULL), keeping its own model to
// pick keys that exist.
type gen struct {
	rng *rand.Rand
	cur state
	lsn uint64
}

func newGen(seed uint64, loaded state, lsn uint64) *gen {
	return &gen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), cur: loaded.clone(), lsn: lsn}
}

func (g *gen) key(t change.Table) []change.Value {
	if t == tComments {
		return []change.Value{text(strconv.Itoa(g.rng.IntN(24)))}
	}
	return []change.Value{text(strconv.Itoa(g.rng.IntN(4))), text(strconv.Itoa(g.rng.IntN(4)))}
}

func (g *gen) join(t change.Table) []change.Value {
	if t == tComments {
		tag := text("t" + strconv.Itoa(g.rng.IntN(3)))
		if g.rng.IntN(4) == 0 {
			tag = null
		}
		return []change.Value{text(strconv.Itoa(g.rng.IntN(6))), tag}
	}
	return []change.Value{text(strconv.Itoa(g.rng.IntN(9)))}
}

func (g *gen) row() change.Row {
	t := tComments
	if g.rng.IntN(3) == 0 {
		t = tLinks
	}
	r := change.Row{Table: t, Cols: testCols[t]}
	key, join := g.key(t), g.join(t)
	onlyKey := func(k []change.Value) []change.Value {
		out := append([]change.Value(nil), k...)
		for range len(join) {
			out = append(out, missing)
		}
		return out
	}
	switch n := g.rng.IntN(100); {
	case n < 30:
		r.Op, r.New = change.Insert, append(key, join...)
	case n < 50: // an update that keeps the key: no old tuple; sometimes a TOAST value not sent
		r.Op, r.New = change.Update, append(key, join...)
		if g.rng.IntN(4) == 0 {
			r.New[len(key)] = missing
		}
	case n < 62: // a key change: the old tuple carries the key only
		r.Op, r.Old, r.New = change.Update, onlyKey(key), append(g.key(t), join...)
	case n < 66: // REPLICA IDENTITY FULL: the whole old row
		r.Op, r.Old, r.New = change.Update, append(key, g.join(t)...), append(key, join...)
		r.New[len(key)] = missing
	case n < 95:
		r.Op, r.Old = change.Delete, onlyKey(key)
	default:
		r.Op = change.Truncate
	}
	return r
}

// txn returns the next transaction: its end LSN and rows, applied to the
// generator's own model.
func (g *gen) txn() (uint64, []change.Row) {
	g.lsn += 1 + uint64(g.rng.IntN(40))
	rows := make([]change.Row, 1+g.rng.IntN(6))
	for i := range rows {
		rows[i] = g.row()
		g.cur.apply(&rows[i])
	}
	return g.lsn, rows
}

// loadRandom fills a new map through a Loader and returns the model.
func loadRandom(t testing.TB, m *Map, rng *rand.Rand, lsn uint64) state {
	s := state{tComments: {}, tLinks: {}}
	l, err := m.NewLoader()
	if err != nil {
		t.Fatal(err)
	}
	g := &gen{rng: rng}
	for range 20 {
		tb := tComments
		if rng.IntN(3) == 0 {
			tb = tLinks
		}
		k, j := g.key(tb), g.join(tb)
		if _, dup := s[tb][keyOf(k)]; dup {
			continue
		}
		s[tb][keyOf(k)] = entry{join: j}
		if err := l.Add(tb, k, j); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.FinishLoad(pglogrepl.LSN(lsn)); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkState compares every key of the tests' key space with the model.
func checkState(t testing.TB, m *Map, want state, when string) {
	t.Helper()
	for _, tb := range []change.Table{tComments, tLinks} {
		var keys [][]change.Value
		if tb == tComments {
			for i := range 24 {
				keys = append(keys, []change.Value{text(strconv.Itoa(i))})
			}
		} else {
			for a := range 4 {
				for b := range 4 {
					keys = append(keys, []change.Value{text(strconv.Itoa(a)), text(strconv.Itoa(b))})
				}
			}
		}
		for _, k := range keys {
			got, ok, err := m.Lookup(tb, k)
			if err != nil {
				t.Fatalf("%s: lookup %s %v: %v", when, tb, k, err)
			}
			w, wok := want[tb][keyOf(k)]
			if ok != wok || (ok && !sameVals(got, w.join)) {
				t.Fatalf("%s: %s %v: map has %v (found %v), model %v (found %v)", when, tb, k, got, ok, w.join, wok)
			}
		}
	}
	if got, w := m.Entries(), want.count(); got != w {
		t.Fatalf("%s: Entries() = %d, model has %d", when, got, w)
	}
	if got, w := m.TableEntries(tComments), int64(len(want[tComments])); got != w {
		t.Fatalf("%s: TableEntries(comments) = %d, model has %d", when, got, w)
	}
}

type txnRec struct {
	lsn   uint64
	rows  []change.Row
	prevs []entry
	found []bool
	trunc map[change.Table]bool
}

// TestModel drives a map with random transactions, replays of transactions
// it holds, syncs, prunes, clean reopens and simulated crashes (Pebble's
// crashable file system, keeping a random part of what was not synced), and
// compares every answer and the whole content with an in-memory model.
func TestModel(t *testing.T) {
	seeds, steps := 12, 400
	if testing.Short() {
		seeds, steps = 3, 150
	}
	for seed := range uint64(seeds) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) { runModel(t, seed, steps) })
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	fs := vfs.NewCrashableMem()
	const dir = "keymap"
	m, err := Create(dir, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	model := loadRandom(t, m, rng, 100)
	after := map[uint64]state{100: model.clone()}
	g := newGen(seed, model, 100)
	var log []txnRec
	confirmed := uint64(100)
	stats := map[string]int{}

	for step := range steps {
		where := fmt.Sprintf("seed %d step %d", seed, step)
		switch n := rng.IntN(100); {
		case n < 60: // a new transaction
			lsn, rows := g.txn()
			b, err := m.Begin(pglogrepl.LSN(lsn))
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if b.Replay() {
				t.Fatalf("%s: a new transaction at %d is taken for a replay (map at %s)", where, lsn, m.LSN())
			}
			rec := txnRec{lsn: lsn, rows: rows, trunc: map[change.Table]bool{}}
			for i := range rows {
				prev, had, err := b.Row(&rows[i])
				if err != nil {
					t.Fatalf("%s: row %d: %v", where, i, err)
				}
				w, wok := model.apply(&rows[i])
				if had != wok || (had && !sameVals(prev, w.join)) {
					t.Fatalf("%s: row %d (%v %s): old values %v (found %v), model %v (found %v)", where, i, rows[i].Op, rows[i].Table, prev, had, w.join, wok)
				}
				rec.prevs, rec.found = append(rec.prevs, entry{join: prev}), append(rec.found, had)
				if rows[i].Op == change.Truncate {
					rec.trunc[rows[i].Table] = true
				}
			}
			if err := b.Commit(); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			log = append(log, rec)
			after[lsn] = model.clone()
			stats["txn"]++
		case n < 70: // the slot replays from the confirmed position
			start := -1
			for i, r := range log {
				if r.lsn > confirmed {
					start = i
					break
				}
			}
			if start < 0 {
				continue
			}
			start += rng.IntN(len(log) - start)
			for i := start; i < len(log); i++ {
				rec := log[i]
				b, err := m.Begin(pglogrepl.LSN(rec.lsn))
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				if !b.Replay() {
					t.Fatalf("%s: transaction %d is not taken for a replay (map at %s)", where, rec.lsn, m.LSN())
				}
				for j := range rec.rows {
					prev, had, err := b.Row(&rec.rows[j])
					if err != nil {
						t.Fatalf("%s: replay %d row %d: %v", where, rec.lsn, j, err)
					}
					if had == rec.found[j] && (!had || sameVals(prev, rec.prevs[j].join)) {
						continue
					}
					// Only a truncate later in the replay excuses a different answer.
					later := false
					for _, r2 := range log[i:] {
						later = later || r2.trunc[rec.rows[j].Table]
					}
					if !b.Uncertain() || had || !later {
						t.Fatalf("%s: replay %d row %d: old values %v (found %v), first run read %v (found %v)", where, rec.lsn, j, prev, had, rec.prevs[j].join, rec.found[j])
					}
					stats["uncertain"]++
				}
				if err := b.Commit(); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			checkState(t, m, model, where+" after a replay")
			stats["replay"]++
		case n < 78:
			if err := m.Sync(); err != nil {
				t.Fatal(err)
			}
			if m.DurableLSN() != m.LSN() {
				t.Fatalf("%s: after Sync the durable LSN is %s, the map's %s", where, m.DurableLSN(), m.LSN())
			}
		case n < 85: // confirm what is durable, and prune
			var cands []uint64
			for _, r := range log {
				if r.lsn > confirmed && r.lsn <= uint64(m.DurableLSN()) {
					cands = append(cands, r.lsn)
				}
			}
			if len(cands) == 0 {
				continue
			}
			confirmed = cands[rng.IntN(len(cands))]
			if err := m.Prune(pglogrepl.LSN(confirmed)); err != nil {
				t.Fatal(err)
			}
			stats["prune"]++
		case n < 90: // a clean restart
			lsn := m.LSN()
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if m, err = Open(dir, testOptions(fs)); err != nil {
				t.Fatalf("%s: reopen: %v", where, err)
			}
			if m.LSN() != lsn {
				t.Fatalf("%s: reopened at %s, closed at %s", where, m.LSN(), lsn)
			}
			checkState(t, m, model, where+" after a reopen")
			stats["reopen"]++
		case n < 95: // a crash: what was not synced may be lost, in part
			durable := uint64(m.DurableLSN())
			clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(seed, uint64(step)))})
			_ = m.Close()
			fs = clone
			if m, err = Open(dir, testOptions(fs)); err != nil {
				t.Fatalf("%s: open after a crash: %v", where, err)
			}
			got := uint64(m.LSN())
			if len(log) > 0 && got < log[len(log)-1].lsn {
				stats["crash-lost"]++
			}
			if got < durable {
				t.Fatalf("%s: after a crash the map is at %d, below the durable %d", where, got, durable)
			}
			st, ok := after[got]
			if !ok {
				t.Fatalf("%s: after a crash the map is at %d, no transaction's end", where, got)
			}
			checkState(t, m, st, where+" after a crash")
			// The transactions past the map's LSN never happened for it; the
			// generator goes on from its state (the slot would resend them).
			for len(log) > 0 && log[len(log)-1].lsn > got {
				log = log[:len(log)-1]
			}
			model = st.clone()
			g.cur, g.lsn = st.clone(), got
			stats["crash"]++
		default:
			checkState(t, m, model, where)
		}
	}
	checkState(t, m, model, "the end")
	for _, k := range []string{"txn", "replay", "prune", "reopen", "crash"} {
		if stats[k] == 0 && steps >= 150 {
			t.Fatalf("the random run never did a %s: %v", k, stats)
		}
	}
	t.Logf("seed %d: %v", seed, stats)
}
