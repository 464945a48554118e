package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A server that cannot be reached gives, in every command, one line naming
// the cause and the fix; check's header names no empty field.
func TestConnectFailureIsOneLine(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("flusso.yaml", []byte("indexes:\n  - name: p\n    table: public.p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLUSSO_SOURCE_DSN", "postgres://u:pw_secret@127.0.0.1:1/x?sslmode=disable")
	t.Setenv("FLUSSO_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	for _, c := range []string{"validate", "explain", "drop", "follow", "backfill"} {
		_, _, err := run(t, c)
		want := "cannot connect to postgres://u:xxxxx@127.0.0.1:1/x?sslmode=disable: nothing listens at 127.0.0.1:1 (connection refused): check that the server is running and the host and port in source.dsn"
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v\nwant %s", c, err, want)
		}
	}
	out, _, err := run(t, "check")
	if exitCode(err) != 1 || strings.Contains(out, "PostgreSQL ,") || !strings.Contains(out, "flusso-pg check: not connected; publication flusso") ||
		!strings.Contains(out, "nothing listens at 127.0.0.1:1 (connection refused)") || strings.Contains(out, "pw_secret") {
		t.Fatalf("check without a server: exit %d\n%s", exitCode(err), out)
	}
}

// A missing database is named as such.
func TestConnectFailureCauses(t *testing.T) {
	db := cliDB(t)
	t.Chdir(t.TempDir())
	os.WriteFile("flusso.yaml", []byte("indexes:\n  - name: p\n    table: public.posts\n"), 0o600)
	host := strings.TrimPrefix(db.DSN, "postgres://")
	host = host[strings.Index(host, "@")+1 : strings.Index(host, "/")]
	t.Setenv("FLUSSO_SOURCE_DSN", fmt.Sprintf("postgres://postgres@%s/nosuchdb?sslmode=disable", host))
	_, _, err := run(t, "validate")
	if err == nil || !strings.Contains(err.Error(), `database "nosuchdb" does not exist: check the database name in source.dsn`) {
		t.Errorf("missing database: %v", err)
	}
}
