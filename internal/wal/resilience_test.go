package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// A server restart mid-stream: capture reconnects with backoff, resumes
// from the confirmed position and delivers the unconfirmed commit again.
func TestServerRestart(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	a := r.next(10 * time.Second)
	c.Confirm(a.EndLSN)
	a.Release()
	eventually(t, 10*time.Second, "confirm of the first commit", func() bool { return f.slotConfirmed() >= a.EndLSN })
	f.db.Exec(t, `INSERT INTO t VALUES (2)`)
	b := r.next(10 * time.Second)
	b.Release() // handed out, never confirmed

	cluster := f.db.Cluster
	if err := cluster.StopFast(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	f.db.Pool.Reset()

	// The replayed commit comes again (and, if the server had not saved the
	// slot's position, the confirmed one may come too: at-least-once).
	for {
		txn := r.next(30 * time.Second)
		if txn.EndLSN > b.EndLSN {
			t.Fatalf("got commit %s before the replay of %s", txn.EndLSN, b.EndLSN)
		}
		done := txn.EndLSN == b.EndLSN
		if done {
			equal(t, txnText(t, txn), []string{"I public.t new[2]"})
		}
		txn.Release()
		if done {
			break
		}
	}
	if c.Reconnects() == 0 {
		t.Fatal("no reconnect counted")
	}
	f.db.Exec(t, `INSERT INTO t VALUES (3)`)
	equal(t, txnText(t, r.next(10*time.Second)), []string{"I public.t new[3]"})
}

// The state dir ties progress to one server: another system identifier is
// refused with ErrServerChanged.
func TestWrongServer(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	if err := f.cfg.Store.Save(state.IdentityRecord, state.Identity{SystemID: "12345", Slot: f.cfg.Slot}); err != nil {
		t.Fatal(err)
	}
	_, err := New(f.cfg, testLogger(t)).Open(context.Background())
	if !errors.Is(err, ErrServerChanged) {
		t.Fatalf("open: %v, want ErrServerChanged", err)
	}
}

// A slot dropped behind our back, or one the state dir does not know,
// stops capture; --resync (Config.Resync) starts over with a new slot.
func TestSlotMissingUnknownResync(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	c.Close()
	if dropped, err := DropSlot(context.Background(), f.db.DSN, f.cfg.Slot); err != nil || !dropped {
		t.Fatalf("DropSlot = %v, %v", dropped, err)
	}
	_, err := New(f.cfg, testLogger(t)).Open(context.Background())
	if !errors.Is(err, ErrSlotMissing) {
		t.Fatalf("open after the slot was dropped: %v, want ErrSlotMissing", err)
	}

	other := f.cfg
	other.Store = state.New(t.TempDir(), f.cfg.Slot)
	f.db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, f.cfg.Slot)
	_, err = New(other, testLogger(t)).Open(context.Background())
	if !errors.Is(err, ErrSlotUnknown) {
		t.Fatalf("open with a slot the state dir does not know: %v, want ErrSlotUnknown", err)
	}

	f.cfg.Resync = true
	c2, st2 := f.open()
	if !st2.Created || st2.ConsistentPoint <= st.ConsistentPoint {
		t.Fatalf("resync start %+v, want a new slot after %s", st2, st.ConsistentPoint)
	}
	c2.Close()
	if dropped, err := DropSlot(context.Background(), f.db.DSN, "no_such_slot"); err != nil || dropped {
		t.Fatalf("DropSlot of a missing slot = %v, %v", dropped, err)
	}
}

// A slot the server invalidated (wal_status 'lost', PG13+) is refused with
// ErrSlotLost.
func TestSlotLost(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, pad text)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, _ := f.open()
	c.Close()
	f.db.Exec(t, `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	f.db.Exec(t, `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		f.db.Exec(t, `ALTER SYSTEM RESET max_slot_wal_keep_size`)
		f.db.Exec(t, `SELECT pg_reload_conf()`)
	})
	eventually(t, 30*time.Second, "the slot to be lost", func() bool {
		f.db.Exec(t, `INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 2000) g ON CONFLICT DO NOTHING; DELETE FROM t;`)
		f.db.Exec(t, `SELECT pg_switch_wal()`)
		f.db.Exec(t, `CHECKPOINT`)
		var status string
		f.db.Pool.QueryRow(context.Background(), `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&status)
		return status == "lost"
	})
	_, err := New(f.cfg, testLogger(t)).Open(context.Background())
	if !errors.Is(err, ErrSlotLost) {
		t.Fatalf("open: %v, want ErrSlotLost", err)
	}
}

// A dropped publication stops Run with ErrPublicationMissing, and Open
// refuses to start without it.
func TestPublicationDropped(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)
	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	r.next(10 * time.Second).Release()
	f.db.Exec(t, `DROP PUBLICATION pub`)
	f.db.Exec(t, `INSERT INTO t VALUES (2)`)
	if err := r.runErr(20 * time.Second); !errors.Is(err, ErrPublicationMissing) {
		t.Fatalf("run: %v, want ErrPublicationMissing", err)
	}
	_, err := New(f.cfg, testLogger(t)).Open(context.Background())
	if !errors.Is(err, ErrPublicationMissing) {
		t.Fatalf("open: %v, want ErrPublicationMissing", err)
	}
}

// With nothing pending, writes to tables outside the publication still move
// the slot (no WAL is retained); with a transaction handed out and not
// confirmed, the slot stays before it.
func TestIdleAdvance(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int)`, "t",
		map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)

	f.db.Exec(t, `INSERT INTO u VALUES (1)`)
	target := currentLSN(t, f.db)
	eventually(t, 20*time.Second, "the idle slot to advance", func() bool {
		f.db.Exec(t, `INSERT INTO u VALUES (1)`) // keeps the walsender busy enough to ping
		return f.slotConfirmed() >= target
	})

	f.db.Exec(t, `INSERT INTO t VALUES (1)`)
	txn := r.next(10 * time.Second)
	defer txn.Release()
	for range 10 {
		f.db.Exec(t, `INSERT INTO u VALUES (2)`)
		time.Sleep(100 * time.Millisecond)
	}
	if got := f.slotConfirmed(); got >= txn.EndLSN {
		t.Fatalf("confirmed_flush_lsn %s passed the unconfirmed commit %s", got, txn.EndLSN)
	}
	c.Confirm(txn.EndLSN)
	target = currentLSN(t, f.db)
	eventually(t, 20*time.Second, "the slot to advance after the confirm", func() bool {
		f.db.Exec(t, `INSERT INTO u VALUES (3)`)
		return f.slotConfirmed() >= target
	})
}

// Under a steady workload with a consumer that confirms late, the slot's
// confirmed_flush_lsn is always a position the consumer confirmed.
func TestConfirmedNeverPassesWatermark(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st := f.open()
	r := run(t, c, st, 4)

	var (
		mu        sync.Mutex
		confirmed = map[pglogrepl.LSN]bool{st.Confirmed: true}
		high      atomic.Uint64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		bad       atomic.Value
	)
	high.Store(uint64(st.Confirmed))
	f.db.Exec(t, `INSERT INTO t VALUES (0)`)
	first := r.next(10 * time.Second)
	held := []*Txn{first}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			slot := f.slotConfirmed()
			mu.Lock()
			ok := confirmed[slot] && uint64(slot) <= high.Load()
			mu.Unlock()
			if !ok {
				bad.Store(slot)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg.Go(func() {
		for i := 1; i <= 300 && ctx.Err() == nil; i++ {
			f.db.Pool.Exec(ctx, `INSERT INTO t VALUES ($1)`, i)
		}
	})
	for n := 1; n <= 300; n++ {
		txn := r.next(20 * time.Second)
		held = append(held, txn)
		if len(held) > 5 {
			done := held[0]
			held = held[1:]
			mu.Lock()
			confirmed[done.EndLSN] = true
			mu.Unlock()
			high.Store(uint64(done.EndLSN))
			c.Confirm(done.EndLSN)
			done.Release()
		}
	}
	close(stop)
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatalf("confirmed_flush_lsn %s is not a position the consumer confirmed", v)
	}
	for _, h := range held {
		h.Release()
	}
}

// Bad credentials fail Open at once (the operator is starting it), as an
// Auth error: Run would retry it for fault.DefaultAuthGrace.
func TestBadRole(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	f.cfg.DSN = f.db.Cluster.DSNAs(f.db.Name, "no_such_role", "x")
	_, err := New(f.cfg, testLogger(t)).Open(context.Background())
	if err == nil || classify(err) != fault.Auth {
		t.Fatalf("open as a missing role: %v (class %s)", err, classify(err))
	}
}

// A consumer that stops reading does not make the walsender time out:
// status updates keep going while Run waits to hand a transaction over.
func TestSlowConsumerKeepsConnection(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	f.db.Exec(t, `ALTER SYSTEM SET wal_sender_timeout = '1s'`)
	f.db.Exec(t, `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		f.db.Exec(t, `ALTER SYSTEM RESET wal_sender_timeout`)
		f.db.Exec(t, `SELECT pg_reload_conf()`)
	})
	c, st := f.open()
	r := run(t, c, st, 0) // unbuffered: Run blocks on the first transaction
	for i := range 5 {
		f.db.Exec(t, `INSERT INTO t VALUES ($1)`, i)
	}
	pid := func() (p int) {
		f.db.Pool.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&p)
		return p
	}
	eventually(t, 10*time.Second, "the walsender", func() bool { return pid() != 0 })
	before := pid()
	time.Sleep(4 * time.Second) // four walsender timeouts without reading
	for i := range 5 {
		txn := r.next(10 * time.Second)
		equal(t, txnText(t, txn), []string{fmt.Sprintf("I public.t new[%d]", i)})
		txn.Release()
	}
	time.Sleep(500 * time.Millisecond)
	if after, n := pid(), c.Reconnects(); after != before || n != 0 {
		t.Fatalf("walsender pid %d → %d, %d reconnects: it timed out while the consumer was not reading", before, after, n)
	}
}

// Each fault class, as the capture sees it (wrapped the way session and
// Run wrap it), is sorted as expected: the wal sentinels stop, whatever
// they wrap; server restarts, killed connections and a busy slot are
// retried; credentials are Auth (retried for a grace period).
func TestClassifyWhereCaptureSeesIt(t *testing.T) {
	pg := func(code, msg string) error { return &pgconn.PgError{Severity: "FATAL", Code: code, Message: msg} }
	start := func(err error) error { return fmt.Errorf("start replication: %w", classifyServer("s", err)) }
	c := New(Config{DSN: "postgres://u@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", Slot: "s"}, nil)
	_, dialErr := c.connect(context.Background())
	cases := []struct {
		name string
		err  error
		want fault.Class
	}{
		{"slot busy at START_REPLICATION", start(pg("55006", `replication slot "s" is active for PID 20544`)), fault.Transient},
		{"publication dropped", start(pg("42704", `publication "pub" does not exist`)), fault.Permanent},
		{"slot dropped", start(pg("42704", `replication slot "s" does not exist`)), fault.Permanent},
		{"slot invalidated", start(pg("55000", `can no longer get changes from replication slot "s": This slot has been invalidated`)), fault.Permanent},
		{"walsender terminated", classifyServer("s", pg("57P01", "terminating connection due to administrator command")), fault.Transient},
		{"server crashed", classifyServer("s", pg("57P02", "terminating connection because of crash of another server process")), fault.Transient},
		{"server starting up", fmt.Errorf("replication connect: %w", pg("57P03", "the database system is starting up")), fault.Transient},
		{"server refuses connections", fmt.Errorf("replication connect: %w", pg("53300", "sorry, too many clients already")), fault.Transient},
		{"connection refused", dialErr, fault.Transient},
		{"stream ended", errStreamEnded, fault.Transient},
		{"server stopping", errServerStopping, fault.Transient},
		{"status update on a dead socket", fmt.Errorf("send status update: %w", &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}), fault.Transient},
		{"read cut", fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF), fault.Transient},
		{"bad password", fmt.Errorf("replication connect: %w", pg("28P01", `password authentication failed for user "u"`)), fault.Auth},
		{"no replication privilege", fmt.Errorf("replication connect: %w", pg("42501", "permission denied to start WAL sender")), fault.Auth},
		{"another server", fmt.Errorf("state dir x: %w", ErrServerChanged), fault.Permanent},
		{"slot unknown", fmt.Errorf("slot s: %w", ErrSlotUnknown), fault.Permanent},
		{"decode", fmt.Errorf("public.t: %w", decodeErr("tuple is truncated")), fault.Permanent},
		{"column dropped", fmt.Errorf("table public.t, column %q: %w", "a", ErrColumnMissing), fault.Permanent},
		{"a sentinel wins over a transient mark", fault.MarkTransient(fmt.Errorf("x: %w", ErrSlotLost)), fault.Permanent},
		{"no such database", fmt.Errorf("replication connect: %w", pg("3D000", `database "x" does not exist`)), fault.Permanent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := classify(c.err); got != c.want {
				t.Fatalf("classify(%v) = %s, want %s", c.err, got, c.want)
			}
		})
	}
	var busy *slotBusyError
	if err := start(pg("55006", `replication slot "s" is active for PID 20544`)); !errors.As(err, &busy) || busy.pid != 20544 {
		t.Fatalf("busy slot: %v, want a slotBusyError naming pid 20544", err)
	}
}

// The retrier waits (one INFO) for a slot busy with another client, but
// treats it as a failure when the holder is our own last walsender; Auth
// errors stop after the grace period, permanent ones at once.
func TestRetrier(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := fault.NewHealth(zap.New(core))
	r := newRetrier(h, zap.NewNop(), "flusso_app")
	busy := classifyServer("flusso_app", &pgconn.PgError{Code: "55006", Message: `replication slot "flusso_app" is active for PID 20544`})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.failed(ctx, busy); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("busy slot: %v, want a wait (cut by ctx)", err)
	}
	want := "slot flusso_app is in use by another client (server pid 20544); waiting to take over"
	if d, why := h.Degraded(); !d || !strings.Contains(why, want) {
		t.Fatalf("health while waiting: %v %q", d, why)
	}
	if n := logs.FilterMessage(want).FilterLevelExact(zap.InfoLevel).Len(); n != 1 {
		t.Fatalf("%d INFO lines %q, want 1: %v", n, want, logs.All())
	}
	r.streaming()
	if d, _ := h.Degraded(); d {
		t.Fatal("still degraded after streaming")
	}

	// Our session streamed on walsender 20544, then broke; the new
	// connection (999) finds the slot still held by 20544, going away.
	r.current = 20544
	r.streaming()
	r.current = 999
	if err := r.failed(context.Background(), busy); err != nil {
		t.Fatalf("own walsender: %v", err)
	}
	if d, why := h.Degraded(); !d || strings.Contains(why, "waiting") {
		t.Fatalf("own walsender holding the slot is a failure, not a wait: %v %q", d, why)
	}
	r.streaming()

	auth := &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}
	if err := r.failed(context.Background(), auth); err != nil {
		t.Fatalf("first auth error: %v, want a retry", err)
	}
	r.authSince = time.Now().Add(-fault.DefaultAuthGrace - time.Second)
	if err := r.failed(context.Background(), auth); !errors.Is(err, auth) {
		t.Fatalf("auth error past the grace period: %v, want it returned", err)
	}
	if err := r.failed(context.Background(), fmt.Errorf("x: %w", ErrSlotMissing)); !errors.Is(err, ErrSlotMissing) {
		t.Fatalf("permanent: %v", err)
	}
}
