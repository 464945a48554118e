package keymap

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/v2"
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
	if g.rng.IntN(10) == 0 {
		rows = make([]change.Row, 10+g.rng.IntN(30))
	}
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
	checkStateExcept(t, m, want, nil, when)
}

// checkStateExcept is checkState but for the tables in skip (and the counts).
func checkStateExcept(t testing.TB, m *Map, want state, skip map[change.Table]bool, when string) {
	t.Helper()
	for _, tb := range []change.Table{tComments, tLinks} {
		if skip[tb] {
			continue
		}
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
	if len(skip) > 0 {
		return
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
	if n, err := strconv.Atoi(os.Getenv("FLUSSO_KEYMAP_SEEDS")); err == nil && n > 0 {
		seeds = n // a longer run: FLUSSO_KEYMAP_SEEDS=200
	}
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
	opts := func() Options {
		o := testOptions(fs)
		if seed%2 == 1 {
			o.chunkBytes = 60 // most transactions are written in chunks
		}
		return o
	}
	m, err := Create(dir, opts())
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

	// resend is the slot sending again, after a crash, the transactions past
	// the map's LSN: each is new to the map, and answers as the first time
	// (but where a truncate a crash left written hides a value).
	resend := func(got uint64, where string) {
		model = after[got].clone()
		for _, rec := range log {
			if rec.lsn <= got {
				continue
			}
			b, err := m.Begin(pglogrepl.LSN(rec.lsn))
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if b.Replay() {
				t.Fatalf("%s: resent transaction %d is taken for a replay (map at %s)", where, rec.lsn, m.LSN())
			}
			for j := range rec.rows {
				prev, had, err := b.Row(&rec.rows[j])
				if err != nil {
					t.Fatalf("%s: resend %d row %d: %v", where, rec.lsn, j, err)
				}
				w, wok := model.apply(&rec.rows[j])
				if had == wok && (!had || sameVals(prev, w.join)) {
					continue
				}
				later := false
				for _, r2 := range rec.rows[j:] {
					later = later || (r2.Op == change.Truncate && r2.Table == rec.rows[j].Table)
				}
				if !b.Uncertain() || !later {
					t.Fatalf("%s: resend %d row %d: old values %v (found %v), model %v (found %v)", where, rec.lsn, j, prev, had, w.join, wok)
				}
				stats["uncertain"]++
			}
			if err := b.Commit(); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			after[rec.lsn] = model.clone()
			stats["resent"]++
		}
	}

	for step := range steps {
		where := fmt.Sprintf("seed %d step %d", seed, step)
		switch n := rng.IntN(100); {
		case n < 60: // a new transaction, now and then cut by a crash and sent again
			lsn, rows := g.txn()
			cut := -1
			if rng.IntN(12) == 0 {
				cut = rng.IntN(len(rows))
			}
			for attempt := 0; ; attempt++ {
				b, err := m.Begin(pglogrepl.LSN(lsn))
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				if b.Replay() {
					t.Fatalf("%s: a new transaction at %d is taken for a replay (map at %s)", where, lsn, m.LSN())
				}
				rec := txnRec{lsn: lsn, rows: rows, trunc: map[change.Table]bool{}}
				try := model.clone()
				for i := range rows {
					prev, had, err := b.Row(&rows[i])
					if err != nil {
						t.Fatalf("%s: row %d: %v", where, i, err)
					}
					w, wok := try.apply(&rows[i])
					if had != wok || (had && !sameVals(prev, w.join)) {
						// Only the rerun of a transaction whose own truncate a
						// crash left written may answer otherwise, before it.
						later := false
						for _, r2 := range rows[i:] {
							later = later || (r2.Op == change.Truncate && r2.Table == rows[i].Table)
						}
						if attempt == 0 || !b.Uncertain() || !later {
							t.Fatalf("%s: row %d (%v %s): old values %v (found %v), model %v (found %v)", where, i, rows[i].Op, rows[i].Table, prev, had, w.join, wok)
						}
						stats["uncertain"]++
					}
					rec.prevs, rec.found = append(rec.prevs, entry{join: w.join}), append(rec.found, wok)
					if rows[i].Op == change.Truncate {
						rec.trunc[rows[i].Table] = true
					}
					if i == cut && attempt == 0 {
						break
					}
				}
				if b.chunks > 0 {
					stats["chunked"]++
				}
				if cut < 0 || attempt > 0 {
					if err := b.Commit(); err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					model = try
					log = append(log, rec)
					after[lsn] = model.clone()
					stats["txn"]++
					break
				}
				// The crash, in the middle of the transaction: the map comes
				// back at its last transaction's end, the chunks written of
				// this one rolled back.
				durable, before := uint64(m.DurableLSN()), uint64(m.LSN())
				if rng.IntN(2) == 0 { // the chunks reached the disk
					if err := m.db.LogData([]byte("x"), pebble.Sync); err != nil {
						t.Fatal(err)
					}
				}
				clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(seed, uint64(step)))})
				b.Discard()
				_ = m.Close()
				fs = clone
				if m, err = Open(dir, opts()); err != nil {
					t.Fatalf("%s: open after a crash inside a transaction: %v", where, err)
				}
				got := uint64(m.LSN())
				if m.rolledBack {
					stats["rolled-back"]++
				}
				if len(m.lostClear) > 0 {
					stats["lost-clear"]++
				}
				st, ok := after[got]
				if got < durable || got > before || !ok {
					t.Fatalf("%s: after a crash inside transaction %d the map is at %d (durable %d, last %d)", where, lsn, got, durable, before)
				}
				skip := map[change.Table]bool{}
				for tid := range m.lostClear {
					skip[m.specs[tid].Table] = true
				}
				checkStateExcept(t, m, st, skip, where+" after a crash inside a transaction")
				resend(got, where+" resend")
				stats["crash-in-txn"]++
			}
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
					// Only a truncate of the table later in the replay excuses
					// a different answer (it rebuilds every index reading the
					// table): a read the truncate hid (Uncertain), and what the
					// replay then wrote and read back of it.
					later := false
					for _, r2 := range log[i:] {
						later = later || r2.trunc[rec.rows[j].Table]
					}
					if !b.Uncertain() || !later {
						t.Fatalf("%s: replay %d row %d: old values %v (found %v), first run read %v (found %v)", where, rec.lsn, j, prev, had, rec.prevs[j].join, rec.found[j])
					}
					stats["uncertain"]++
				}
				if b.spilled {
					stats["spilled"]++
				}
				if err := b.Commit(); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pScratch}, UpperBound: []byte{pScratch + 1}})
			if err != nil {
				t.Fatal(err)
			}
			if it.First() {
				t.Fatalf("%s: a replay left scratch key %q", where, it.Key())
			}
			_ = it.Close()
			checkState(t, m, model, where+" after a replay")
			stats["replay"]++
		case n < 78:
			if err := m.flushSync(); err != nil {
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
			if m, err = Open(dir, opts()); err != nil {
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
			if m, err = Open(dir, opts()); err != nil {
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
			skip := map[change.Table]bool{}
			for tid := range m.lostClear {
				skip[m.specs[tid].Table] = true
			}
			checkStateExcept(t, m, st, skip, fmt.Sprintf("%s after a crash (at %d, durable was %d, rolled back %v, lost %v)", where, got, durable, m.rolledBack, m.lostClear))
			resend(got, where+" resend")
			checkState(t, m, model, where+" after the resend")
			stats["crash"]++
		default:
			checkState(t, m, model, where)
		}
	}
	checkState(t, m, model, "the end")
	want := []string{"txn", "replay", "prune", "reopen", "crash", "crash-in-txn"}
	if seed%2 == 1 {
		want = append(want, "chunked", "rolled-back", "spilled")
	}
	for _, k := range want {
		if stats[k] == 0 && steps >= 150 {
			t.Fatalf("the random run never did a %s: %v", k, stats)
		}
	}
	t.Logf("seed %d: %v", seed, stats)
}
