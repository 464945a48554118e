package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
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

// scalarKeys are the keys outside `indexes`, with their defaults. Each can be
// overridden by FLUSSO_<PATH> (dots become underscores, upper case).
var scalarKeys = map[string]any{
	"source.dsn":              "",
	"source.slot":             DefaultSlot,
	"source.publication":      DefaultPublication,
	"source.provision":        ProvisionAuto,
	"output.path":             "-",
	"state.dir":               DefaultStateDir,
	"log.level":               "info",
	"log.format":              "console",
	"backfill.workers":        0,
	"backfill.batch_size":     DefaultBatchSize,
	"capture.memory_budget":   "32MiB",
	"capture.status_interval": "10s",
	"capture.batch_size":      DefaultBatchSize,
}

// Load reads the config file (may be "" when everything comes from the
// environment and flags), applies FLUSSO_* environment overrides and the
// flags that were set, and validates the result statically. Errors name the
// file, the index and the path of the bad key.
func Load(file string, flags *pflag.FlagSet) (*Config, error) {
	var root *yaml.Node
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		root, err = parseYAML(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	cfg, err := decode(root, file, flags, os.LookupEnv)
	if err != nil {
		if file != "" {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return nil, err
	}
	return cfg, nil
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
		if errors.Is(err, errEOF) || err.Error() == "EOF" {
			return nil, nil
		}
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the config must be a mapping with keys source, indexes, ...", top.Line)
	}
	return top, nil
}

var errEOF = errors.New("EOF")

func decode(root *yaml.Node, file string, flags *pflag.FlagSet, env func(string) (string, bool)) (*Config, error) {
	d := &decoder{}
	var indexes *yaml.Node
	scalars := map[string]any{}
	if root != nil {
		sections := d.mapping(root, "", []string{"source", "output", "state", "log", "backfill", "capture", "indexes"})
		for name, n := range sections {
			if name == "indexes" {
				indexes = n
				continue
			}
			allowed := sectionKeys(name)
			for key, v := range d.mapping(n, name, allowed) {
				if v.Kind != yaml.ScalarNode {
					d.errf(v, name+"."+key, "must be a single value")
					continue
				}
				scalars[name+"."+key] = v.Value
			}
		}
	}
	if err := d.err(); err != nil {
		return nil, err
	}

	v := viper.New()
	for k, def := range scalarKeys {
		v.SetDefault(k, def)
	}
	for k, val := range scalars {
		v.Set(k, val)
	}
	// Environment: FLUSSO_SOURCE_DSN and friends override the file.
	for k := range scalarKeys {
		name := "FLUSSO_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
		if val, ok := env(name); ok {
			v.Set(k, val)
		}
	}
	// Flags that were set override both.
	if flags != nil {
		for flag, key := range FlagKeys {
			if f := flags.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
			}
		}
	}

	cfg := &Config{File: file}
	cfg.Source = Source{
		DSN:         v.GetString("source.dsn"),
		Slot:        v.GetString("source.slot"),
		Publication: v.GetString("source.publication"),
		Provision:   strings.ToLower(v.GetString("source.provision")),
	}
	cfg.Output.Path = v.GetString("output.path")
	cfg.State.Dir = resolveStateDir(v.GetString("state.dir"), file)
	cfg.Log = Log{Level: strings.ToLower(v.GetString("log.level")), Format: strings.ToLower(v.GetString("log.format"))}

	var errs []string
	num := func(key string) int {
		s := v.GetString(key)
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("%s: %q is not a non-negative whole number", key, s))
		}
		return n
	}
	cfg.Backfill.Workers = num("backfill.workers")
	cfg.Backfill.BatchSize = num("backfill.batch_size")
	cfg.Capture.BatchSize = num("capture.batch_size")
	if b, err := ParseBytes(v.GetString("capture.memory_budget")); err != nil {
		errs = append(errs, "capture.memory_budget: "+err.Error())
	} else {
		cfg.Capture.MemoryBudget = b
	}
	if dur, err := time.ParseDuration(v.GetString("capture.status_interval")); err != nil || dur <= 0 {
		errs = append(errs, fmt.Sprintf("capture.status_interval: %q is not a positive duration such as 10s", v.GetString("capture.status_interval")))
	} else {
		cfg.Capture.StatusInterval = dur
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}

	if indexes != nil {
		cfg.Indexes = d.indexes(indexes)
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func sectionKeys(section string) []string {
	var out []string
	for k := range scalarKeys {
		if rest, ok := strings.CutPrefix(k, section+"."); ok {
			out = append(out, rest)
		}
	}
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
