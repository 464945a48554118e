package build

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// parseConfig reads an indexes: section (the source part is filled in).
func parseConfig(t testing.TB, indexes string) *config.Config {
	t.Helper()
	y := "source:\n  dsn: postgres://x@localhost/x\n  slot: s\n  publication: p\n" + indexes
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, y)
	}
	return cfg
}

// mustCompile compiles and fails on any error problem.
func mustCompile(t testing.TB, db *pgtest.DB, cfg *config.Config) *Plan {
	t.Helper()
	p, problems, err := Compile(ctxT(t), db.Pool, cfg)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	if p == nil {
		var b bytes.Buffer
		WriteProblems(&b, problems)
		t.Fatalf("compile: problems:\n%s", b.String())
	}
	return p
}

// buildAll builds keys and returns id -> document text ("" for a delete).
func buildAll(t testing.TB, db *pgtest.DB, ix *Index, keys ...Key) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := ix.Build(ctxT(t), db.Pool, keys, func(d Doc) error {
		if d.Doc == nil {
			out[d.ID] = ""
		} else {
			out[d.ID] = string(d.Doc)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return out
}

// one builds a single document.
func one(t testing.TB, db *pgtest.DB, ix *Index, key ...string) string {
	t.Helper()
	docs := buildAll(t, db, ix, Key(key))
	d, ok := docs[strings.Join(key, ":")]
	if !ok {
		t.Fatalf("build %v: no row came back (got %v)", key, docs)
	}
	return d
}

// decode parses JSON keeping numbers as written.
func decode(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

// sameJSON compares two JSON texts as values (numbers compared as written).
func sameJSON(t testing.TB, got, want string) bool {
	t.Helper()
	return reflect.DeepEqual(decode(t, got), decode(t, want))
}

func assertJSON(t testing.TB, got, want string) {
	t.Helper()
	if !sameJSON(t, got, want) {
		t.Errorf("document differs\n got: %s\nwant: %s", got, want)
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func workload(t testing.TB, name string) string {
	return filepath.Join(pgtest.RepoRoot(t), "workloads", "blog", name)
}
