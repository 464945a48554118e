package wal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// Real faults against a real server: crash restarts, killed walsenders, a
// server that stays away, a second instance on the same slot. Run must
// never return on any of them.

// observedHealth is a fault.Health whose log lines the test can count.
func observedHealth() (*fault.Health, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return fault.NewHealth(zap.New(core)), logs
}

// writers insert one row per transaction into t(id bigint) from n
// goroutines (ids w*1e9+i, increasing per writer) until stop, riding out
// errors; what committed is read back from the table, since a commit cut
// by a crash may or may not have happened.
func startWriters(t *testing.T, f *fixture, n int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 1; w <= n; w++ {
		wg.Go(func() {
			for i := int64(1); ctx.Err() == nil; i++ {
				if _, err := f.db.Pool.Exec(ctx, `INSERT INTO t VALUES ($1)`, int64(w)*1e9+i); err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// consumer reads a running capture's batches, confirms each transaction at
// once and records the ids it carried, deduplicating the re-deliveries of
// transactions handed out but not yet confirmed when a connection broke:
// those must end at or before the last transaction seen, and carry what
// their first delivery carried.
type consumer struct {
	t         *testing.T
	r         *running
	mu        sync.Mutex
	ids       []int64 // in delivery order, each transaction once
	byEnd     map[pglogrepl.LSN][]int64
	lastEnd   pglogrepl.LSN
	redeliver int
	bad       []string
	done      chan struct{}
}

func consume(t *testing.T, r *running) *consumer {
	k := &consumer{t: t, r: r, byEnd: map[pglogrepl.LSN][]int64{}, lastEnd: r.start.Confirmed, done: make(chan struct{})}
	go k.loop()
	return k
}

func (k *consumer) loop() {
	defer close(k.done)
	for {
		var batch []*Txn
		select {
		case batch = <-k.r.out:
		case err := <-k.r.done:
			k.r.done <- err
			return
		}
		for _, txn := range batch {
			k.take(txn)
		}
	}
}

func (k *consumer) take(txn *Txn) {
	defer txn.Release()
	rows, err := allRows(txn)
	var ids []int64
	for _, row := range rows {
		id, _ := strconv.ParseInt(row.New[0].Text, 10, 64)
		ids = append(ids, id)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case err != nil:
		k.bad = append(k.bad, fmt.Sprintf("each: %v", err))
	case txn.EndLSN <= k.lastEnd:
		k.redeliver++
		if first, ok := k.byEnd[txn.EndLSN]; !ok || !slices.Equal(first, ids) {
			k.bad = append(k.bad, fmt.Sprintf("transaction ending at %s (ids %v) came after %s and is not a re-delivery of one seen (%v)", txn.EndLSN, ids, k.lastEnd, first))
		}
	default:
		k.lastEnd = txn.EndLSN
		k.byEnd[txn.EndLSN] = ids
		k.ids = append(k.ids, ids...)
		k.r.c.Confirm(txn.EndLSN)
	}
}

func (k *consumer) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.ids)
}

// check compares what was delivered with what the table holds: each
// committed row exactly once, each writer's rows in commit order.
func (k *consumer) check(f *fixture) {
	t := k.t
	t.Helper()
	var want []int64
	eventually(t, 30*time.Second, "the table to be readable", func() bool {
		rows, err := f.db.Pool.Query(context.Background(), `SELECT id FROM t ORDER BY id`)
		if err != nil {
			return false
		}
		want = want[:0]
		for rows.Next() {
			var id int64
			rows.Scan(&id)
			want = append(want, id)
		}
		return rows.Err() == nil
	})
	eventually(t, 60*time.Second, fmt.Sprintf("all %d committed rows to be delivered", len(want)), func() bool { return k.count() >= len(want) })
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.bad) > 0 {
		t.Fatalf("%d bad deliveries, first: %s", len(k.bad), k.bad[0])
	}
	last := map[int64]int64{}
	for _, id := range k.ids {
		w := id / 1e9
		if id <= last[w] {
			t.Fatalf("writer %d: id %d delivered after %d (out of order, or twice)", w, id, last[w])
		}
		last[w] = id
	}
	got := slices.Sorted(slices.Values(k.ids))
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %d rows, the table has %d: they differ (first delivered %v, first in table %v)", len(got), len(want), got[:min(5, len(got))], want[:min(5, len(want))])
	}
}

// waitProgress waits until more rows than now were delivered.
func (k *consumer) waitProgress(t *testing.T, what string) {
	t.Helper()
	n := k.count()
	eventually(t, 60*time.Second, "delivery to go on after "+what, func() bool { return k.count() > n+5 })
}

func (k *consumer) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-k.r.done:
		k.r.done <- err
		t.Fatalf("Run returned: %v", err)
	default:
	}
}

// Crash restarts (pg_ctl -m immediate) and pg_terminate_backend of the
// walsender while two writers commit: Run never returns, and every
// committed transaction is delivered once past the confirmed position, in
// order.
func TestFaultsWhileTransactionsFlow(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id bigint PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	h, logs := observedHealth()
	f.cfg.Health = h
	c, st := f.open()
	r := run(t, c, st, 4)
	k := consume(t, r)
	stopWriters := startWriters(t, f, 2)
	k.waitProgress(t, "the start")

	cluster := f.db.Cluster
	for i := range 3 {
		cluster.Stop() // -m immediate: a crash
		time.Sleep(time.Duration(200+300*i) * time.Millisecond)
		if err := cluster.Restart(); err != nil {
			t.Fatal(err)
		}
		f.db.Pool.Reset()
		k.waitProgress(t, fmt.Sprintf("crash restart %d", i+1))
		k.running(t)
	}
	for i := range 3 {
		var pid int
		eventually(t, 30*time.Second, "the walsender", func() bool {
			f.db.Pool.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&pid)
			return pid != 0
		})
		f.db.Exec(t, `SELECT pg_terminate_backend($1)`, pid)
		k.waitProgress(t, fmt.Sprintf("killing walsender %d", i+1))
		k.running(t)
	}
	stopWriters()
	k.check(f)
	k.running(t)
	if n := c.Reconnects(); n < 6 {
		t.Fatalf("%d reconnects counted, want at least 6", n)
	}
	if d, why := h.Degraded(); d {
		t.Fatalf("still degraded after the faults: %s", why)
	}
	if n := logs.FilterMessage("capture recovered").Len(); n < 6 {
		t.Fatalf("%d recoveries logged, want one per fault (6)", n)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("%d rows delivered, %d transactions re-delivered, %d reconnects", len(k.ids), k.redeliver, c.Reconnects())
}

// A server that stays down (10 s; 60 s with FLUSSO_LONG_OUTAGE=1) and comes
// back: Run waits it out with a bounded backoff, the outage is one WARN and
// one INFO with its length (the capture itself logs no WARN per attempt),
// and streaming resumes.
func TestServerDownThenBack(t *testing.T) {
	down := 10 * time.Second
	if os.Getenv("FLUSSO_LONG_OUTAGE") != "" {
		down = 60 * time.Second
	}
	f := newFixture(t, `CREATE TABLE t (id bigint PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	h, logs := observedHealth()
	var retries atomic.Int64
	h.OnRetry = func(string, fault.Class) { retries.Add(1) }
	f.cfg.Health = h
	own, ownLogs := observer.New(zap.WarnLevel)
	c := New(f.cfg, zap.New(own))
	st, err := c.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	a := r.next(10 * time.Second)
	c.Confirm(a.EndLSN)
	a.Release()

	f.db.Cluster.Stop()
	went := time.Now()
	eventually(t, 10*time.Second, "the capture to report the outage", func() bool { d, _ := h.Degraded(); return d })
	for time.Since(went) < down {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned while the server was down: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := f.db.Cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	f.db.Pool.Reset()
	f.db.Exec(t, `INSERT INTO t VALUES (2)`)
	// Backoff at most 30 s after the server is back, plus the reconnect.
	for {
		txn := r.next(45 * time.Second)
		text := txnText(t, txn)
		txn.Release()
		if slices.Equal(text, []string{"I public.t new[2]"}) {
			break
		}
		if !slices.Equal(text, []string{"I public.t new[1]"}) {
			t.Fatalf("unexpected transaction %q", text)
		}
	}
	eventually(t, 10*time.Second, "the outage to end", func() bool { d, _ := h.Degraded(); return !d })
	if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != 1 {
		t.Fatalf("%d WARN lines for one outage, want 1: %v", n, logs.All())
	}
	rec := logs.FilterMessage("capture recovered").All()
	if len(rec) != 1 {
		t.Fatalf("%d recovery lines, want 1: %v", len(rec), logs.All())
	}
	if outage, ok := rec[0].ContextMap()["outage"].(time.Duration); !ok || outage < down {
		t.Fatalf("recovery line gives the outage as %v, want at least %s", rec[0].ContextMap()["outage"], down)
	}
	if n := retries.Load(); n < 3 {
		t.Fatalf("%d retries counted over %s, want several", n, down)
	}
	if n := ownLogs.Len(); n != 0 {
		t.Fatalf("the capture logged %d WARN lines of its own (want none: the Health logs the episode): %v", n, ownLogs.All())
	}
}

// Two instances on one slot, each with the state dir that records it (one
// after the other, as in a rolling deploy): the second waits as a hot
// standby with one INFO line and takes over within seconds when the first
// is SIGKILLed; a third takes over from the second when it is closed.
func TestStandbyTakesOver(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id bigint PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c0, _ := f.open() // creates the slot and the identity record
	c0.Close()
	first := startCaptureProcess(t, f)
	activePID := func() (p int) {
		f.db.Pool.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&p)
		return p
	}
	eventually(t, 30*time.Second, "the first instance to stream", func() bool { return activePID() != 0 })
	firstPID := activePID()

	h, logs := observedHealth()
	f.cfg.Health = h
	second, st := f.open() // not refused: the state dir is its own
	r2 := run(t, second, st, 4)
	want := fmt.Sprintf("slot %s is in use by another client (server pid %d); waiting to take over", f.cfg.Slot, firstPID)
	eventually(t, 10*time.Second, "the second instance to wait", func() bool {
		d, why := h.Degraded()
		return d && strings.Contains(why, want)
	})
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	first.waitLine(t, "txn")
	r2.none(3 * time.Second) // several polls: the first still has the slot
	if n := logs.FilterMessage(want).Len(); n != 1 {
		t.Fatalf("%d lines %q, want exactly 1: %v", n, want, logs.All())
	}
	eventually(t, 10*time.Second, "the first instance's confirm", func() bool { return f.slotConfirmed() >= first.lastEnd() })

	first.kill(t)
	killed := time.Now()
	f.db.Exec(t, `INSERT INTO t VALUES (2)`)
	txn := r2.next(20 * time.Second)
	equal(t, txnText(t, txn), []string{"I public.t new[2]"})
	second.Confirm(txn.EndLSN)
	txn.Release()
	if d := time.Since(killed); d > 10*time.Second {
		t.Fatalf("the standby took over %s after the first died", d)
	}
	eventually(t, 10*time.Second, "the wait to end", func() bool { d, _ := h.Degraded(); return !d })
	if logs.FilterMessage("capture is no longer waiting").Len() != 1 {
		t.Fatalf("no end of the wait logged: %v", logs.All())
	}
	eventually(t, 10*time.Second, "the second instance's confirm", func() bool { return f.slotConfirmed() >= txn.EndLSN })

	// A third instance waits behind the second, and takes over when the
	// second is closed.
	h3, _ := observedHealth()
	f.cfg.Health = h3
	third, st3 := f.open()
	r3 := run(t, third, st3, 4)
	eventually(t, 10*time.Second, "the third instance to wait", func() bool { d, _ := h3.Degraded(); return d })
	if err := r2.stop(); err != nil {
		t.Fatalf("second run: %v", err)
	}
	second.Close()
	closed := time.Now()
	f.db.Exec(t, `INSERT INTO t VALUES (3)`)
	txn = r3.next(20 * time.Second)
	equal(t, txnText(t, txn), []string{"I public.t new[3]"})
	txn.Release()
	if d := time.Since(closed); d > 10*time.Second {
		t.Fatalf("the standby took over %s after the first was closed", d)
	}
}

// A fresh instance whose state dir has no record of a slot another client
// streams from is refused, naming the holder: taking over would skip the
// backfill that state dir never had.
func TestForeignActiveSlotRefused(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id bigint PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	run(t, c, st, 4)
	eventually(t, 10*time.Second, "the first instance to stream", func() bool {
		var p int
		f.db.Pool.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&p)
		return p != 0
	})
	other := f.cfg
	other.Store = stateIn(t.TempDir(), f.cfg.Slot)
	_, err := New(other, testLogger(t)).Open(context.Background())
	if !errors.Is(err, ErrSlotUnknown) || !strings.Contains(err.Error(), "in use by another client (server pid") {
		t.Fatalf("open with a foreign state dir while the slot streams: %v", err)
	}
}
