package wal

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// BenchmarkCapture compares capture with pg_recvlogical on the same stream:
// FLUSSO_BENCH_ROWS (default 200000) single-row updates, each its own
// transaction, read through two slots made before the updates. The
// recvlogical run writes pgoutput's raw messages to a file; capture decodes
// them, extracts the key and hands each transaction to a consumer that
// confirms it. Each side runs twice, alternating, and the best run counts.
//
//	go test ./internal/wal -run '^$' -bench Capture -benchtime 1x
func BenchmarkCapture(b *testing.B) {
	rows := 200_000
	if s := os.Getenv("FLUSSO_BENCH_ROWS"); s != "" {
		rows, _ = strconv.Atoi(s)
	}
	db := pgtest.NewDB(b)
	recv := recvlogicalPath(b, db.Cluster.BinDir)
	db.Exec(b, fmt.Sprintf(`CREATE TABLE t (id int PRIMARY KEY, n int, pad text);
		INSERT INTO t SELECT g, 0, 'some padding text' FROM generate_series(1, %d) g;
		ALTER TABLE t SET (autovacuum_enabled = off);
		CREATE PUBLICATION pub FOR TABLE t;`, rows))
	// ABBA order, so drift in the machine's speed counts for both sides.
	slots := []string{"b_recv1_" + db.Name, "b_ours1_" + db.Name, "b_ours2_" + db.Name, "b_recv2_" + db.Name}
	for _, s := range slots {
		db.Exec(b, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s)
	}
	db.Exec(b, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP UPDATE t SET n = n + 1 WHERE id = i; COMMIT; END LOOP; END $$`, rows))
	end := currentLSN(b, db)
	db.Exec(b, `CHECKPOINT`)

	b.ResetTimer()
	var best [2]float64
	for i, s := range slots {
		var rate float64
		side := 0
		if strings.HasPrefix(s, "b_recv") {
			rate = benchRecvlogical(b, recv, db, s, end, rows)
		} else {
			side = 1
			rate = benchCapture(b, db, s, rows)
		}
		best[side] = max(best[side], rate)
		_ = i
		b.Logf("%s: %.0f rows/s", s, rate)
	}
	b.StopTimer()
	b.ReportMetric(best[1], "rows/s")
	b.ReportMetric(best[0], "recvlogical-rows/s")
	b.ReportMetric(best[1]/best[0], "ratio")
}

func recvlogicalPath(b *testing.B, binDir string) string {
	cands := []string{filepath.Join(binDir, "pg_recvlogical")}
	more, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_recvlogical")
	for _, c := range append(cands, more...) {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	b.Fatalf("no pg_recvlogical next to the server (%s) or in /usr/lib/postgresql/*/bin", binDir)
	return ""
}

func benchRecvlogical(b *testing.B, recv string, db *pgtest.DB, slot string, end pglogrepl.LSN, rows int) float64 {
	out := filepath.Join(b.TempDir(), slot+".out")
	cmd := exec.Command(recv, "-d", db.DSN, "-S", slot, "-P", "pgoutput",
		"-o", "proto_version=1", "-o", "publication_names=pub",
		"--start", "--endpos="+end.String(), "--no-loop", "-f", out)
	stop := make(chan struct{})
	ws := walsenderCPU(db, slot, stop)
	began := time.Now()
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pg_recvlogical: %v\n%s", err, msg)
	}
	took := time.Since(began)
	close(stop)
	b.Logf("walsender cpu user/sys %v", <-ws)
	b.Logf("pg_recvlogical: cpu user %v sys %v, wall %v", cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime(), took)
	if st, err := os.Stat(out); err != nil || st.Size() < int64(rows) {
		b.Fatalf("pg_recvlogical wrote %v (%v)", st, err)
	}
	return float64(rows) / took.Seconds()
}

func benchCapture(b *testing.B, db *pgtest.DB, slot string, rows int) float64 {
	c := New(Config{
		DSN: db.DSN, Slot: slot, Publication: "pub",
		Tables:         map[change.Table][]string{tbl("t"): {"id"}},
		StatusInterval: 10 * time.Second,
		Coalesce:       time.Millisecond, // capture.coalesce's default
	}, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	v0, i0 := ctxSwitches(os.Getpid())
	began := time.Now()
	st, err := c.Open(ctx)
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	defer c.Close()
	stop := make(chan struct{})
	ws := walsenderCPU(db, slot, stop)
	out := make(chan []*Txn, 8)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, out) }()
	got := 0
	for got < rows {
		select {
		case batch := <-out:
			for _, txn := range batch {
				err := txn.Each(1000, func(rs []change.Row) error {
					for i := range rs {
						if rs[i].New[0].Text == "" {
							return fmt.Errorf("no key")
						}
					}
					got += len(rs)
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				c.Confirm(txn.EndLSN)
				txn.Release()
			}
		case err := <-done:
			b.Fatalf("run ended: %v", err)
		}
	}
	took := time.Since(began)
	close(stop)
	b.Logf("walsender cpu user/sys %v", <-ws)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	v1, i1 := ctxSwitches(os.Getpid())
	b.Logf("capture: context switches %d voluntary, %d involuntary", v1-v0, i1-i0)
	b.Logf("capture: cpu user %v sys %v, wall %v; %d socket reads, %d pauses", time.Duration(ru.Utime.Nano()-ru0.Utime.Nano()), time.Duration(ru.Stime.Nano()-ru0.Stime.Nano()), took,
		c.pace.reads.Load(), c.pace.pauses.Load())
	cancel()
	<-done
	_ = st
	return float64(rows) / took.Seconds()
}

// walsenderCPU polls the CPU time of the walsender serving slot until stop
// is closed, then reports the last value seen.
func walsenderCPU(db *pgtest.DB, slot string, stop <-chan struct{}) <-chan [2]time.Duration {
	res := make(chan [2]time.Duration, 1)
	go func() {
		var last [2]time.Duration
		for {
			var pid int
			db.Pool.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
			if pid != 0 {
				if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
					f := strings.Fields(string(stat))
					if len(f) > 15 {
						u, _ := strconv.Atoi(f[13])
						s, _ := strconv.Atoi(f[14])
						last = [2]time.Duration{time.Duration(u) * 10 * time.Millisecond, time.Duration(s) * 10 * time.Millisecond}
					}
				}
			}
			select {
			case <-stop:
				res <- last
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return res
}
