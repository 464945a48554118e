package jetstream

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/natstest"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

// BenchmarkOutput compares the outputs side by side in one run: stdout (an
// output.Writer on /dev/null, the cheapest reader there is), and JetStream
// R1 (one server) and R3 (a three-node cluster on loopback). One iteration
// is one batch of 100 upsert lines around 1 KiB documents, as a group of
// transactions is; docs/s is the throughput, and batch-to-confirmable is
// the time from handing a batch to the output until its LSN may be
// confirmed (stdout: the flush returned; JetStream: the broker's
// acknowledgements moved the watermark past it), p50 and p99.
//
//	go test -run '^$' -bench BenchmarkOutput -benchtime 300x ./internal/jetstream/
func BenchmarkOutput(b *testing.B) {
	const perBatch = 100
	doc := []byte(`{"id":1,"title":"a post title","body":"` + string(bytes.Repeat([]byte("lorem ipsum "), 80)) + `"}`)
	batch := func(n int) ([]byte, pglogrepl.LSN) {
		lsn := pglogrepl.LSN(0x1000000 + n)
		var buf []byte
		for i := 0; i < perBatch; i++ {
			id := n*perBatch + i
			buf = output.AppendUpsert(buf, "posts", fmt.Appendf(nil, `{"id":%d}`, id), fmt.Sprint(id), lsn, doc)
		}
		return buf, lsn
	}
	report := func(b *testing.B, lat []time.Duration, elapsed time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(float64(b.N*perBatch)/elapsed.Seconds(), "docs/s")
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		}
		b.ReportMetric(0, "ns/op")
	}

	b.Run("stdout", func(b *testing.B) {
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		w, err := output.NewWriter(f, true)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		var lat []time.Duration
		start := time.Now()
		n := 0
		for b.Loop() {
			buf, _ := batch(n)
			n++
			t0 := time.Now()
			if err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
			if err := w.Sync(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		report(b, lat, time.Since(start))
	})

	for _, r := range []int{1, 3} {
		b.Run(fmt.Sprintf("jetstream-R%d", r), func(b *testing.B) {
			var url string
			if r == 1 {
				url = natstest.Start(b, natstest.Options{}).URL()
			} else {
				url = natstest.StartCluster(b, 3, natstest.Options{}).URLs()
			}
			var mu sync.Mutex
			sent := map[pglogrepl.LSN]time.Time{}
			var lat []time.Duration
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			p, err := Open(ctx, Config{URL: url, Replicas: r, Indexes: []string{"posts"}}, nil, nil, Hooks{
				OnWatermark: func(l pglogrepl.LSN) {
					mu.Lock()
					defer mu.Unlock()
					for k, t0 := range sent {
						if k <= l {
							lat = append(lat, time.Since(t0))
							delete(sent, k)
						}
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			rctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { p.Run(rctx); close(done) }()
			defer func() { stop(); <-done }()
			start := time.Now()
			n := 0
			for b.Loop() {
				buf, lsn := batch(n)
				n++
				mu.Lock()
				sent[lsn] = time.Now()
				mu.Unlock()
				if err := p.Write(buf); err != nil {
					b.Fatal(err)
				}
				if err := p.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			report(b, lat, elapsed)
			b.ReportMetric(float64(p.Recoveries()), "recoveries")
		})
	}
}
