package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A has_many child at the default replica identity: validate and check
// accept it with an information line naming the table and the key map
// (and what the map takes once it exists), explain says which table
// resolves through the map; with capture.key_map: off the FULL fix stays.
func TestKeyMapValidateCheckExplain(t *testing.T) {
	db := cliDB(t)
	db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT")
	dir := t.TempDir()
	file := filepath.Join(dir, "flusso.yaml")
	write := func(keyMap string) {
		yaml := fmt.Sprintf(`source:
  dsn: %s
  slot: km_slot
  publication: km_pub
state:
  dir: state
capture:
  key_map: %s
indexes:
  - name: posts
    table: public.posts
    relations:
      - {name: comments, table: public.comments, kind: has_many, join: {id: post_id}}
`, db.DSN, keyMap)
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("auto")
	out, _, err := run(t, "validate", "--config", file)
	if exitCode(err) != 0 || !strings.Contains(out, "info: ") || !strings.Contains(out, "table public.comments: REPLICA IDENTITY DEFAULT sends only id in the old row, not post_id") ||
		!strings.Contains(out, "through the key map") || !strings.Contains(out, "no map in "+filepath.Join(dir, "state", "km_slot.keymap")+" yet") {
		t.Fatalf("validate with key_map auto: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	// Once the map exists, its size on disk.
	if err := os.MkdirAll(filepath.Join(dir, "state", "km_slot.keymap"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state", "km_slot.keymap", "000001.sst"), make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, "validate", "--config", file)
	if exitCode(err) != 0 || !strings.Contains(out, "takes 3.0 MiB on disk") {
		t.Fatalf("validate with a map: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	out, _, err = run(t, "check", "--config", file)
	if !strings.Contains(out, "public.comments") || !strings.Contains(out, "through the key map") || strings.Contains(out, "REPLICA IDENTITY FULL;") {
		t.Fatalf("check with key_map auto: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	out, _, err = run(t, "explain", "--config", file)
	if err != nil || !strings.Contains(out, "-- table public.comments: resolution\n-- old post_id of a DELETE or UPDATE: through the key map (key id") ||
		strings.Contains(out, "-- table public.posts: resolution\n-- old") {
		t.Fatalf("explain with key_map auto: %v\n%s", err, out)
	}

	write("off")
	out, _, err = run(t, "validate", "--config", file)
	if exitCode(err) != 1 || !strings.Contains(out, "fix: ALTER TABLE public.comments REPLICA IDENTITY FULL;") || strings.Contains(out, "key map") {
		t.Fatalf("validate with key_map off: exit %d (%v)\n%s", exitCode(err), err, out)
	}
}
