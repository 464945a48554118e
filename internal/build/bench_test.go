package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkBlogDocuments builds every document of the blog workload
// (FLUSSO_BENCH_POSTS posts, default 20000, with 5 comments and 3 tags each)
// side by side with COPY (workloads/blog/reference.sql) TO STDOUT, the rate
// of the hand-written query with no client work at all. Compare docs/s:
//
//	go test ./internal/build/ -run '^$' -bench BlogDocuments -benchtime 3x
func BenchmarkBlogDocuments(b *testing.B) {
	posts := 20000
	if s := os.Getenv("FLUSSO_BENCH_POSTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("FLUSSO_BENCH_POSTS=%q is not a positive number", s)
		}
		posts = n
	}
	db, p := loadBlog(b, strconv.Itoa(max(posts/20, 1)), strconv.Itoa(posts), strconv.Itoa(posts*5))
	ix := p.Indexes[0]
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	if jit := os.Getenv("FLUSSO_BENCH_JIT"); jit != "" {
		if _, err := conn.Exec(ctx, "SET jit = "+jit); err != nil {
			b.Fatal(err)
		}
	}
	var keys []Key
	for i := 1; i <= posts; i++ {
		keys = append(keys, Key{strconv.Itoa(i)})
	}
	rate := func(b *testing.B, docs int, start time.Time) {
		b.ReportMetric(float64(docs)/time.Since(start).Seconds(), "docs/s")
	}
	ref := readFile(b, workload(b, "reference.sql"))

	copyAll := func(b *testing.B) int {
		tag, err := conn.Conn().PgConn().CopyTo(ctx, io.Discard, "COPY ("+ref+") TO STDOUT")
		if err != nil {
			b.Fatal(err)
		}
		return int(tag.RowsAffected())
	}
	buildAll := func(b *testing.B, batch int) int {
		docs := 0
		for i := 0; i < len(keys); i += batch {
			err := ix.Build(ctx, conn, keys[i:min(i+batch, len(keys))], func(d Doc) error {
				if d.Doc == nil {
					return fmt.Errorf("key %s: no document", d.ID)
				}
				docs++
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		return docs
	}
	scanAll := func(b *testing.B, batch int) int {
		docs := 0
		var after Key
		for {
			last, n, err := ix.Scan(ctx, conn, after, nil, batch, func(Doc) error { docs++; return nil })
			if err != nil {
				b.Fatal(err)
			}
			if n < batch {
				return docs
			}
			after = last
		}
	}

	b.Run("copy-reference", func(b *testing.B) {
		start, docs := time.Now(), 0
		for b.Loop() {
			docs += copyAll(b)
		}
		rate(b, docs, start)
	})
	for _, batch := range []int{100, 500, 2000} {
		b.Run(fmt.Sprintf("build/batch=%d", batch), func(b *testing.B) {
			start, docs := time.Now(), 0
			for b.Loop() {
				docs += buildAll(b, batch)
			}
			rate(b, docs, start)
		})
	}
	for _, batch := range []int{500, 2000, 10000} {
		b.Run(fmt.Sprintf("scan/batch=%d", batch), func(b *testing.B) {
			start, docs := time.Now(), 0
			for b.Loop() {
				docs += scanAll(b, batch)
			}
			rate(b, docs, start)
		})
	}
	// side-by-side alternates the three in every iteration, so a busy
	// machine slows them alike: its ratios are the figures to quote.
	b.Run("side-by-side", func(b *testing.B) {
		var tc, tb, ts time.Duration
		var nc, nb, ns int
		for b.Loop() {
			t0 := time.Now()
			nc += copyAll(b)
			t1 := time.Now()
			nb += buildAll(b, 500)
			t2 := time.Now()
			ns += scanAll(b, 2000)
			tc, tb, ts = tc+t1.Sub(t0), tb+t2.Sub(t1), ts+time.Since(t2)
		}
		copyRate := float64(nc) / tc.Seconds()
		b.ReportMetric(copyRate, "copy-docs/s")
		b.ReportMetric(float64(nb)/tb.Seconds()/copyRate, "build500/copy")
		b.ReportMetric(float64(ns)/ts.Seconds()/copyRate, "scan2000/copy")
	})
}
