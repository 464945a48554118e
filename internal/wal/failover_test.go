package wal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

func TestFailoverWanted(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		version int
		standby bool
		want    bool
		err     string
	}{
		{"", 17, false, true, ""},
		{"auto", 18, false, true, ""},
		{"auto", 16, false, false, ""},
		{"auto", 17, true, false, ""},
		{"off", 17, false, false, ""},
		{"on", 17, false, true, ""},
		{"on", 16, false, false, "PostgreSQL 16 has no failover slots"},
		{"on", 17, true, false, "source.dsn is a standby"},
	} {
		got, err := failoverWanted(tc.mode, tc.version, tc.standby)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("failoverWanted(%q, %d, %v) = %v, %v; want %v, %q", tc.mode, tc.version, tc.standby, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrFailoverUnsupported) {
			t.Errorf("%v is not ErrFailoverUnsupported", err)
		}
	}
}

// slotFailover reads pg_replication_slots.failover (PostgreSQL 17+).
func (f *fixture) slotFailover() bool {
	f.t.Helper()
	var on bool
	err := f.db.Pool.QueryRow(context.Background(), `SELECT failover FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&on)
	if err != nil {
		f.t.Fatalf("slot failover: %v", err)
	}
	return on
}

// source.failover on every version of the matrix: from 17, auto makes a
// failover slot, and an existing slot is altered to one; before 17, auto
// makes a plain slot and on refuses with the reason.
func TestFailoverSlotCreatedAndAltered(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	version := f.db.Cluster.Version
	f.cfg.Failover = FailoverOn
	if version < 17 {
		c := New(f.cfg, testLogger(t))
		defer c.Close()
		_, err := c.Open(context.Background())
		if !errors.Is(err, ErrFailoverUnsupported) || !strings.Contains(err.Error(), fmt.Sprintf("PostgreSQL %d has no failover slots", version)) {
			t.Fatalf("open with failover on, PostgreSQL %d: %v, want the refusal naming the version", version, err)
		}
		f.cfg.Failover = FailoverAuto
		c2, _ := f.open()
		c2.Close()
		var n int
		if err := f.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, f.cfg.Slot).Scan(&n); err != nil || n != 1 {
			t.Fatalf("auto on PostgreSQL %d: %d slots (%v), want a plain slot", version, n, err)
		}
		return
	}
	f.cfg.Failover = FailoverOff
	c, _ := f.open()
	c.Close()
	if f.slotFailover() {
		t.Fatal("source.failover off made a failover slot")
	}
	f.cfg.Failover = FailoverAuto
	c, st := f.open()
	if st.Created || !f.slotFailover() {
		t.Fatalf("reopened with auto: created %v, failover %v; want the existing slot altered to a failover slot", st.Created, f.slotFailover())
	}
	c.Close()

	// A new slot with auto is a failover slot from the start, and its
	// exported snapshot still works.
	g := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, st = g.open()
	if !st.Created || st.SnapshotName == "" || !g.slotFailover() {
		t.Fatalf("new slot with auto: created %v, snapshot %q, failover %v", st.Created, st.SnapshotName, g.slotFailover())
	}
	c.Close()
}

// A timeline change with the slot gone is the clear stop, naming the
// failover and what to do, never ErrServerChanged or a silent skip.
func TestTimelineChangeWithoutSlot(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, _ := f.open()
	c.Close()
	var id state.Identity
	if ok, err := f.cfg.Store.Load(state.IdentityRecord, &id); !ok || err != nil {
		t.Fatalf("identity: %v %v", ok, err)
	}
	// As if the progress had been made on the timeline before a promotion,
	// on a server that did not keep the slot.
	id.Timeline--
	if id.Timeline == 0 {
		id.Timeline = 7
	}
	if err := f.cfg.Store.Save(state.IdentityRecord, id); err != nil {
		t.Fatal(err)
	}
	if _, err := DropSlot(context.Background(), f.db.DSN, f.cfg.Slot); err != nil {
		t.Fatal(err)
	}
	c2 := New(f.cfg, testLogger(t))
	defer c2.Close()
	_, err := c2.Open(context.Background())
	if !errors.Is(err, ErrSlotNotSurvived) || fault.Classify(err) != fault.Permanent {
		t.Fatalf("open after a timeline change without the slot: %v, want ErrSlotNotSurvived (fatal)", err)
	}
	for _, want := range []string{"a failover", "--resync", "sync_replication_slots", "PostgreSQL 16 and older"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
}

// A timeline change with the slot in place is accepted and recorded.
func TestTimelineChangeRecorded(t *testing.T) {
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY)`, "t", map[change.Table][]string{tbl("t"): {"id"}})
	c, _ := f.open()
	c.Close()
	var id state.Identity
	f.cfg.Store.Load(state.IdentityRecord, &id)
	real := id.Timeline
	id.Timeline = real + 5 // any other timeline
	f.cfg.Store.Save(state.IdentityRecord, id)
	var calls []string
	f.cfg.OnFailover = func(old, now int32) { calls = append(calls, fmt.Sprintf("%d->%d", old, now)) }
	c, st := f.open()
	defer c.Close()
	if st.Created || c.Timeline() != real || c.Failovers() != 1 || len(calls) != 1 {
		t.Fatalf("created %v, timeline %d (want %d), failovers %d, callbacks %v", st.Created, c.Timeline(), real, c.Failovers(), calls)
	}
	f.cfg.Store.Load(state.IdentityRecord, &id)
	if id.Timeline != real {
		t.Fatalf("identity records timeline %d, want %d", id.Timeline, real)
	}
}

// The capture follows a promotion: a multi-host DSN with
// target_session_attrs=primary, the primary stopped mid-stream, the standby
// promoted; the capture reconnects to it, records the new timeline, and
// delivers every transaction committed after the last one confirmed, on
// PostgreSQL 17+. Before 17 the slot is not on the standby: the clear stop.
func TestCaptureFollowsPromotion(t *testing.T) {
	p := pgtest.NewPair(t, pgtest.PairOptions{BinDir: pgtest.PairBinDir(t, 17, 18)})
	db := p.Primary.NewDB(t)
	db.Exec(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t`)
	f := &fixture{t: t, db: db, cfg: Config{
		DSN: p.MultiHostDSN(db.Name), Slot: "s_ha", Publication: "pub",
		Tables: map[change.Table][]string{tbl("t"): {"id"}}, MemoryBudget: 1 << 20, TempDir: t.TempDir(),
		StatusInterval: 100 * time.Millisecond, Store: state.New(t.TempDir(), "s_ha"),
	}}
	c, st := f.open()
	tl := c.Timeline()
	r := run(t, c, st, 16)
	for i := 1; i <= 5; i++ {
		db.Exec(t, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i))
	}
	var last *Txn
	for i := 1; i <= 5; i++ {
		txn := r.next(20 * time.Second)
		equal(t, txnText(t, txn), []string{fmt.Sprintf("I public.t new[%d]", i)})
		c.Confirm(txn.EndLSN)
		last = txn
	}
	confirmed := last.EndLSN
	last.Release()
	if p.Primary.Version >= 17 {
		eventually(t, 30*time.Second, "the slot confirmed on the primary", func() bool { return f.slotConfirmed() >= confirmed })
		p.WaitSlotSynced(t, "s_ha")
	} else {
		p.WaitReplayed(t)
	}
	p.StopPrimary()
	if err := p.Promote(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.Standby.DSN(db.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := 6; i <= 8; i++ {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if p.Primary.Version < 17 {
		err := r.runErr(90 * time.Second)
		if !errors.Is(err, ErrSlotNotSurvived) || !strings.Contains(err.Error(), "PostgreSQL 16 and older") {
			t.Fatalf("PostgreSQL %d after a promotion: %v, want the clear stop (ErrSlotNotSurvived)", p.Primary.Version, err)
		}
		return
	}
	for i := 6; i <= 8; i++ {
		txn := r.next(90 * time.Second)
		equal(t, txnText(t, txn), []string{fmt.Sprintf("I public.t new[%d]", i)})
		c.Confirm(txn.EndLSN)
		txn.Release()
	}
	r.none(300 * time.Millisecond)
	if c.Timeline() <= tl || c.Failovers() != 1 {
		t.Fatalf("timeline %d (was %d), failovers %d: want the new timeline recorded once", c.Timeline(), tl, c.Failovers())
	}
	var id state.Identity
	f.cfg.Store.Load(state.IdentityRecord, &id)
	if id.Timeline != c.Timeline() {
		t.Fatalf("identity timeline %d, capture on %d", id.Timeline, c.Timeline())
	}
}

// On a reconnect, a slot confirmed past what we confirmed is refused: the
// server would start from its position and skip the transactions between.
func TestSlotAheadRefused(t *testing.T) {
	c := New(Config{Slot: "s"}, nil)
	c.wm.init(0x1000)
	if err := c.notAhead(&slotInfo{confirmed: 0x1000}); err != nil {
		t.Fatalf("slot at our position: %v", err)
	}
	if err := c.notAhead(&slotInfo{confirmed: 0x800}); err != nil {
		t.Fatalf("slot behind us (a synced copy): %v", err)
	}
	err := c.notAhead(&slotInfo{confirmed: 0x2000})
	if !errors.Is(err, ErrSlotAhead) || fault.Classify(err) != fault.Permanent || !strings.Contains(err.Error(), "0/2000") || !strings.Contains(err.Error(), "0/1000") {
		t.Fatalf("slot ahead: %v, want ErrSlotAhead naming both positions", err)
	}
}
