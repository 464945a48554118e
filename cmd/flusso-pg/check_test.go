package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/provision"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// cliDB starts a cluster of the test's own (this package has no TestMain
// to stop a shared one) and a database holding a small blog schema.
func cliDB(t *testing.T) *pgtest.DB {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		c.Stop()
		os.RemoveAll(filepath.Dir(c.DataDir))
	})
	db := c.NewDB(t)
	db.Exec(t, `CREATE TABLE posts (id int PRIMARY KEY, title text);
CREATE TABLE comments (id int PRIMARY KEY, post_id int, body text);
ALTER TABLE comments REPLICA IDENTITY FULL;`)
	return db
}

// answer is what run's stdin holds: the reply to drop's question.
var answer = "y\n"

// terminal is the real isTerminal, restored after a test pretends.
var terminal = isTerminal

// run executes the CLI with args and returns what it wrote to stdout and
// stderr, and its error (an *exitError carries the exit code).
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(answer))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func exitCode(err error) int {
	var ex *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ex):
		return ex.code
	default:
		return 1
	}
}

func TestCheckAndDropCommands(t *testing.T) {
	db := cliDB(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "flusso.yaml")
	yaml := fmt.Sprintf(`source:
  dsn: %s
  slot: cli_slot
  publication: cli_pub
  provision: check
state:
  dir: state
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: comments
        table: public.comments
        kind: has_many
        join: {id: post_id}
`, db.DSN)
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}

	// A server that is not there: a report still, with the fix.
	out, _, err := run(t, "check", "--config", file, "--dsn", "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=5", "--json")
	if exitCode(err) != 1 || !strings.Contains(out, `"check": "connection"`) || !strings.Contains(out, "nothing listens at 127.0.0.1:1") {
		t.Fatalf("check without a server: exit %d (%v)\n%s", exitCode(err), err, out)
	}

	// No publication, provision check: not ready, exit 1, with the fix.
	out, _, err = run(t, "check", "--config", file)
	if exitCode(err) != 1 {
		t.Fatalf("check: exit %d (%v), want 1\n%s", exitCode(err), err, out)
	}
	for _, s := range []string{"FAIL  publication ", "publication cli_pub does not exist",
		"fix: CREATE PUBLICATION cli_pub FOR TABLE public.comments, public.posts;", "not ready: "} {
		if !strings.Contains(out, s) {
			t.Errorf("check output lacks %q:\n%s", s, out)
		}
	}

	// The same as JSON.
	out, _, err = run(t, "check", "--config", file, "--json")
	if exitCode(err) != 1 {
		t.Fatalf("check --json: exit %d, want 1", exitCode(err))
	}
	var rep provision.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json output is not one JSON report: %v\n%s", err, out)
	}
	if rep.Ready || len(rep.Failures()) == 0 || rep.Failures()[0].Fix == "" {
		t.Fatalf("JSON report %+v", rep)
	}

	// With provision auto, what follow would create is a warning: ready, exit 0.
	out, _, err = run(t, "check", "--config", file, "--provision", "auto")
	if exitCode(err) != 0 || !strings.Contains(out, "WARN  publication ") || !strings.Contains(out, "\nready (") {
		t.Fatalf("check --provision auto: exit %d (%v)\n%s", exitCode(err), err, out)
	}

	// What follow does at start: the publication (recorded as created), then the slot.
	cfg, err := config.Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Source.Provision = config.ProvisionAuto
	store := state.New(cfg.State.Dir, cfg.Source.Slot)
	if _, err := provision.Ensure(context.Background(), db.Pool, cfg, nil, store, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "SELECT pg_create_logical_replication_slot('cli_slot', 'pgoutput')")
	out, _, err = run(t, "check", "--config", file)
	if exitCode(err) != 0 || !strings.Contains(out, "ok    slot ") {
		t.Fatalf("check once provisioned: exit %d (%v)\n%s", exitCode(err), err, out)
	}

	// drop without a terminal and without --yes refuses, and drops nothing.
	out, _, err = run(t, "drop", "--config", file)
	var ex *exitError
	if !errors.As(err, &ex) || ex.code != 1 || !strings.Contains(ex.msg, "pass --yes") {
		t.Fatalf("drop without --yes: %v", err)
	}
	if !strings.Contains(out, "drop replication slot cli_slot") || !strings.Contains(out, "drop publication cli_pub (flusso-pg created it)") {
		t.Errorf("drop does not say what it would do:\n%s", out)
	}
	var n int
	db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cli_slot'").Scan(&n)
	if n != 1 {
		t.Fatal("drop without --yes dropped the slot")
	}

	// On a terminal it asks; anything but y drops nothing.
	isTerminal = func(io.Reader) bool { return true }
	defer func() { isTerminal = terminal }()
	answer = "n\n"
	_, errOut, err := run(t, "drop", "--config", file)
	if !errors.As(err, &ex) || ex.code != 1 || !strings.Contains(ex.msg, "not confirmed; nothing was dropped") || !strings.Contains(errOut, "Drop these? [y/N] ") {
		t.Fatalf("drop answered n: %v (stderr %q)", err, errOut)
	}
	db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cli_slot'").Scan(&n)
	if n != 1 {
		t.Fatal("drop answered n dropped the slot")
	}
	// y drops.
	answer = "y\n"
	out, _, err = run(t, "drop", "--config", file)
	if err != nil || !strings.Contains(out, "dropped replication slot cli_slot") {
		t.Fatalf("drop answered y: %v\n%s", err, out)
	}
	isTerminal = terminal

	// Again, as follow would set it up, for --yes.
	if _, err := provision.Ensure(context.Background(), db.Pool, cfg, nil, store, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "SELECT pg_create_logical_replication_slot('cli_slot', 'pgoutput')")

	// drop --yes removes the slot, the publication it created, and the records.
	out, _, err = run(t, "drop", "--config", file, "--yes")
	if err != nil {
		t.Fatalf("drop --yes: %v\n%s", err, out)
	}
	if !strings.Contains(out, "dropped replication slot cli_slot") || !strings.Contains(out, "dropped publication cli_pub") {
		t.Errorf("drop --yes output:\n%s", out)
	}
	db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cli_slot')
  + (SELECT count(*) FROM pg_publication WHERE pubname = 'cli_pub')`).Scan(&n)
	if n != 0 {
		t.Fatal("slot or publication left after drop --yes")
	}
	if ok, _ := store.Load(state.PublicationRecord, &state.Publication{}); ok {
		t.Fatal("publication record left after drop --yes")
	}

	// And then there is nothing to drop.
	out, _, err = run(t, "drop", "--config", file, "--yes")
	if err != nil || !strings.Contains(out, "nothing to drop: slot cli_slot does not exist") {
		t.Fatalf("second drop: %v\n%s", err, out)
	}
}
