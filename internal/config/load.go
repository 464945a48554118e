package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// FlagKeys maps the common flags to the config keys they override.
var FlagKeys = map[string]string{
	"dsn":         "source.dsn",
	"slot":        "source.slot",
	"publication": "source.publication",
	"provision":   "source.provision",
	"output":      "output.path",
	"state-dir":   "state.dir",
	"log-level":   "log.level",
	"log-format":  "log.format",
	"workers":     "backfill.workers",
	"batch-size":  "backfill.batch_size",
}

// Bounds of capture.status_interval: below, an idle follow spins a core on
// status updates; above, the slot lags for minutes and retains WAL.
const (
	MinStatusInterval = 100 * time.Millisecond
	MaxStatusInterval = 10 * time.Minute
)

// scalarKeys are the keys outside `indexes`, with their defaults. Each can be
// overridden by FLUSSO_<PATH> (dots become underscores, upper case).
var scalarKeys = map[string]any{
	"source.dsn":              "",
	"source.slot":             DefaultSlot,
	"source.publication":      DefaultPublication,
	"source.provision":        ProvisionAuto,
	"source.failover":         FailoverAuto,
	"source.primary_dsn":      "",
	"output.path":             "-",
	"state.dir":               DefaultStateDir,
	"log.level":               "info",
	"log.format":              "console",
	"backfill.workers":        0,
	"backfill.batch_size":     DefaultBatchSize,
	"capture.memory_budget":   FormatBytes(DefaultMemoryBudget),
	"capture.status_interval": DefaultStatusInterval.String(),
	"capture.coalesce":        DefaultCoalesce.String(),
	"capture.batch_size":      DefaultBatchSize,
	"capture.build_workers":   0,  // the number of CPUs
	"capture.spill_dir":       "", // the state dir's spill folder
	"capture.key_map":         KeyMapAuto,
	"capture.key_map_cache":   FormatBytes(DefaultKeyMapCache),
}

// Defaults returns the default of every key outside indexes, as the
// environment or the file would spell it (docs/configuration.md's table).
func Defaults() map[string]string {
	out := make(map[string]string, len(scalarKeys))
	for k, v := range scalarKeys {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// FormatBytes spells n as ParseBytes reads it: 8MiB, 512KiB, or bytes.
func FormatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// Load reads the config file (may be "" when everything comes from the
// environment and flags), applies FLUSSO_* environment overrides and the
// flags that were set, and validates the result statically. Every problem is
// reported at once, one per line, each naming the file, the index and the
// path of the bad key.
func Load(file string, flags *pflag.FlagSet) (*Config, error) {
	var root *yaml.Node
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		root, err = parseYAML(data)
		if err != nil {
			return nil, prefixLines(file, err)
		}
	}
	cfg, err := decode(root, file, flags, os.LookupEnv)
	if err != nil {
		return nil, prefixLines(file, err)
	}
	return cfg, nil
}

// prefixLines puts "file: " in front of every line of err, so each problem
// reads on its own like a compiler's message.
func prefixLines(file string, err error) error {
	if file == "" {
		return err
	}
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = file + ": " + l
	}
	return errors.New(strings.Join(lines, "\n"))
}

// Parse reads a config from YAML bytes, without environment or flags. It is
// what tests and fuzzing use.
func Parse(data []byte) (*Config, error) {
	root, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	return decode(root, "", nil, func(string) (string, bool) { return "", false })
}

func parseYAML(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file
		}
		// yaml's messages start with "yaml: "; keep one line.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		return nil, fmt.Errorf("invalid YAML: %s", strings.Join(strings.Fields(msg), " "))
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return nil, nil // only comments
	}
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: config: must be a mapping with keys %s", top.Line, strings.Join(sections, ", "))
	}
	if expandedSize(top, map[*yaml.Node]int{}) > maxExpanded {
		return nil, fmt.Errorf("config: its aliases (*name) expand to more than %d values: write the repeated parts out, or use fewer aliases", maxExpanded)
	}
	resolveAliases(top, map[*yaml.Node]bool{})
	return top, nil
}

// maxExpanded bounds what the aliases of a config may expand to, so an
// alias bomb is refused instead of decoded.
const maxExpanded = 1_000_000

// expandedSize counts the nodes under n as if every alias were written out.
func expandedSize(n *yaml.Node, memo map[*yaml.Node]int) int {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return expandedSize(n.Alias, memo)
	}
	if v, ok := memo[n]; ok {
		return v
	}
	memo[n] = maxExpanded + 1 // a cycle counts as too many
	total := 1
	for _, c := range n.Content {
		total += expandedSize(c, memo)
		if total > maxExpanded {
			break
		}
	}
	memo[n] = total
	return total
}

// resolveAliases replaces every alias (columns: *c) by the node it names,
// so the decoder reads it like the anchored value.
func resolveAliases(n *yaml.Node, seen map[*yaml.Node]bool) {
	if seen[n] {
		return
	}
	seen[n] = true
	for i, c := range n.Content {
		for c.Kind == yaml.AliasNode && c.Alias != nil {
			c = c.Alias
		}
		n.Content[i] = c
		resolveAliases(c, seen)
	}
}

// sections are the top-level keys, in the order the docs give them.
var sections = []string{"source", "output", "state", "log", "backfill", "capture", "indexes"}

// EnvName returns the environment variable that overrides key (a dotted path
// such as source.dsn): FLUSSO_SOURCE_DSN.
func EnvName(key string) string {
	return "FLUSSO_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// decode builds the Config from the defaults, the file's YAML (root, nil
// for none), the environment and the flags, each overriding the one before,
// and validates it. Every problem is reported at once: the file's shape,
// the values, the indexes.
func decode(root *yaml.Node, file string, flags *pflag.FlagSet, env func(string) (string, bool)) (*Config, error) {
	d := &decoder{}
	scalars := map[string]string{}
	indexes := d.sections(root, scalars)
	// Shape errors so far are reported with the value and index errors
	// below: every problem at once.
	v, from := layers(scalars, env, flags)
	name := func(key string) string {
		if s, ok := from[key]; ok {
			return s
		}
		return key
	}
	cfg := &Config{File: file}
	decodePlaces(v, from, cfg)
	errs := decodeTuning(v, cfg, name)
	errs = append(errs, decodeOutput(v, &cfg.Output, name)...)
	if indexes != nil {
		cfg.Indexes = d.indexes(indexes)
	}
	if all := append(d.errs, errs...); len(all) > 0 {
		return nil, errors.New(strings.Join(all, "\n"))
	}
	if err := cfg.validate(d.label(from)); err != nil {
		return nil, err
	}
	return cfg, nil
}

// sections reads the file's top-level sections: their scalars into
// scalars, and returns the indexes node (nil when there is none).
func (d *decoder) sections(root *yaml.Node, scalars map[string]string) (indexes *yaml.Node) {
	if root == nil {
		return nil
	}
	for _, sec := range d.entries(root, "", sections) {
		n := sec.v
		if n.Tag == "!!null" {
			continue // an empty section: defaults
		}
		if sec.key == "indexes" {
			indexes = n
			continue
		}
		d.sectionScalars(n, sec.key, scalars)
	}
	return indexes
}

// layers puts the scalar keys' defaults, the file's values, the
// environment's (FLUSSO_SOURCE_DSN and friends) and the flags that were set
// on top of each other, each overriding the one before. from records where
// each key's value came from, for messages and for resolving a relative
// state.dir: the key itself for the file, "key (from FLUSSO_X)" or
// "key (from --flag)" otherwise; a default has no entry.
func layers(scalars map[string]string, env func(string) (string, bool), flags *pflag.FlagSet) (*viper.Viper, map[string]string) {
	from := map[string]string{}
	v := viper.New()
	for k, def := range scalarKeys {
		v.SetDefault(k, def)
	}
	for k, val := range scalars {
		v.Set(k, val)
		from[k] = k
	}
	for k := range scalarKeys {
		name := EnvName(k)
		if val, ok := env(name); ok {
			v.Set(k, val)
			from[k] = k + " (from " + name + ")"
		}
	}
	if flags != nil {
		for flag, key := range FlagKeys {
			if f := flags.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
				from[key] = key + " (from --" + flag + ")"
			}
		}
	}
	return v, from
}

// decodePlaces fills in what needs no validation here: the source, the
// output path, the state and spill folders, the log.
func decodePlaces(v *viper.Viper, from map[string]string, cfg *Config) {
	file := cfg.File
	cfg.Source = Source{
		DSN:         strings.TrimSpace(v.GetString("source.dsn")),
		Slot:        v.GetString("source.slot"),
		Publication: v.GetString("source.publication"),
		Provision:   strings.ToLower(v.GetString("source.provision")),
		Failover:    strings.ToLower(v.GetString("source.failover")),
		PrimaryDSN:  strings.TrimSpace(v.GetString("source.primary_dsn")),
	}
	cfg.Output.Path = v.GetString("output.path")
	// A relative state.dir written in the file (or the default) is relative to
	// the file's folder; one given by the environment or a flag is relative to
	// the working directory, as a shell user expects.
	stateBase := file
	if s, ok := from["state.dir"]; ok && s != "state.dir" {
		stateBase = ""
	}
	cfg.State.Dir = resolveStateDir(v.GetString("state.dir"), stateBase)
	// capture.spill_dir: relative like state.dir; by default under it.
	if dir := strings.TrimSpace(v.GetString("capture.spill_dir")); dir != "" {
		spillBase := file
		if s, ok := from["capture.spill_dir"]; ok && s != "capture.spill_dir" {
			spillBase = ""
		}
		cfg.Capture.SpillDir = resolveStateDir(dir, spillBase)
	} else {
		cfg.Capture.SpillDir = filepath.Join(cfg.State.Dir, "spill")
	}
	cfg.Log = Log{Level: strings.ToLower(v.GetString("log.level")), Format: strings.ToLower(v.GetString("log.format"))}
}

// decodeTuning parses the backfill's and the capture's numbers, sizes and
// durations, resolved for the packages below (backfill.workers and
// capture.build_workers 0 become the number of CPUs; capture.coalesce 0 stays 0, off). It returns one
// message per bad value, named by name.
func decodeTuning(v *viper.Viper, cfg *Config, name func(string) string) []string {
	var errs []string
	num := func(key string) int {
		s := strings.TrimSpace(v.GetString(key))
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("%s: %q is not a non-negative whole number", name(key), s))
		}
		return n
	}
	cfg.Backfill.Workers = num("backfill.workers")
	if cfg.Backfill.Workers == 0 {
		// 0 is "the number of CPUs": resolved here, once, for every package.
		cfg.Backfill.Workers = runtime.NumCPU()
	}
	cfg.Backfill.BatchSize = num("backfill.batch_size")
	cfg.Capture.BatchSize = num("capture.batch_size")
	cfg.Capture.BuildWorkers = num("capture.build_workers")
	if cfg.Capture.BuildWorkers == 0 {
		cfg.Capture.BuildWorkers = min(runtime.NumCPU(), MaxBuildWorkers)
	}
	if b, err := ParseBytes(v.GetString("capture.memory_budget")); err != nil {
		errs = append(errs, name("capture.memory_budget")+": "+err.Error())
	} else {
		cfg.Capture.MemoryBudget = b
	}
	if dur, err := time.ParseDuration(strings.TrimSpace(v.GetString("capture.status_interval"))); err != nil || dur < MinStatusInterval || dur > MaxStatusInterval {
		errs = append(errs, fmt.Sprintf("%s: %q is not a duration from %s to %s, such as 10s", name("capture.status_interval"), v.GetString("capture.status_interval"), MinStatusInterval, MaxStatusInterval))
	} else {
		cfg.Capture.StatusInterval = dur
	}
	cfg.Capture.KeyMap = strings.ToLower(strings.TrimSpace(v.GetString("capture.key_map")))
	if b, err := ParseBytes(v.GetString("capture.key_map_cache")); err != nil {
		errs = append(errs, name("capture.key_map_cache")+": "+err.Error())
	} else {
		cfg.Capture.KeyMapCache = b
	}
	if dur, err := time.ParseDuration(strings.TrimSpace(v.GetString("capture.coalesce"))); err != nil || dur < 0 || dur > time.Second {
		errs = append(errs, fmt.Sprintf("%s: %q is not a duration from 0 (off) to 1s, such as 1ms", name("capture.coalesce"), v.GetString("capture.coalesce")))
	} else {
		cfg.Capture.Coalesce = dur
	}
	return errs
}

// label names a key path in validation messages: where its value came
// from when that is the environment or a flag, else its line in the file.
func (d *decoder) label(from map[string]string) func(string) string {
	return func(path string) string {
		if s, ok := from[path]; ok && s != path {
			return s // from the environment or a flag
		}
		if l := d.lineOf(path); l > 0 {
			return fmt.Sprintf("line %d: %s", l, path)
		}
		return path
	}
}

func sectionKeys(section string) []string {
	var out []string
	for k := range scalarKeys {
		if rest, ok := strings.CutPrefix(k, section+"."); ok {
			rest, _, _ = strings.Cut(rest, ".") // output.jetstream.url: jetstream
			if !slices.Contains(out, rest) {
				out = append(out, rest)
			}
		}
	}
	sort.Strings(out) // a stable order for suggestions
	return out
}

// ParseBytes reads a size such as 64MiB, 512KiB, 1GiB, 64MB or a plain number of bytes.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size such as 64MiB", s)
	}
	return n * mult, nil
}
