package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// haConfig is a config for the blog indexes with source.dsn = dsn.
func haConfig(t *testing.T, dsn, primaryDSN, name string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf("source:\n  dsn: %s\n  slot: %s\n  publication: %s\n", dsn, name, name)
	if primaryDSN != "" {
		yaml += "  primary_dsn: " + primaryDSN + "\n"
	}
	cfg, err := config.Parse([]byte(yaml + blogIndexes))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// standbyFinding returns the one standby finding whose message contains s.
func standbyFinding(t *testing.T, r *Report, s string) Finding {
	t.Helper()
	var out []Finding
	for _, f := range r.Find(CheckStandby, "") {
		if strings.Contains(f.Message, s) {
			out = append(out, f)
		}
	}
	if len(out) != 1 {
		t.Fatalf("want one standby finding containing %q, got %d:\n%s", s, len(out), dump(r))
	}
	return out[0]
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// check --standby on a pair: from 17 every setting the slot sync needs is
// verified, and the slot is reported missing, then synced; a standby
// without sync_replication_slots fails with the fix. Before 17 the standby
// is refused with the reason.
func TestCheckStandby(t *testing.T) {
	p := pgtest.NewPair(t, pgtest.PairOptions{BinDir: pgtest.PairBinDir(t, 17, 18)})
	db := p.Primary.NewDB(t)
	db.Exec(t, blogSchema+"CREATE PUBLICATION flusso_ha FOR TABLE authors, posts, comments, tags, post_tags")
	cfg := haConfig(t, db.DSN, "", "flusso_ha")
	primary := connect(t, db.DSN)
	ctx := context.Background()
	p.WaitReplayed(t)
	standbyDSN := p.StandbyDSN(db.Name)

	if p.Primary.Version < 17 {
		r := &Report{Version: p.Primary.Version, Ready: true}
		InspectStandby(ctx, r, primary, cfg, standbyDSN)
		f := standbyFinding(t, r, "does not synchronize replication slots")
		if f.Status != Fail || r.Ready || !strings.Contains(f.Message, fmt.Sprintf("PostgreSQL %d", p.Primary.Version)) {
			t.Fatalf("PostgreSQL %d standby: %+v, want the refusal naming the version", p.Primary.Version, f)
		}
		return
	}

	r, err := Inspect(ctx, primary, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want(t, r, CheckSyncStandbySlots, "", OK, pgtest.PhysicalSlot, "-")
	want(t, r, CheckFailoverSlot, "", OK, "will be created as a failover slot", "-")
	InspectStandby(ctx, r, primary, cfg, standbyDSN)
	for _, s := range []string{"sync_replication_slots is on", "hot_standby_feedback is on", "primary_slot_name is " + pgtest.PhysicalSlot, "primary_conninfo names a dbname"} {
		if f := standbyFinding(t, r, s); f.Status != OK {
			t.Errorf("%s: %+v", s, f)
		}
	}
	standbyFinding(t, r, "does not exist on the primary yet")

	// A plain slot: check says follow will make it a failover slot, and the
	// standby does not have it.
	db.Exec(t, `SELECT pg_create_logical_replication_slot('flusso_ha', 'pgoutput')`)
	r, err = Inspect(ctx, primary, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want(t, r, CheckFailoverSlot, "", Warn, "not a failover slot yet", "-")
	InspectStandby(ctx, r, primary, cfg, standbyDSN)
	if f := standbyFinding(t, r, "is not on the standby"); f.Status != Fail || !strings.Contains(f.Fix, "FAILOVER true") {
		t.Fatalf("slot missing on the standby: %+v", f)
	}

	// As a failover slot that moves, it is synced.
	db.Exec(t, `SELECT pg_drop_replication_slot('flusso_ha'); SELECT pg_create_logical_replication_slot('flusso_ha', 'pgoutput', false, false, true)`)
	deadline := time.Now().Add(90 * time.Second)
	for {
		db.Exec(t, `INSERT INTO tags VALUES ((SELECT coalesce(max(id), 0) + 1 FROM tags), 'x'); SELECT pg_replication_slot_advance('flusso_ha', pg_current_wal_lsn())`)
		r = &Report{Version: p.Primary.Version, Ready: true}
		InspectStandby(ctx, r, primary, cfg, standbyDSN)
		if f := r.Find(CheckStandby, ""); strings.Contains(f[len(f)-1].Message, "is synced") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot was never reported synced:\n%s", dump(r))
		}
		time.Sleep(time.Second)
	}

	// A standby that does not synchronize slots.
	standby := connect(t, standbyDSN)
	if _, err := standby.Exec(ctx, `ALTER SYSTEM SET sync_replication_slots = off`); err != nil {
		t.Fatal(err)
	}
	if _, err := standby.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		var v string
		standby.QueryRow(ctx, `SELECT setting FROM pg_settings WHERE name = 'sync_replication_slots'`).Scan(&v)
		return v == "off"
	})
	r = &Report{Version: p.Primary.Version, Ready: true}
	InspectStandby(ctx, r, primary, cfg, standbyDSN)
	f := standbyFinding(t, r, "sync_replication_slots is \"off\"")
	if f.Status != Fail || r.Ready || !strings.Contains(f.Fix, "ALTER SYSTEM SET sync_replication_slots = on") {
		t.Fatalf("sync_replication_slots off: %+v", f)
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Standby mode: source.dsn a hot standby. Without source.primary_dsn a
// missing publication stops Ensure with the SQL to run on the primary; with
// it, the publication is created there and Ensure returns once the standby
// has it. hot_standby_feedback and the primary's wal_level are checked.
// Before 16 the standby is refused: it cannot decode.
func TestStandbyModeEnsure(t *testing.T) {
	p := pgtest.NewPair(t, pgtest.PairOptions{BinDir: pgtest.PairBinDir(t, 16, 17, 18)})
	db := p.Primary.NewDB(t)
	db.Exec(t, blogSchema)
	p.WaitReplayed(t)
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	standbyDSN := p.StandbyDSN(db.Name)
	standby := connect(t, standbyDSN)

	cfg := haConfig(t, standbyDSN, "", "flusso_sb")
	if p.Primary.Version < 16 {
		r, err := Inspect(ctx, standby, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		want(t, r, CheckStandby, "", Fail, fmt.Sprintf("PostgreSQL %d cannot decode on a standby", p.Primary.Version), "-")
		return
	}
	_, err := Ensure(ctx, standby, cfg, nil, state.New(t.TempDir(), "flusso_sb"), log)
	if !errors.Is(err, ErrStandbyReadOnly) || !strings.Contains(err.Error(), "CREATE PUBLICATION") || !strings.Contains(err.Error(), "source.primary_dsn") {
		t.Fatalf("ensure on a standby without primary_dsn: %v, want ErrStandbyReadOnly with the SQL", err)
	}

	cfg = haConfig(t, standbyDSN, db.DSN, "flusso_sb")
	r, err := Ensure(ctx, standby, cfg, nil, state.New(t.TempDir(), "flusso_sb"), log)
	if err != nil {
		t.Fatalf("ensure with primary_dsn: %v", err)
	}
	if len(r.Actions) != 1 || !strings.HasPrefix(r.Actions[0], "CREATE PUBLICATION") {
		t.Fatalf("actions %q, want the publication created on the primary", r.Actions)
	}
	want(t, r, CheckHotStandbyFeedback, "", OK, "hot_standby_feedback is on", "")
	want(t, r, CheckPrimaryWalLevel, "", OK, "logical on the primary", "")
	var n int
	if err := standby.QueryRow(ctx, `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'flusso_sb'`).Scan(&n); err != nil || n != 5 {
		t.Fatalf("the standby's publication has %d tables (%v), want 5", n, err)
	}
	if len(r.Failures()) != 0 {
		t.Fatalf("failures on a ready standby:\n%s", dump(r))
	}
}
