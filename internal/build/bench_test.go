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

	b.Run("copy-reference", func(b *testing.B) {
		start, docs := time.Now(), 0
		for b.Loop() {
			tag, err := conn.Conn().PgConn().CopyTo(ctx, io.Discard, "COPY ("+ref+") TO STDOUT")
			if err != nil {
				b.Fatal(err)
			}
			docs += int(tag.RowsAffected())
		}
		rate(b, docs, start)
	})
	for _, batch := range []int{100, 500, 2000} {
		b.Run(fmt.Sprintf("build/batch=%d", batch), func(b *testing.B) {
			start, docs := time.Now(), 0
			for b.Loop() {
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
			}
			rate(b, docs, start)
		})
	}
	for _, batch := range []int{500, 2000, 10000} {
		b.Run(fmt.Sprintf("scan/batch=%d", batch), func(b *testing.B) {
			start, docs := time.Now(), 0
			for b.Loop() {
				var after Key
				for {
					last, n, err := ix.Scan(ctx, conn, after, nil, batch, func(Doc) error { docs++; return nil })
					if err != nil {
						b.Fatal(err)
					}
					if n < batch {
						break
					}
					after = last
				}
			}
			rate(b, docs, start)
		})
	}
}
