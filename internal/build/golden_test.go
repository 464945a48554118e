package build

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the SQL generated now")

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if string(want) != got {
		t.Errorf("%s differs from the generated SQL (run with -update if the change is intended)\n--- got:\n%s", path, got)
	}
}

// explainPlan renders a plan as explain prints it.
func explainPlan(p *Plan) string {
	var b strings.Builder
	for _, ix := range p.Indexes {
		b.WriteString("-- index " + ix.Name() + ": document query\n" + ix.DocumentSQL() + ";\n\n")
		b.WriteString("-- index " + ix.Name() + ": scan query\n" + ix.ScanSQL() + ";\n\n")
	}
	for _, tb := range p.Tables() {
		b.WriteString("-- table " + tb.String() + ": resolution\n" + p.ResolveSQL(tb) + "\n")
	}
	return b.String()
}

func TestGoldenSQL(t *testing.T) {
	t.Run("blog", func(t *testing.T) {
		_, p := loadBlog(t, "1", "1", "1")
		golden(t, "blog", explainPlan(p))
	})
	t.Run("shop", func(t *testing.T) {
		_, p := loadShop(t)
		golden(t, "shop", explainPlan(p))
	})
}
