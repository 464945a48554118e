package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ConfigEnv names the config file when --config is not given.
const ConfigEnv = "FLUSSO_CONFIG"

// otherEnv are the FLUSSO_* variables read outside the scalar keys.
var otherEnv = []string{
	ConfigEnv,
	"FLUSSO_CPUPROFILE", // a CPU profile, for development
	"FLUSSO_RATE",       // bench scripts
}

// devPrefixes are the variables of the test harness and the benchmarks.
var devPrefixes = []string{"FLUSSO_PG_", "FLUSSO_TEST_", "FLUSSO_BENCH_"}

// UnknownEnv returns a warning for each FLUSSO_* variable of environ
// (KEY=value strings, as os.Environ gives) that flusso-pg does not read: a
// misspelt override would otherwise be ignored without a word.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	var names []string
	for k := range scalarKeys {
		known[EnvName(k)] = true
		names = append(names, EnvName(k))
	}
	for _, n := range otherEnv {
		known[n] = true
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "FLUSSO_") || known[name] || hasAnyPrefix(name, devPrefixes) {
			continue
		}
		hint := ""
		if s := Suggest(name, names); s != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", s)
		}
		out = append(out, fmt.Sprintf("environment variable %s is not one flusso-pg reads: it is ignored%s", name, hint))
	}
	sort.Strings(out)
	return out
}

func hasAnyPrefix(s string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(s, p) })
}
