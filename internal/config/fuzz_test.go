package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that an accepted config
// validates, and that a rejected one gives a message of non-empty lines.
// Seeds: the repository's configs and testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../workloads/blog/flusso.yaml", "../../configs/example.yaml"} {
		if data, err := os.ReadFile(filepath.FromSlash(p)); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(validIndex))
	f.Add([]byte("source: {dsn: 'postgres://u:p@h/db', slot: s}\nindexes: [{name: a, table: t, relations: [{name: r, table: u, kind: many_to_many, through: {table: x, join: {a: b}, target_join: {c: d}}}]}]"))
	f.Add([]byte("indexes:\n  - &a {name: x, table: t}\n  - *a\n  - <<: *a\n"))
	f.Add([]byte("indexes:\n  - name: x\n    table: t\n    relations: [{name: r, kind: has_many, join: {id: x_id}, order_by: ['a desc', b], limit: 3}]\n    aggregates: [{name: n, table: u, join: {id: x_id}, fn: sum}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config and an error")
			}
			for _, l := range strings.Split(err.Error(), "\n") {
				if strings.TrimSpace(l) == "" {
					t.Fatalf("empty line in the message %q", err)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate refuses: %v", err)
		}
		if len(cfg.Indexes) == 0 {
			t.Fatal("Parse accepted a config without indexes")
		}
	})
}
