package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/pgsession"
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
	// COPY runs as psql would, with the server's settings; documents run on
	// a connection with pgsession.Params(), as flusso-pg's own connections do.
	// FLUSSO_BENCH_JIT=on|off sets jit on both.
	copyConn, err := db.Pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer copyConn.Release()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	for k, v := range pgsession.Params() {
		if _, err := conn.Exec(ctx, "SELECT set_config($1, $2, false)", k, v); err != nil {
			b.Fatal(err)
		}
	}
	if jit := os.Getenv("FLUSSO_BENCH_JIT"); jit != "" {
		for _, c := range []*pgxpool.Conn{copyConn, conn} {
			if _, err := c.Exec(ctx, "SELECT set_config('jit', $1, false)", jit); err != nil {
				b.Fatal(err)
			}
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
		tag, err := copyConn.Conn().PgConn().CopyTo(ctx, io.Discard, "COPY ("+ref+") TO STDOUT")
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
	// side-by-side runs COPY and every variant in each iteration, so a busy
	// machine slows them alike: its ratios (docs/s over COPY's docs/s) are
	// the figures to quote.
	b.Run("side-by-side", func(b *testing.B) {
		type variant struct {
			name string
			run  func(*testing.B) int
			took time.Duration
			docs int
		}
		vs := []*variant{{name: "copy", run: copyAll}}
		for _, n := range []int{100, 500, 2000} {
			vs = append(vs, &variant{name: fmt.Sprintf("build%d", n), run: func(b *testing.B) int { return buildAll(b, n) }})
		}
		for _, n := range []int{500, 2000} {
			vs = append(vs, &variant{name: fmt.Sprintf("scan%d", n), run: func(b *testing.B) int { return scanAll(b, n) }})
		}
		for b.Loop() {
			for _, v := range vs {
				start := time.Now()
				v.docs += v.run(b)
				v.took += time.Since(start)
			}
		}
		copyRate := float64(vs[0].docs) / vs[0].took.Seconds()
		b.ReportMetric(copyRate, "copy-docs/s")
		for _, v := range vs[1:] {
			b.ReportMetric(float64(v.docs)/v.took.Seconds()/copyRate, v.name+"/copy")
		}
	})
}
