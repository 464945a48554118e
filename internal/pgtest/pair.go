package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Pair is a primary and a hot standby streaming from it through a physical
// slot (PhysicalSlot), both on loopback ports in temporary folders. From
// PostgreSQL 17 the standby synchronizes failover slots
// (sync_replication_slots = on) and the primary waits for it before logical
// walsenders send a change (synchronized_standby_slots), so a logical slot
// created with FAILOVER survives a promotion.
//
// The standby is a cold copy of the cleanly stopped primary's data
// directory, since the server packages the matrix uses ship no
// pg_basebackup.
type Pair struct {
	Primary *Cluster
	Standby *Cluster
}

// PhysicalSlot is the physical slot the standby streams from.
const PhysicalSlot = "pgtest_standby"

// PairOptions tune StartPair.
type PairOptions struct {
	// BinDir holds the server binaries; "" is FindBinDir's choice.
	BinDir string
	// Settings are extra postgresql.conf lines for both servers.
	Settings []string
}

// StartPair starts a primary and its standby and waits until the standby
// streams. Callers own both and must Stop them (Pair.Stop).
func StartPair(opts PairOptions) (*Pair, error) {
	primary, err := Start(Options{BinDir: opts.BinDir, Settings: append([]string{"hot_standby = on"}, opts.Settings...)})
	if err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	p := &Pair{Primary: primary}
	ok := false
	defer func() {
		if !ok {
			p.Stop()
		}
	}()
	if err := primary.query(`SELECT pg_create_physical_replication_slot('` + PhysicalSlot + `', true)`); err != nil {
		return nil, fmt.Errorf("primary: physical slot: %w", err)
	}
	if err := primary.StopFast(); err != nil {
		return nil, err
	}
	s := &Cluster{BinDir: primary.BinDir, Version: primary.Version, runAs: primary.runAs}
	if s.dir, err = os.MkdirTemp("", "flusso-pgtest-standby-"); err != nil {
		return nil, err
	}
	p.Standby = s
	s.DataDir = filepath.Join(s.dir, "data")
	s.logFile = filepath.Join(s.dir, "postgres.log")
	// cp -a keeps modes (Postgres wants 0700 on the data directory) and owners.
	if out, err := exec.Command("cp", "-a", primary.DataDir, s.DataDir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy the data directory: %v: %s", err, out)
	}
	if s.runAs != nil {
		if out, err := exec.Command("chown", "-R", s.runAs.Username, s.dir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("chown the standby: %v: %s", err, out)
		}
	}
	os.Remove(filepath.Join(s.DataDir, "postmaster.pid"))
	if s.Port, err = freePort(); err != nil {
		return nil, err
	}
	standbyConf := []string{
		"unix_socket_directories = '" + s.dir + "'",
		fmt.Sprintf("primary_conninfo = 'host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=pgtest_standby'", primary.Port),
		"primary_slot_name = '" + PhysicalSlot + "'",
		"hot_standby_feedback = on",
		"wal_receiver_status_interval = 1s",
	}
	if s.Version >= 17 {
		standbyConf = append(standbyConf, "sync_replication_slots = on")
	}
	if err := appendConf(filepath.Join(s.DataDir, "postgresql.auto.conf"), standbyConf); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.DataDir, "standby.signal"), nil, 0o600); err != nil {
		return nil, err
	}
	if s.runAs != nil {
		chownToRunAs(filepath.Join(s.DataDir, "standby.signal"), s.runAs)
	}
	if primary.Version >= 17 {
		// Only on the primary: the standby's copy was taken before, so after
		// a promotion its logical walsenders do not wait for a physical
		// slot it does not have.
		if err := appendConf(filepath.Join(primary.DataDir, "postgresql.auto.conf"),
			[]string{"synchronized_standby_slots = '" + PhysicalSlot + "'"}); err != nil {
			return nil, err
		}
	}
	if err := primary.Restart(); err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	if err := s.Restart(); err != nil {
		return nil, fmt.Errorf("standby: %w", err)
	}
	if err := p.waitStreaming(60 * time.Second); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// NewPair starts a pair for one test and stops it when the test ends. It
// fails the test (never skips it) when the pair cannot be started, and skips
// it under -short.
func NewPair(t testing.TB, opts PairOptions) *Pair {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	p, err := StartPair(opts)
	if err != nil {
		t.Fatalf("pgtest: pair: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

func appendConf(path string, lines []string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# pgtest pair\n" + strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Stop stops both servers (immediate mode) and removes their folders.
func (p *Pair) Stop() {
	for _, c := range []*Cluster{p.Standby, p.Primary} {
		if c == nil {
			continue
		}
		c.Stop()
		if c.dir != "" {
			os.RemoveAll(c.dir)
		}
	}
}

// waitStreaming waits until the primary shows the standby streaming.
func (p *Pair) waitStreaming(timeout time.Duration) error {
	return poll(timeout, func(ctx context.Context) (bool, error) {
		var n int
		err := p.Primary.queryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'`, &n)
		return n > 0, err
	}, func() string {
		log, _ := os.ReadFile(p.Standby.logFile)
		return "the standby is not streaming from the primary; its log:\n" + tail(string(log), 2000)
	})
}

// WaitReplayed waits until the standby has replayed everything the primary
// has written so far.
func (p *Pair) WaitReplayed(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	var lsn string
	err := p.Primary.queryRow(ctx, `SELECT pg_current_wal_lsn()::text`, &lsn)
	cancel()
	if err != nil {
		t.Fatalf("pgtest: primary wal position: %v", err)
	}
	err = poll(60*time.Second, func(ctx context.Context) (bool, error) {
		var done bool
		err := p.Standby.queryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, &done, lsn)
		return done, err
	}, func() string { return "the standby did not replay up to " + lsn })
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// WaitSlotSynced waits until the standby holds logical slot name with
// synced = true (PostgreSQL 17+) and a confirmed position at least the
// primary's for it.
func (p *Pair) WaitSlotSynced(t testing.TB, name string) {
	t.Helper()
	err := poll(90*time.Second, func(ctx context.Context) (bool, error) {
		var primary string
		if err := p.Primary.queryRow(ctx, `SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = $1`, &primary, name); err != nil {
			if err == pgx.ErrNoRows {
				return false, nil
			}
			return false, err
		}
		var ok bool
		err := p.Standby.queryRow(ctx, `SELECT coalesce(synced AND confirmed_flush_lsn >= $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1`, &ok, name, primary)
		if err == pgx.ErrNoRows {
			return false, nil
		}
		return ok, err
	}, func() string {
		log, _ := os.ReadFile(p.Standby.logFile)
		return "slot " + name + " is not synced to the standby; its log:\n" + tail(string(log), 2000)
	})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Promote makes the standby a primary (pg_ctl promote) and waits until it
// accepts writes. The old primary keeps running: StopPrimary stops it.
func (p *Pair) Promote() error {
	s := p.Standby
	if out, err := s.run(filepath.Join(s.BinDir, "pg_ctl"), "-D", s.DataDir, "-w", "-t", "60", "promote"); err != nil {
		return fmt.Errorf("pg_ctl promote: %v\n%s", err, out)
	}
	return poll(60*time.Second, func(ctx context.Context) (bool, error) {
		var recovery bool
		err := s.queryRow(ctx, `SELECT pg_is_in_recovery()`, &recovery)
		return !recovery, err
	}, func() string { return "the promoted standby is still in recovery" })
}

// StopPrimary stops the old primary at once (pg_ctl -m immediate), as a
// crash or a failover manager fencing it would.
func (p *Pair) StopPrimary() { p.Primary.Stop() }

// query runs one statement in database postgres.
func (c *Cluster) query(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// queryRow reads one row into dest in database postgres.
func (c *Cluster) queryRow(ctx context.Context, sql string, dest any, args ...any) error {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, sql, args...).Scan(dest)
}

// poll calls cond until it reports true or timeout passes; errors count as
// not yet (a server starting up refuses connections for a moment).
func poll(timeout time.Duration, cond func(context.Context) (bool, error), why func() string) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ok, err := cond(ctx)
		cancel()
		if ok && err == nil {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			msg := why()
			if last != nil {
				msg += fmt.Sprintf(" (last error: %v)", last)
			}
			return fmt.Errorf("after %s: %s", timeout, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StandbyDSN is the standby's connection string for database db (a copy of
// the primary's database of that name, read-only until a promotion).
func (p *Pair) StandbyDSN(db string) string { return p.Standby.DSN(db) }

// BinDirFor returns the bin directory of PostgreSQL major version v from the
// cache `make pg PG=<v>` fills (.cache/pg/<v>/bin), or "" when it is not
// there.
func BinDirFor(v int) string {
	root := repoRoot()
	if root == "" {
		return ""
	}
	dir := filepath.Join(root, ".cache", "pg", fmt.Sprint(v), "bin")
	for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return ""
		}
	}
	return dir
}

// PairBinDir chooses the server binaries for a test of a primary and
// standby pair. When the run names a version (FLUSSO_PG_BIN or
// FLUSSO_PG_VERSION, as `make test-matrix` does) it is that one, whatever it
// is: such a test asserts what the version does, or the clear refusal where
// it lacks the feature. Otherwise (the default run) the newest cached
// version of prefer, so the feature itself is tested; else FindBinDir's
// choice.
func PairBinDir(t testing.TB, prefer ...int) string {
	t.Helper()
	if os.Getenv("FLUSSO_PG_BIN") == "" && os.Getenv("FLUSSO_PG_VERSION") == "" {
		for i := len(prefer) - 1; i >= 0; i-- {
			if dir := BinDirFor(prefer[i]); dir != "" {
				return dir
			}
		}
	}
	dir, err := FindBinDir()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dir
}

// MultiHostDSN is a connection string for database db listing the primary
// first and the standby second, with target_session_attrs=primary: it
// reaches whichever of the two is the primary, as a client of a failover
// cluster is configured.
func (p *Pair) MultiHostDSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=primary&connect_timeout=5",
		p.Primary.Port, p.Standby.Port, db)
}
