package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An unwritable state dir stops follow before anything is created on the
// server: no slot is left behind retaining WAL (it used to be created first,
// and the next start blamed "another flusso-pg").
func TestFollowRefusesUnwritableStateDirFirst(t *testing.T) {
	db := cliDB(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "flusso.yaml")
	yaml := fmt.Sprintf("source:\n  dsn: %s\n  slot: ro_slot\n  publication: ro_pub\nindexes:\n  - name: posts\n    table: public.posts\n", db.DSN)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// /proc/self is a folder even root cannot create files in.
	_, _, err := run(t, "follow", "--config", file, "--state-dir", "/proc/self")
	if err == nil || !strings.Contains(err.Error(), "state dir /proc/self is not writable") {
		t.Fatalf("follow with an unwritable state dir: %v", err)
	}
	var slots, pubs int
	ctx := context.Background()
	db.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'ro_slot'").Scan(&slots)
	db.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_publication WHERE pubname = 'ro_pub'").Scan(&pubs)
	if slots != 0 || pubs != 0 {
		t.Fatalf("follow created %d slot(s) and %d publication(s) before refusing the state dir", slots, pubs)
	}
}
