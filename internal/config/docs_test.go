package config

import (
	"os"
	"regexp"
	"testing"
)

// docs/configuration.md's table gives every scalar key with the default of
// the one defaults table (scalarKeys), its variable, and nothing else.
func TestConfigurationDocTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `([a-z_]+(?:\\.[a-z_]+)+)` \\| ([^|]*) \\| `(FLUSSO_[A-Z_]+)` \\|").FindAllStringSubmatch(string(doc), -1)
	seen := map[string]bool{}
	defaults := Defaults()
	for _, r := range rows {
		key, def, env := r[1], r[2], r[3]
		want, ok := defaults[key]
		if !ok {
			t.Errorf("the doc lists %s, which is not a key", key)
			continue
		}
		seen[key] = true
		if env != EnvName(key) {
			t.Errorf("%s: the doc names %s, the variable is %s", key, env, EnvName(key))
		}
		switch {
		case key == "source.dsn", key == "capture.spill_dir", key == "source.primary_dsn":
			continue // no default to compare: "(none, required)", "<state.dir>/spill", "(none)"
		case want == "":
			continue // none: the doc says what applies instead (output.kind: from output.path)
		}
		if def != "`"+want+"`" {
			t.Errorf("%s: the doc's default is %s, the code's `%s`", key, def, want)
		}
	}
	for key := range defaults {
		if !seen[key] {
			t.Errorf("docs/configuration.md's table lacks %s", key)
		}
	}
}
