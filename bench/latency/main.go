// Command latency measures commit-to-line latency of a change stream: it
// commits single-row updates at a steady rate and times how long each takes
// to appear as a line on the standard output of a consumer command
// (flusso-pg follow, or pg_recvlogical with wal2json). Used by bench/stream.sh.
//
//	latency -dsn postgres://... -rate 1000 -duration 20s -cmd 'flusso-pg follow --config x.yaml'
//
// The table is items(id bigint primary key, v int), pre-filled with enough
// rows; commit k updates row k, so the line for row k is the line of commit k.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

var idPattern = regexp.MustCompile(`"id":"?(\d+)"?|"name":"id"(?:,"type":"[^"]*")?,"value":(\d+)`)

func main() {
	dsn := flag.String("dsn", "", "database to write to")
	rate := flag.Int("rate", 1000, "commits per second")
	duration := flag.Duration("duration", 20*time.Second, "how long to write")
	command := flag.String("cmd", "", "consumer command; its stdout is read")
	first := flag.Int64("first", 1, "first row id to update (row 0 is used to warm up)")
	warmup := flag.Duration("warmup", 3*time.Second, "commits at the same rate before measuring (connections, caches)")
	samples := flag.String("samples", "", "file to write each measured commit's latency to, in ms, one a line (for the histogram plot)")
	flag.Parse()
	if err := run(*dsn, *rate, *duration, *warmup, *command, *first, *samples); err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
		os.Exit(1)
	}
}

func run(dsn string, rate int, duration, warmup time.Duration, command string, first int64, samples string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)

	cmd := exec.Command("sh", "-c", command)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
	}()

	var mu sync.Mutex
	seen := map[int64]time.Time{}
	warm := make(chan struct{}, 1)
	// Marker updates write a value into row 0 until a line carries it. The
	// first marker can be in a backfill (committed before the consumer's
	// slot, while it starts); a second one, written after the first line
	// came, can only come through the stream: then the consumer streams.
	base := -1 - int(time.Now().UnixNano()%1_000_000_000)
	marker := func(i int) []byte { return []byte(strconv.Itoa(base - 1000*i)) }
	want := marker(0) // under mu; nil once streaming
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			now := time.Now()
			line := sc.Bytes()
			mu.Lock()
			if want != nil {
				if bytes.Contains(line, want) {
					want = nil
					select {
					case warm <- struct{}{}:
					default:
					}
				}
				mu.Unlock()
				continue
			}
			for _, m := range idPattern.FindAllSubmatch(line, -1) {
				s := m[1]
				if len(s) == 0 {
					s = m[2]
				}
				id, _ := strconv.ParseInt(string(s), 10, 64)
				// The last sighting wins: row k is updated once while measuring,
				// and its line is the newest for it (backfill lines come before).
				if id != 0 {
					seen[id] = now
				}
			}
			mu.Unlock()
		}
	}()

	// Warm up: the consumer is streaming once a second marker comes through.
	deadline := time.Now().Add(5 * time.Minute)
	for round := 0; round < 2; round++ {
		if round == 1 {
			mu.Lock()
			want = marker(1)
			mu.Unlock()
		}
		for {
			if _, err := conn.Exec(ctx, "UPDATE items SET v = $1 WHERE id = 0", string(marker(round))); err != nil {
				return err
			}
			select {
			case <-warm:
			case <-time.After(500 * time.Millisecond):
				if time.Now().After(deadline) {
					return fmt.Errorf("the consumer did not stream within 5 minutes")
				}
				continue
			}
			break
		}
	}

	// Several connections, so the rate does not depend on one commit's round trip.
	const writers = 4
	skip := int(warmup.Seconds() * float64(rate)) // not measured
	n := skip + int(duration.Seconds()*float64(rate))
	committed := make([]time.Time, n)
	issued := make([]time.Time, n)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		wg.Add(1)
		go func(w int, c *pgx.Conn) {
			defer wg.Done()
			for k := w; k < n; k += writers {
				if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
					time.Sleep(d)
				}
				issued[k] = time.Now()
				if _, err := c.Exec(ctx, "UPDATE items SET v = v + 1 WHERE id = $1", first+int64(k)); err != nil {
					errs <- err
					return
				}
				committed[k] = time.Now()
			}
		}(w, c)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	achieved := float64(n) / time.Since(start).Seconds()
	// Wait for the tail.
	wait := time.Now().Add(30 * time.Second)
	for time.Now().Before(wait) {
		mu.Lock()
		got := 0
		for k := 0; k < n; k++ {
			if t, ok := seen[first+int64(k)]; ok && !t.Before(issued[k]) {
				got++
			}
		}
		mu.Unlock()
		if got >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	lat := make([]float64, 0, n)
	missing := 0
	for k := skip; k < n; k++ {
		t, ok := seen[first+int64(k)]
		if !ok || t.Before(issued[k]) {
			missing++ // no line since the update was sent
			continue
		}
		d := t.Sub(committed[k]).Seconds() * 1000
		if d < 0 {
			d = 0 // the line came before the client saw its COMMIT return
		}
		lat = append(lat, d)
	}
	if len(lat) == 0 {
		return fmt.Errorf("no line seen for any of %d commits", n)
	}
	sort.Float64s(lat)
	if samples != "" {
		var b bytes.Buffer
		for _, d := range lat {
			b.WriteString(strconv.FormatFloat(d, 'f', 4, 64))
			b.WriteByte('\n')
		}
		if err := os.WriteFile(samples, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("commits %d (after %d warm-up) rate %.0f/s lines %d missing %d p50_ms %.2f p95_ms %.2f p99_ms %.2f max_ms %.2f\n",
		n-skip, skip, achieved, len(lat), missing, q(0.50), q(0.95), q(0.99), lat[len(lat)-1])
	// A histogram: counts per latency bucket (ms).
	bounds := []float64{0.5, 1, 2, 3, 5, 10, 25, 50, 100, 250, 1000}
	counts := make([]int, len(bounds)+1)
	for _, d := range lat {
		i := sort.SearchFloat64s(bounds, d)
		counts[i]++
	}
	fmt.Print("histogram_ms")
	for i, b := range bounds {
		fmt.Printf(" <=%g:%d", b, counts[i])
	}
	fmt.Printf(" >%g:%d\n", bounds[len(bounds)-1], counts[len(bounds)])
	if missing > 0 {
		return fmt.Errorf("%d commits never produced a line", missing)
	}
	return nil
}
