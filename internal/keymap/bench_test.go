package keymap

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// The benchmarks model a has_many child, comments(id bigint, post_id
// bigint, tag text NULL): keys 1..N as Postgres prints them, ten comments a
// post. FLUSSO_KEYMAP_BENCH_ROWS sets N (default 200000; docs/keymap.md
// quotes 1000000). Run with -benchtime=1x for the load, e.g.
//
//	FLUSSO_KEYMAP_BENCH_ROWS=1000000 go test -run '^$' -bench . -benchtime=1x ./internal/keymap/
func benchRows() int {
	if n, err := strconv.Atoi(os.Getenv("FLUSSO_KEYMAP_BENCH_ROWS")); err == nil && n > 0 {
		return n
	}
	return 200000
}

func benchOptions() Options {
	o := testOptions(nil)
	o.CacheBytes, o.MemTableBytes = 32<<20, 8<<20 // the defaults
	return o
}

func benchLoad(b *testing.B, dir string, n int) *Map {
	return benchLoadWith(b, dir, n, benchOptions())
}

func benchLoadWith(b *testing.B, dir string, n int, o Options) *Map {
	m, err := Create(dir, o)
	if err != nil {
		b.Fatal(err)
	}
	l, err := m.NewLoader()
	if err != nil {
		b.Fatal(err)
	}
	key, join := make([]change.Value, 1), make([]change.Value, 2)
	join[1] = null
	for i := 1; i <= n; i++ {
		key[0], join[0] = text(strconv.Itoa(i)), text(strconv.Itoa(i/10))
		if err := l.Add(tComments, key, join); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	if err := m.FinishLoad(100); err != nil {
		b.Fatal(err)
	}
	return m
}

// peakRSS is the process's peak resident set (VmHWM), in MiB.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkLoad is the backfill's build of the map: N rows through one
// Loader, finished (synced); then the disk size once the memtable is flushed.
func BenchmarkLoad(b *testing.B) {
	n := benchRows()
	var bytes, files int64
	for i := range b.N {
		m := benchLoad(b, filepath.Join(b.TempDir(), strconv.Itoa(i)), n)
		b.StopTimer()
		if err := m.db.Flush(); err != nil {
			b.Fatal(err)
		}
		bytes = m.Bytes()
		files = dirSize(b, m.dir)
		if err := m.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/row")
	b.ReportMetric(float64(bytes)/float64(n), "disk-B/row")
	b.ReportMetric(float64(files)/float64(n), "files-B/row")
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
}

// BenchmarkApply is the stream's cost per change on a loaded map of N rows:
// transactions of k rows, each row an UPDATE moving a random comment to
// another post (read its old post, write its new one, keep its pre-image),
// synced every 100 transactions as a group's confirm would, pruned behind.
// It reports the bytes Pebble wrote per change: its log, and its flushes and
// compactions.
func BenchmarkApply(b *testing.B) {
	n := benchRows()
	for _, k := range []int{1, 10} {
		b.Run("rows-per-txn="+strconv.Itoa(k), func(b *testing.B) {
			m := benchLoad(b, b.TempDir(), n)
			defer m.Close()
			rng := rand.New(rand.NewPCG(1, 2))
			rows := make([]change.Row, k)
			before := m.db.Metrics()
			lsn := uint64(100)
			var syncing time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i += k {
				lsn += 100
				for j := range rows {
					id := 1 + rng.IntN(n)
					rows[j] = change.Row{Table: tComments, Op: change.Update, Cols: testCols[tComments],
						New: []change.Value{text(strconv.Itoa(id)), text(strconv.Itoa(rng.IntN(n / 10))), null}}
				}
				tx, err := m.Begin(pglogrepl.LSN(lsn))
				if err != nil {
					b.Fatal(err)
				}
				for j := range rows {
					if _, _, err := tx.Row(&rows[j]); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				if (lsn/100)%100 == 0 {
					t0 := time.Now()
					if err := m.flushSync(); err != nil {
						b.Fatal(err)
					}
					if err := m.Prune(pglogrepl.LSN(lsn - 5000)); err != nil {
						b.Fatal(err)
					}
					syncing += time.Since(t0)
				}
			}
			b.StopTimer()
			after := m.db.Metrics()
			wal := after.WAL.BytesWritten - before.WAL.BytesWritten
			ta, tb := after.Total(), before.Total()
			tables := (ta.TableBytesFlushed + ta.TableBytesCompacted) - (tb.TableBytesFlushed + tb.TableBytesCompacted)
			b.ReportMetric(float64(b.Elapsed()-syncing)/float64(b.N), "apply-ns/change")
			b.ReportMetric(float64(syncing)/float64(b.N), "sync+prune-ns/change")
			b.ReportMetric(float64(wal)/float64(b.N), "log-B/change")
			b.ReportMetric(float64(tables)/float64(b.N), "table-B/change")
			b.ReportMetric(peakRSS(), "peak-RSS-MiB")
		})
	}
}

// BenchmarkLookup is a delete's read of its old parent in a map of N rows
// (random keys: the block cache cannot hold the whole map once N is large).
func BenchmarkLookup(b *testing.B) {
	n := benchRows()
	m := benchLoad(b, b.TempDir(), n)
	defer m.Close()
	if err := m.db.Flush(); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	key := make([]change.Value, 1)
	b.ResetTimer()
	for range b.N {
		key[0] = text(strconv.Itoa(1 + rng.IntN(n)))
		if _, ok, err := m.Lookup(tComments, key); err != nil || !ok {
			b.Fatalf("lookup %v: %v %v", key, ok, err)
		}
	}
}

// dirSize adds up the sizes of the files in dir, as du would see them.
func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkMix is the stream's cost per change for a mix closer to a real
// workload, in transactions of 10 rows through Fill: 40 % inserts of new
// comments, 30 % moves to another post, 30 % deletes. (Bloom filters on the
// table files were measured here against this, and gained nothing.)
func BenchmarkMix(b *testing.B) {
	n := benchRows()
	m := benchLoad(b, b.TempDir(), n)
	defer m.Close()
	if err := m.db.Flush(); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	next, lsn := n, uint64(100)
	rows := make([]change.Row, 10)
	b.ResetTimer()
	for i := 0; i < b.N; i += len(rows) {
		lsn += 100
		for j := range rows {
			r := change.Row{Table: tComments, Cols: testCols[tComments]}
			switch x := rng.IntN(10); {
			case x < 4:
				next++
				r.Op, r.New = change.Insert, []change.Value{text(strconv.Itoa(next)), text(strconv.Itoa(next / 10)), null}
			case x < 7:
				r.Op, r.New = change.Update, []change.Value{text(strconv.Itoa(1 + rng.IntN(next))), text(strconv.Itoa(rng.IntN(n / 10))), null}
			default:
				r.Op, r.Old = change.Delete, []change.Value{text(strconv.Itoa(1 + rng.IntN(next))), missing, missing}
			}
			rows[j] = r
		}
		tx, err := m.Begin(pglogrepl.LSN(lsn))
		if err != nil {
			b.Fatal(err)
		}
		for j := range rows {
			if err := tx.Fill(&rows[j]); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		if (lsn/100)%100 == 0 {
			if err := m.flushSync(); err != nil {
				b.Fatal(err)
			}
			if err := m.Prune(pglogrepl.LSN(lsn - 5000)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkBigTxn is one transaction that moves every comment of a map of N
// rows to another post (an UPDATE of the whole table), written in chunks of
// a quarter of a memtable (2 MiB): its time per row, and the process's peak RSS, which the chunks
// bound whatever the transaction's size.
func BenchmarkBigTxn(b *testing.B) {
	n := benchRows()
	for i := range b.N {
		b.StopTimer()
		m := benchLoad(b, filepath.Join(b.TempDir(), strconv.Itoa(i)), n)
		b.StartTimer()
		tx, err := m.Begin(200)
		if err != nil {
			b.Fatal(err)
		}
		for id := 1; id <= n; id++ {
			r := change.Row{Table: tComments, Op: change.Update, Cols: testCols[tComments],
				New: []change.Value{text(strconv.Itoa(id)), text(strconv.Itoa(id/10 + 1)), null}}
			if _, _, err := tx.Row(&r); err != nil {
				b.Fatal(err)
			}
		}
		chunks := tx.chunks
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		if err := m.flushSync(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(chunks), "chunks")
		if err := m.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/row")
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
}
