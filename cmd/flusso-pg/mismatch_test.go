package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/build"
)

// follow, backfill and explain refuse a config that does not match the
// database with the same error (build.Problems.Err); validate lists all.
func TestConfigMismatchOneError(t *testing.T) {
	db := cliDB(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "flusso.yaml")
	yaml := fmt.Sprintf("source:\n  dsn: %s\n  slot: mm\nstate:\n  dir: %s\nindexes:\n  - name: posts\n    table: public.posts\n    columns: [id, titel]\n", db.DSN, filepath.Join(dir, "state"))
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var first string
	for _, c := range []string{"explain", "backfill", "follow"} {
		_, _, err := run(t, c, "--config", file)
		if !errors.Is(err, build.ErrConfigMismatch) || !strings.Contains(err.Error(), "titel") {
			t.Fatalf("%s: %v, want the config mismatch naming titel", c, err)
		}
		if first == "" {
			first = err.Error()
		} else if err.Error() != first {
			t.Errorf("%s says\n%s\nexplain says\n%s", c, err, first)
		}
	}
}
