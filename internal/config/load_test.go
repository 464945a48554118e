package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// repoFile returns the path of a file of the repository, from this package's folder.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(validIndex))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Source:   Source{Slot: DefaultSlot, Publication: DefaultPublication, Provision: ProvisionAuto, Failover: FailoverAuto},
		Output:   Output{Path: "-", Kind: OutputStdout, JetStream: defaultJetStream},
		State:    State{Dir: DefaultStateDir},
		Log:      Log{Level: "info", Format: "console"},
		Backfill: Backfill{Workers: runtime.NumCPU(), BatchSize: DefaultBatchSize},
		Capture:  Capture{MemoryBudget: DefaultMemoryBudget, StatusInterval: DefaultStatusInterval, Coalesce: DefaultCoalesce, BatchSize: DefaultBatchSize, BuildWorkers: min(runtime.NumCPU(), MaxBuildWorkers), SpillDir: DefaultStateDir + "/spill", KeyMap: KeyMapAuto, KeyMapCache: DefaultKeyMapCache},
	}
	cfg.Indexes = nil
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", *cfg, want)
	}
}

func TestScalarKeys(t *testing.T) {
	cfg, err := Parse([]byte(`
source:
  dsn: postgres://flusso@db:5432/app
  slot: flusso_app
  publication: flusso_pub
  provision: CHECK
output:
  path: /var/lib/docs.ndjson
state:
  dir: /var/lib/flusso-pg
log:
  level: debug
  format: json
backfill:
  workers: 4
  batch_size: 1000
capture:
  memory_budget: 64MiB
  status_interval: 2s
  coalesce: 500us
  batch_size: 250
  build_workers: 3
  key_map: OFF
  key_map_cache: 128MiB
` + validIndex))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Indexes = nil
	want := Config{
		Source:   Source{DSN: "postgres://flusso@db:5432/app", Slot: "flusso_app", Publication: "flusso_pub", Provision: ProvisionCheck, Failover: FailoverAuto},
		Output:   Output{Path: "/var/lib/docs.ndjson", Kind: OutputFile, JetStream: defaultJetStream},
		State:    State{Dir: "/var/lib/flusso-pg"},
		Log:      Log{Level: "debug", Format: "json"},
		Backfill: Backfill{Workers: 4, BatchSize: 1000},
		Capture:  Capture{MemoryBudget: 64 << 20, StatusInterval: 2 * time.Second, Coalesce: 500 * time.Microsecond, BatchSize: 250, BuildWorkers: 3, SpillDir: "/var/lib/flusso-pg/spill", KeyMap: KeyMapOff, KeyMapCache: 128 << 20},
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("\n got %+v\nwant %+v", *cfg, want)
	}
}

func TestNullKeepsDefaults(t *testing.T) {
	cfg, err := Parse([]byte("source:\n  slot: ~\noutput:\nlog: {}\n" + validIndex))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.Slot != DefaultSlot || cfg.Output.Path != "-" || cfg.Log.Level != "info" {
		t.Errorf("got %+v %+v %+v, want the defaults", cfg.Source, cfg.Output, cfg.Log)
	}
}

func TestEnvOverrides(t *testing.T) {
	file := `
source:
  dsn: postgres://from-file/app
  slot: file_slot
capture:
  memory_budget: 1MiB
` + validIndex
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"dsn", map[string]string{"FLUSSO_SOURCE_DSN": "postgres://from-env/app"}, func(t *testing.T, c *Config) {
			if c.Source.DSN != "postgres://from-env/app" {
				t.Errorf("dsn = %q", c.Source.DSN)
			}
			if c.Source.Slot != "file_slot" {
				t.Errorf("slot = %q, want the file's", c.Source.Slot)
			}
		}},
		{"slot and publication", map[string]string{"FLUSSO_SOURCE_SLOT": "env_slot", "FLUSSO_SOURCE_PUBLICATION": "env_pub"}, func(t *testing.T, c *Config) {
			if c.Source.Slot != "env_slot" || c.Source.Publication != "env_pub" {
				t.Errorf("slot, publication = %q, %q", c.Source.Slot, c.Source.Publication)
			}
		}},
		{"numbers and sizes", map[string]string{"FLUSSO_BACKFILL_WORKERS": "3", "FLUSSO_CAPTURE_MEMORY_BUDGET": "2MiB", "FLUSSO_CAPTURE_STATUS_INTERVAL": "1m"}, func(t *testing.T, c *Config) {
			if c.Backfill.Workers != 3 || c.Capture.MemoryBudget != 2<<20 || c.Capture.StatusInterval != time.Minute {
				t.Errorf("got %+v %+v", c.Backfill, c.Capture)
			}
		}},
		{"log", map[string]string{"FLUSSO_LOG_LEVEL": "WARN", "FLUSSO_LOG_FORMAT": "json"}, func(t *testing.T, c *Config) {
			if c.Log.Level != "warn" || c.Log.Format != "json" {
				t.Errorf("log = %+v", c.Log)
			}
		}},
		{"empty value overrides", map[string]string{"FLUSSO_SOURCE_DSN": ""}, func(t *testing.T, c *Config) {
			if c.Source.DSN != "" {
				t.Errorf("dsn = %q, want empty", c.Source.DSN)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := parseYAML([]byte(file))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := decode(root, "", nil, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestEnvOverrideErrorNamesTheVariable(t *testing.T) {
	root, _ := parseYAML([]byte(validIndex))
	_, err := decode(root, "", nil, func(k string) (string, bool) {
		if k == "FLUSSO_BACKFILL_BATCH_SIZE" {
			return "lots", true
		}
		return "", false
	})
	if err == nil || !strings.Contains(err.Error(), `backfill.batch_size (from FLUSSO_BACKFILL_BATCH_SIZE): "lots" is not a non-negative whole number`) {
		t.Fatalf("got %v", err)
	}
}

func TestEnvValueErrorNamesTheVariable(t *testing.T) {
	// The file's value is fine; the environment's is not, and the message
	// must point at the variable, not at the file's line.
	root, _ := parseYAML([]byte("log:\n  level: info\n" + validIndex))
	_, err := decode(root, "", nil, func(k string) (string, bool) {
		if k == "FLUSSO_LOG_LEVEL" {
			return "loud", true
		}
		return "", false
	})
	if err == nil || err.Error() != `log.level (from FLUSSO_LOG_LEVEL): "loud" is not one of debug, info, warn, error` {
		t.Fatalf("got %v", err)
	}
}

// TestLoadEnv goes through Load and the real environment.
func TestLoadEnv(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "flusso.yaml")
	if err := os.WriteFile(file, []byte("source:\n  dsn: postgres://file/app\n"+validIndex), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLUSSO_SOURCE_DSN", "postgres://env/app")
	cfg, err := Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.DSN != "postgres://env/app" {
		t.Errorf("dsn = %q, want FLUSSO_SOURCE_DSN's", cfg.Source.DSN)
	}
	if cfg.File != file {
		t.Errorf("File = %q", cfg.File)
	}
}

// testFlags registers the common flags the way cmd/flusso-pg does.
func testFlags(args ...string) (*pflag.FlagSet, error) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	for _, name := range []string{"dsn", "slot", "publication", "provision", "output", "state-dir", "log-level", "log-format"} {
		fs.String(name, "", "")
	}
	fs.Int("workers", 0, "")
	fs.Int("batch-size", 0, "")
	return fs, fs.Parse(args)
}

func TestFlagOverrides(t *testing.T) {
	file := "source:\n  dsn: postgres://file/app\n  slot: file_slot\n" + validIndex
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"no flags keep the file", nil, nil, func(t *testing.T, c *Config) {
			if c.Source.DSN != "postgres://file/app" || c.Source.Slot != "file_slot" {
				t.Errorf("source = %+v", c.Source)
			}
		}},
		{"dsn", []string{"--dsn", "postgres://flag/app"}, nil, func(t *testing.T, c *Config) {
			if c.Source.DSN != "postgres://flag/app" {
				t.Errorf("dsn = %q", c.Source.DSN)
			}
		}},
		{"flag beats env", []string{"--slot", "flag_slot"}, map[string]string{"FLUSSO_SOURCE_SLOT": "env_slot", "FLUSSO_SOURCE_DSN": "postgres://env/app"}, func(t *testing.T, c *Config) {
			if c.Source.Slot != "flag_slot" || c.Source.DSN != "postgres://env/app" {
				t.Errorf("source = %+v", c.Source)
			}
		}},
		{"every common flag", []string{"--publication", "p", "--provision", "off", "--output", "out.ndjson", "--log-level", "debug", "--log-format", "json", "--workers", "2", "--batch-size", "50"}, nil, func(t *testing.T, c *Config) {
			if c.Source.Publication != "p" || c.Source.Provision != ProvisionOff || c.Output.Path != "out.ndjson" ||
				c.Log.Level != "debug" || c.Log.Format != "json" || c.Backfill.Workers != 2 || c.Backfill.BatchSize != 50 {
				t.Errorf("got %+v", c)
			}
		}},
		{"a flag set to zero still counts", []string{"--workers", "0"}, map[string]string{"FLUSSO_BACKFILL_WORKERS": "8"}, func(t *testing.T, c *Config) {
			if c.Backfill.Workers != runtime.NumCPU() {
				t.Errorf("workers = %d, want 0 from the flag, resolved to the %d CPUs", c.Backfill.Workers, runtime.NumCPU())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := testFlags(tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			root, _ := parseYAML([]byte(file))
			cfg, err := decode(root, "", fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestFlagErrorNamesTheFlag(t *testing.T) {
	fs, _ := testFlags("--provision", "sometimes", "--slot", "Bad-Slot")
	root, _ := parseYAML([]byte(validIndex))
	_, err := decode(root, "", fs, func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("want an error")
	}
	for _, w := range []string{`source.provision (from --provision): "sometimes"`, `source.slot (from --slot): "Bad-Slot"`} {
		if lineWith(err.Error(), w) == "" {
			t.Errorf("no line with %q in:\n%s", w, err)
		}
	}
}

func TestStateDir(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "etc")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(state string) string {
		file := filepath.Join(sub, "flusso.yaml")
		if err := os.WriteFile(file, []byte(state+validIndex), 0o644); err != nil {
			t.Fatal(err)
		}
		return file
	}
	tests := []struct {
		name  string
		state string
		args  []string
		env   string
		want  string
	}{
		{"default is next to the config file", "", nil, "", filepath.Join(sub, DefaultStateDir)},
		{"relative to the config file's folder", "state:\n  dir: progress\n", nil, "", filepath.Join(sub, "progress")},
		{"dot-dot relative to the config file's folder", "state:\n  dir: ../var/state\n", nil, "", filepath.Join(dir, "var", "state")},
		{"absolute stays", "state:\n  dir: /var/lib/flusso-pg\n", nil, "", "/var/lib/flusso-pg"},
		{"a flag is relative to the working directory", "state:\n  dir: progress\n", []string{"--state-dir", "here"}, "", "here"},
		{"an env var is relative to the working directory", "state:\n  dir: progress\n", nil, "there", "there"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := write(tt.state)
			fs, err := testFlags(tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if tt.env != "" {
				t.Setenv("FLUSSO_STATE_DIR", tt.env)
			}
			cfg, err := Load(file, fs)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.State.Dir != tt.want {
				t.Errorf("state dir = %q, want %q", cfg.State.Dir, tt.want)
			}
		})
	}
	t.Run("no config file", func(t *testing.T) {
		cfg, err := Parse([]byte("state:\n  dir: progress\n" + validIndex))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.State.Dir != "progress" {
			t.Errorf("state dir = %q, want progress", cfg.State.Dir)
		}
	})
}

func TestLoadErrorsNameTheFileOnEveryLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "flusso.yaml")
	if err := os.WriteFile(file, []byte(`
indexes:
  - name: posts
    table: public.posts
    relatons: []
    colums: [id]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file, nil)
	if err == nil {
		t.Fatal("want an error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), err)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, file+": line ") || !strings.Contains(l, `index "posts".`) {
			t.Errorf("line %q does not start with the file and name the index", l)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil || !strings.HasPrefix(err.Error(), "read config: ") {
		t.Errorf("missing file: got %v", err)
	}
}

// TestBlogConfig checks that the blog workload's config gives exactly the
// expected structure.
func TestBlogConfig(t *testing.T) {
	cfg, err := Load(repoFile(t, "workloads/blog/flusso.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Index{{
		Name:    "posts",
		Table:   "public.posts",
		Columns: []string{"id", "title", "body", "published_at", "votes"},
		Relations: []Relation{
			{Name: "author", Table: "public.authors", Kind: BelongsTo, Join: Pairs{{"author_id", "id"}}, Columns: []string{"id", "name"}},
			{Name: "comments", Table: "public.comments", Kind: HasMany, Join: Pairs{{"id", "post_id"}},
				Columns: []string{"id", "body", "score"}, OrderBy: []OrderBy{{Column: "id"}},
				Relations: []Relation{
					{Name: "user", Table: "public.users", Kind: BelongsTo, Join: Pairs{{"user_id", "id"}}, Columns: []string{"handle"}},
				}},
			{Name: "tags", Table: "public.tags", Kind: ManyToMany,
				Through: &Through{Table: "public.post_tags", Join: Pairs{{"id", "post_id"}}, TargetJoin: Pairs{{"tag_id", "id"}}},
				Columns: []string{"name"}, OrderBy: []OrderBy{{Column: "name"}}},
		},
		Aggregates: []Aggregate{
			{Name: "comment_count", Table: "public.comments", Join: Pairs{{"id", "post_id"}}, Fn: Count},
			{Name: "best_score", Table: "public.comments", Join: Pairs{{"id", "post_id"}}, Fn: Max, Column: "score"},
		},
	}}
	if !reflect.DeepEqual(cfg.Indexes, want) {
		t.Errorf("indexes:\n got %+v\nwant %+v", cfg.Indexes, want)
	}
	if cfg.Source.Slot != "flusso_blog" || cfg.Source.Publication != "flusso_blog" || cfg.Source.Provision != ProvisionAuto {
		t.Errorf("source = %+v", cfg.Source)
	}
	if want := filepath.Join(filepath.Dir(cfg.File), DefaultStateDir); cfg.State.Dir != want {
		t.Errorf("state dir = %q, want %q", cfg.State.Dir, want)
	}
}

// TestExampleConfig checks that configs/example.yaml, which documents every
// key, parses, and uses every relation kind and aggregate function.
func TestExampleConfig(t *testing.T) {
	cfg, err := Load(repoFile(t, "configs/example.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	kinds, fns := map[string]bool{}, map[string]bool{}
	var walk func(rels []Relation, aggs []Aggregate)
	walk = func(rels []Relation, aggs []Aggregate) {
		for _, r := range rels {
			kinds[r.Kind] = true
			walk(r.Relations, r.Aggregates)
		}
		for _, a := range aggs {
			fns[a.Fn] = true
		}
	}
	for _, ix := range cfg.Indexes {
		walk(ix.Relations, ix.Aggregates)
	}
	for _, k := range Kinds {
		if !kinds[k] {
			t.Errorf("configs/example.yaml uses no %s relation", k)
		}
	}
	for _, f := range Functions {
		if !fns[f] {
			t.Errorf("configs/example.yaml uses no %s aggregate", f)
		}
	}
}

// TestCaseOfNamesIsKept checks that join and rename keys, which are column
// names, keep their case (viper would lower-case them).
func TestCaseOfNamesIsKept(t *testing.T) {
	cfg, err := Parse([]byte(`
indexes:
  - name: Albums
    table: '"Media".album'
    key: [AlbumId]
    columns: [AlbumId, Title, ArtistId]
    rename: {AlbumId: albumId, Title: title}
    relations:
      - name: Artist
        table: '"Media"."Artist"'
        kind: belongs_to
        join: {ArtistId: ArtistId}
        columns: [Name]
        rename: {Name: artistName}
      - name: Tracks
        table: '"Media".track'
        kind: has_many
        join: {AlbumId: AlbumId, ArtistId: ArtistID}
        order_by: [TrackId DESC]
`))
	if err != nil {
		t.Fatal(err)
	}
	ix := cfg.Indexes[0]
	if ix.Name != "Albums" || ix.Table != `"Media".album` || !reflect.DeepEqual(ix.Key, []string{"AlbumId"}) {
		t.Errorf("index = %+v", ix)
	}
	if want := (Pairs{{"AlbumId", "albumId"}, {"Title", "title"}}); !reflect.DeepEqual(ix.Rename, want) {
		t.Errorf("rename = %v, want %v", ix.Rename, want)
	}
	if want := (Pairs{{"ArtistId", "ArtistId"}}); !reflect.DeepEqual(ix.Relations[0].Join, want) {
		t.Errorf("join = %v, want %v", ix.Relations[0].Join, want)
	}
	if want := (Pairs{{"Name", "artistName"}}); !reflect.DeepEqual(ix.Relations[0].Rename, want) {
		t.Errorf("relation rename = %v, want %v", ix.Relations[0].Rename, want)
	}
	// Several pairs stay in the order they were written.
	if want := (Pairs{{"AlbumId", "AlbumId"}, {"ArtistId", "ArtistID"}}); !reflect.DeepEqual(ix.Relations[1].Join, want) {
		t.Errorf("composite join = %v, want %v", ix.Relations[1].Join, want)
	}
	if want := []OrderBy{{Column: "TrackId", Desc: true}}; !reflect.DeepEqual(ix.Relations[1].OrderBy, want) {
		t.Errorf("order_by = %v, want %v", ix.Relations[1].OrderBy, want)
	}
}

func TestEmptyInput(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "---\n"} {
		_, err := Parse([]byte(in))
		if err == nil || err.Error() != "indexes: no index is configured: add at least one under indexes:" {
			t.Errorf("Parse(%q) = %v, want the no-index error alone", in, err)
		}
	}
}

func TestStatusIntervalBounds(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{{"1ns", false}, {"99ms", false}, {"100ms", true}, {"10m", true}, {"11m", false}} {
		_, err := Parse([]byte("capture:\n  status_interval: " + tc.value + "\n" + "indexes:\n  - name: p\n    table: public.p\n"))
		if (err == nil) != tc.ok {
			t.Errorf("status_interval %s: err %v, want ok=%v", tc.value, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "from 100ms to 10m0s") {
			t.Errorf("status_interval %s: %v does not give the bounds", tc.value, err)
		}
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{"FLUSSO_SORCE_DSN=x", "FLUSSO_SOURCE_DSN=y", "FLUSSO_CONFIG=z", "FLUSSO_PG_BIN=b", "HOME=/root"})
	if len(got) != 1 || !strings.Contains(got[0], "FLUSSO_SORCE_DSN") || !strings.Contains(got[0], "did you mean FLUSSO_SOURCE_DSN?") {
		t.Fatalf("UnknownEnv = %q, want one warning for FLUSSO_SORCE_DSN suggesting FLUSSO_SOURCE_DSN", got)
	}
}

// The defaults table spells each default as a user would write it, from the
// typed constants (one table: docs/configuration.md shows the same).
func TestDefaultsTable(t *testing.T) {
	d := Defaults()
	for key, want := range map[string]string{"capture.memory_budget": "8MiB", "capture.status_interval": "10s", "capture.coalesce": "1ms", "backfill.batch_size": "500", "source.slot": "flusso"} {
		if d[key] != want {
			t.Errorf("default of %s = %q, want %q", key, d[key], want)
		}
	}
	cfg, err := Parse([]byte("capture:\n  spill_dir: /data/spill\nindexes:\n  - name: p\n    table: public.p\n"))
	if err != nil || cfg.Capture.SpillDir != "/data/spill" {
		t.Fatalf("capture.spill_dir: %v, %+v", err, cfg)
	}
}

// capture.coalesce: 0 is off, however it is spelled and wherever it comes
// from; the value reaches the capture as written (wal.Config.Coalesce 0 is
// off too: the default, 1ms, exists only here).
func TestCoalesceZeroIsOff(t *testing.T) {
	for _, v := range []string{"0", "0s", "0ms"} {
		cfg, err := Parse([]byte("capture:\n  coalesce: " + v + "\n" + validIndex))
		if err != nil {
			t.Fatalf("coalesce %s: %v", v, err)
		}
		if cfg.Capture.Coalesce != 0 {
			t.Errorf("coalesce %s = %v, want 0 (off)", v, cfg.Capture.Coalesce)
		}
	}
	root, err := parseYAML([]byte(validIndex))
	if err != nil {
		t.Fatal(err)
	}
	env := func(name string) (string, bool) { return "0", name == "FLUSSO_CAPTURE_COALESCE" }
	cfg, err := decode(root, "", nil, env)
	if err != nil || cfg.Capture.Coalesce != 0 {
		t.Fatalf("FLUSSO_CAPTURE_COALESCE=0: %v, coalesce %v; want 0 (off)", err, cfg.Capture.Coalesce)
	}
}

// Shape errors at the top, in a section and inside an index, and a bad
// value, all come in one report (the index's used to wait for the others).
func TestAllShapeErrorsAtOnce(t *testing.T) {
	_, err := Parse([]byte("foo: 1\nsource:\n  slott: x\ncapture:\n  status_interval: 1ns\nindexes:\n  - name: p\n    table: public.p\n    colums: [a]\n"))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`unknown key "foo"`, `unknown key "slott"`, `unknown key "colums"`, `capture.status_interval: "1ns"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the report lacks %s:\n%s", want, err)
		}
	}
}

// An alias reads like the anchored value; an alias bomb is refused.
func TestYAMLAliases(t *testing.T) {
	cfg, err := Parse([]byte("indexes:\n  - name: p\n    table: public.p\n    columns: &c [id, title]\n  - name: q\n    table: public.q\n    columns: *c\n"))
	if err != nil {
		t.Fatalf("an alias is refused: %v", err)
	}
	if got := cfg.Indexes[1].Columns; len(got) != 2 || got[1] != "title" {
		t.Fatalf("columns: *c = %v", got)
	}
	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h"} {
		bomb += fmt.Sprintf("%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", n, n, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = n
	}
	if _, err := Parse([]byte(bomb)); err == nil || !strings.Contains(err.Error(), "aliases (*name) expand to more than") {
		t.Fatalf("an alias bomb: %v", err)
	}
}

func TestScalarBounds(t *testing.T) {
	idx := "indexes:\n  - name: p\n    table: public.p\n"
	for _, tc := range []struct{ yaml, want string }{
		{"backfill:\n  batch_size: 100001\n", "backfill.batch_size: must be from 1 to 100000"},
		{"capture:\n  batch_size: 0\n", "capture.batch_size: must be from 1 to 100000"},
		{"backfill:\n  workers: 1000\n", "backfill.workers: must be from 0 (the number of CPUs) to 256"},
		{"capture:\n  build_workers: 65\n", "capture.build_workers: must be from 0 (the number of CPUs) to 64"},
		{"capture:\n  build_workers: -1\n", "capture.build_workers: \"-1\" is not a non-negative whole number"},
		{"capture:\n  memory_budget: 1KiB\n", "capture.memory_budget: must be at least 64KiB"},
		{"capture:\n  key_map_cache: 64KiB\n", "capture.key_map_cache: must be at least 1MiB"},
	} {
		_, err := Parse([]byte(tc.yaml + idx))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := Parse([]byte("backfill:\n  batch_size: 100000\n  workers: 256\ncapture:\n  memory_budget: 64KiB\n" + idx)); err != nil {
		t.Errorf("the bounds themselves are refused: %v", err)
	}
}
