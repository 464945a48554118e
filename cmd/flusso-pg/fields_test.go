package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateAndExplainFields: validate and explain show each computed
// field's type and the columns it reads; a bad one is an error naming the
// index, the field and the server's message.
func TestValidateAndExplainFields(t *testing.T) {
	db := cliDB(t)
	file := filepath.Join(t.TempDir(), "flusso.yaml")
	write := func(fields string) {
		yaml := fmt.Sprintf(`source:
  dsn: %s
  slot: cli_slot
  publication: cli_pub
  provision: check
indexes:
  - name: posts
    table: public.posts
    fields:
%s
    relations:
      - name: comments
        table: public.comments
        kind: has_many
        join: {id: post_id}
        fields:
          - {name: size, expr: "length(body)"}
`, db.DSN, fields)
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`      - {name: loud, expr: "upper(title)"}
      - {name: version, expr: "xmin::text::bigint"}`)
	out, _, err := run(t, "validate", "--config", file)
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	for _, s := range []string{
		`field index "posts".fields[loud] = upper(title): text, reads title`,
		`field index "posts".fields[version] = xmin::text::bigint: bigint, reads xmin`,
		`field index "posts".relations[comments].fields[size] = length(body): integer, reads body`,
	} {
		if !strings.Contains(out, s) {
			t.Errorf("validate lacks %q:\n%s", s, out)
		}
	}
	out, _, err = run(t, "explain", "--config", file)
	if err != nil || !strings.Contains(out, `-- field index "posts".fields[loud] = upper(title): text, reads title`) {
		t.Errorf("explain (%v) lacks the field line:\n%s", err, out)
	}

	write(`      - {name: loud, expr: "upper(titel)"}`)
	out, _, err = run(t, "validate", "--config", file)
	want := `error: index "posts".fields[loud]: index posts, field loud: expression "upper(titel)" on table public.posts: ERROR: column "titel" does not exist`
	if exitCode(err) != 1 || !strings.Contains(out, want) {
		t.Errorf("validate: exit %d, want 1 and %q:\n%s", exitCode(err), want, out)
	}
}
