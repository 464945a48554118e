package provision

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/keymap"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// holdSlot streams from the fixture's slot on a replication connection
// until the test ends, and returns the walsender's pid.
func holdSlot(t *testing.T, f *fixture) int32 {
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(f.db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("replication", "database")
	u.RawQuery = q.Encode()
	conn, err := pgconn.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	err = pglogrepl.StartReplication(ctx, conn, f.slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + f.pub + "'"}})
	if err != nil {
		t.Fatalf("start replication: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var pid *int32
		f.db.Pool.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", f.slot).Scan(&pid)
		if pid != nil {
			return *pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the slot never became active")
	return 0
}

func (f *fixture) slotExists(t *testing.T) bool {
	var ok bool
	f.db.Pool.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", f.slot).Scan(&ok)
	return ok
}

func (f *fixture) pubExists(t *testing.T) bool {
	var ok bool
	f.db.Pool.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", f.pub).Scan(&ok)
	return ok
}

func (f *fixture) planDrop(t *testing.T) *DropPlan {
	t.Helper()
	p, err := PlanDrop(context.Background(), f.conn, f.cfg, f.store)
	if err != nil {
		t.Fatalf("plan drop: %v", err)
	}
	return p
}

// A publication flusso-pg created is dropped with the slot and the state
// records; afterwards there is nothing to drop.
func TestDropCreatedPublication(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "REPLICATION", owns, "auto", blogIndexes)
	ctx := context.Background()
	if _, err := Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log); err != nil {
		t.Fatal(err)
	}
	f.db.Exec(t, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", f.slot))
	for _, r := range []string{state.IdentityRecord, state.BackfillRecord} {
		if err := f.store.Save(r, map[string]string{"x": "y"}); err != nil {
			t.Fatal(err)
		}
	}

	kmDir := keymap.Dir(f.store.Dir, f.store.Slot)
	if err := os.MkdirAll(kmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := f.planDrop(t)
	if p.Nothing() || p.Slot == nil || !p.PublicationCreated || len(p.Records) != 4 || p.Records[3] != "keymap" {
		t.Fatalf("plan %+v", p)
	}
	desc := strings.Join(p.Describe(), "\n")
	for _, s := range []string{"drop replication slot " + f.slot, "drop publication " + f.pub + " (flusso-pg created it)", "remove the slot's state records (identity"} {
		if !strings.Contains(desc, s) {
			t.Errorf("description lacks %q:\n%s", s, desc)
		}
	}
	done, err := Drop(ctx, f.conn, p, f.store, f.log)
	if err != nil {
		t.Fatalf("drop: %v", err)
	}
	if f.slotExists(t) || f.pubExists(t) {
		t.Fatalf("slot or publication still there after drop: %q", done)
	}
	for _, r := range []string{state.IdentityRecord, state.BackfillRecord, state.PublicationRecord} {
		if ok, _ := f.store.Load(r, &map[string]any{}); ok {
			t.Errorf("state record %s still there", r)
		}
	}
	if _, err := os.Stat(kmDir); !os.IsNotExist(err) {
		t.Errorf("the key map %s is still there after drop: %v", kmDir, err)
	}
	if p := f.planDrop(t); !p.Nothing() {
		t.Fatalf("after drop, plan %+v is not empty", p)
	}
}

// A publication flusso-pg did not create is kept; the slot is dropped.
func TestDropKeepsForeignPublication(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "REPLICATION", owns, "auto", blogIndexes)
	f.db.Exec(t, fmt.Sprintf("CREATE PUBLICATION %[1]s FOR TABLE posts; ALTER PUBLICATION %[1]s OWNER TO %[2]s", f.pub, f.role))
	f.db.Exec(t, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", f.slot))
	ctx := context.Background()
	// auto extends it: recorded as not created.
	if _, err := Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log); err != nil {
		t.Fatal(err)
	}
	p := f.planDrop(t)
	if p.PublicationCreated || !p.PublicationExists {
		t.Fatalf("plan %+v", p)
	}
	if desc := strings.Join(p.Describe(), "\n"); !strings.Contains(desc, "keep publication "+f.pub+": flusso-pg did not create it (drop it yourself with DROP PUBLICATION "+f.pub+";)") {
		t.Fatalf("description:\n%s", desc)
	}
	done, err := Drop(ctx, f.conn, p, f.store, f.log)
	if err != nil {
		t.Fatal(err)
	}
	if f.slotExists(t) || !f.pubExists(t) {
		t.Fatalf("want slot dropped and publication kept: %q", done)
	}
	if !strings.Contains(strings.Join(done, "\n"), "kept publication "+f.pub) {
		t.Fatalf("done %q does not say the publication was kept", done)
	}
	if p := f.planDrop(t); !p.Nothing() {
		t.Fatalf("plan %+v", p)
	}
}

// An active slot is not dropped: the error names the process.
func TestDropRefusesActiveSlot(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "REPLICATION", owns, "auto", blogIndexes)
	ctx := context.Background()
	if _, err := Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log); err != nil {
		t.Fatal(err)
	}
	f.db.Exec(t, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", f.slot))
	pid := holdSlot(t, f)
	p := f.planDrop(t)
	_, err := Drop(ctx, f.conn, p, f.store, f.log)
	if !errors.Is(err, ErrSlotActive) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", pid)) ||
		!strings.Contains(err.Error(), fmt.Sprintf("SELECT pg_terminate_backend(%d);", pid)) {
		t.Fatalf("drop of an active slot: %v", err)
	}
	if !f.slotExists(t) || !f.pubExists(t) {
		t.Fatal("a refused drop removed something")
	}
	var rec state.Publication
	if ok, _ := f.store.Load(state.PublicationRecord, &rec); !ok {
		t.Fatal("a refused drop removed the publication record")
	}
}

// A slot that fell further behind than max_slot_wal_keep_size is
// invalidated at a checkpoint: check fails it with the way out, and drop
// still removes it. A cluster of its own, so the small limit touches no
// other test.
func TestSlotInvalidated(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	c, err := pgtest.Start(pgtest.Options{Settings: []string{"max_slot_wal_keep_size = 1MB", "max_wal_size = 32MB", "min_wal_size = 32MB"}})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { stopCluster(c) })
	db := c.NewDB(t)
	db.Exec(t, blogSchema)
	cfg, err := config.Parse([]byte(fmt.Sprintf("source:\n  dsn: %s\n  slot: lagging\n  publication: p\n%s", db.DSN, blogIndexes)))
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "SELECT pg_create_logical_replication_slot('lagging', 'pgoutput')")
	ctx := context.Background()
	r, err := Inspect(ctx, db.Pool, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want(t, r, CheckWalKeep, "", OK, "max_slot_wal_keep_size is 1MB", "")
	want(t, r, CheckSlot, "", OK, "wal_status reserved", "")

	for i := 0; i < 4; i++ {
		db.Exec(t, "INSERT INTO posts VALUES ($1, 1, 'x')", i)
		db.Exec(t, "SELECT pg_switch_wal()")
	}
	db.Exec(t, "CHECKPOINT")
	r, err = Inspect(ctx, db.Pool, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := "slot lagging is invalidated (the WAL it needs is gone (wal_status lost))"
	if r.Version >= 17 {
		msg = "slot lagging is invalidated (invalidation reason: wal_removed)"
	}
	want(t, r, CheckSlot, "", Fail, msg, "flusso-pg follow --resync  -- a fresh slot and a full backfill; or: flusso-pg drop, then flusso-pg follow")

	store := state.New(t.TempDir(), "lagging")
	p, err := PlanDrop(ctx, db.Pool, cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Drop(ctx, db.Pool, p, store, zap.NewNop()); err != nil {
		t.Fatalf("drop an invalidated slot: %v", err)
	}
	if p, _ := PlanDrop(ctx, db.Pool, cfg, store); !p.Nothing() {
		t.Fatalf("after drop: %+v", p)
	}
}
