package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/provision"
)

// blogDB is cliDB with the blog workload's tables.
func blogDB(t *testing.T) *pgtest.DB {
	t.Helper()
	db := cliDB(t)
	db.Exec(t, `DROP TABLE posts, comments;`)
	db.LoadFile(t, filepath.Join(pgtest.RepoRoot(t), "workloads/blog/schema.sql"), map[string]string{"authors": "3", "posts": "5", "comments": "5"})
	return db
}

const recipeConfig = `source:
  dsn: %s
  slot: recipe
  publication: flusso_app
  provision: %s
state:
  dir: %s
indexes:
  - name: posts
    table: public.posts
    columns: [id, title]
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {author_id: id}
      - name: comments
        table: public.comments
        kind: has_many
        join: {id: post_id}
`

// docRecipe returns the SQL block of docs/setup.md under the marker
// "<!-- role recipe: NAME".
func docRecipe(t *testing.T, name string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(pgtest.RepoRoot(t), "docs/setup.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- role recipe: " + name + "[^\n]*-->\n```sql\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatalf("docs/setup.md has no role recipe %q", name)
	}
	return string(m[1])
}

// The role recipes of docs/setup.md, run as written (the database renamed),
// give a role that check finds ready: with provision auto, the role may
// create the publication for every table; with check, the publication the
// recipe creates is complete.
func TestSetupRoleRecipes(t *testing.T) {
	for _, mode := range []string{"auto", "check"} {
		t.Run(mode, func(t *testing.T) {
			db := blogDB(t)
			sql := strings.ReplaceAll(docRecipe(t, mode), " DATABASE app ", " DATABASE "+db.Name+" ")
			db.Exec(t, sql)
			u, err := url.Parse(db.DSN)
			if err != nil {
				t.Fatal(err)
			}
			u.User = url.UserPassword("flusso", "change-me")
			dir := t.TempDir()
			file := filepath.Join(dir, "flusso.yaml")
			if err := os.WriteFile(file, []byte(fmt.Sprintf(recipeConfig, u.String(), mode, filepath.Join(dir, "state"))), 0o600); err != nil {
				t.Fatal(err)
			}
			out, _, err := run(t, "check", "--config", file)
			if exitCode(err) != 0 {
				t.Fatalf("check as the recipe's role: exit %d (%v)\n%s", exitCode(err), err, out)
			}
		})
	}
}

// With no publication, the fixes check prints run as printed, in order:
// one CREATE PUBLICATION, the per-table verdicts covered by it (pasting
// them used to fail from the second CREATE PUBLICATION on).
func TestCheckFixesRunInOrder(t *testing.T) {
	db := blogDB(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "flusso.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(recipeConfig, db.DSN, "check", filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "check", "--config", file, "--json")
	if exitCode(err) != 1 {
		t.Fatalf("check without a publication: exit %d (%v), want 1", exitCode(err), err)
	}
	var rep provision.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	creates := 0
	for _, f := range rep.Findings {
		if f.Fix == "" || f.Status == provision.Info {
			continue // advice, not a problem (ALTER SYSTEM, which psql runs alone)
		}
		creates += strings.Count(f.Fix, "CREATE PUBLICATION flusso_app")
		if _, err := db.Pool.Exec(context.Background(), f.Fix); err != nil {
			t.Fatalf("the fix of %s %s fails as printed: %v\n%s", f.Check, f.Table, err, f.Fix)
		}
	}
	if creates != 1 {
		t.Fatalf("%d CREATE PUBLICATION statements among the fixes, want 1", creates)
	}
	out, _, err = run(t, "check", "--config", file)
	if exitCode(err) != 0 {
		t.Fatalf("check after running the fixes: exit %d\n%s", exitCode(err), out)
	}
}
