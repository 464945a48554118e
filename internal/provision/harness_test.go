package provision

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// blogSchema is what most tests start from: posts read authors (belongs_to),
// comments (has_many, written without a schema) and tags through post_tags.
const blogSchema = `
CREATE TABLE authors (id int PRIMARY KEY, name text);
CREATE TABLE posts (id int PRIMARY KEY, author_id int, title text);
CREATE TABLE comments (id int PRIMARY KEY, post_id int, body text);
CREATE TABLE tags (id int PRIMARY KEY, name text);
CREATE TABLE post_tags (post_id int, tag_id int, PRIMARY KEY (post_id, tag_id));
`

const blogIndexes = `
indexes:
  - name: posts
    table: public.posts
    relations:
      - name: author
        table: public.authors
        kind: belongs_to
        join: {author_id: id}
      - name: comments
        table: comments
        kind: has_many
        join: {id: post_id}
      - name: tags
        table: public.tags
        kind: many_to_many
        through:
          table: public.post_tags
          join: {id: post_id}
          target_join: {tag_id: id}
`

// fixture is a fresh database, a login role of the test's own with the
// attributes asked for, and a config that connects as that role.
type fixture struct {
	db    *pgtest.DB
	role  string
	pub   string
	slot  string
	cfg   *config.Config
	store *state.Store
	conn  *pgx.Conn // as the role
	log   *zap.Logger
}

var roleSeq atomic.Int64

// setup starts a fixture. attrs are CREATE ROLE options beyond LOGIN
// ("REPLICATION", "SUPERUSER", ""); grants run as the superuser after the
// schema, with %[1]s standing for the role.
func setup(t *testing.T, schema, attrs, grants, provision, indexes string) *fixture {
	t.Helper()
	c := pgtest.Shared(t)
	seq := roleSeq.Add(1)
	f := &fixture{role: fmt.Sprintf("flusso_%s_%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_")), seq)}
	if len(f.role) > 60 {
		f.role = fmt.Sprintf("flusso_role_%d", seq)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN %s", f.role, attrs)); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	// Registered before the database's cleanup, so it runs after it.
	t.Cleanup(func() {
		admin, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			return
		}
		defer admin.Close(ctx)
		admin.Exec(ctx, "DROP ROLE IF EXISTS "+f.role)
	})
	f.db = c.NewDB(t)
	f.db.Exec(t, schema)
	if grants != "" {
		f.db.Exec(t, fmt.Sprintf(grants, f.role))
	}
	f.pub, f.slot = "pub_"+f.db.Name, "slot_"+f.db.Name
	yaml := fmt.Sprintf("source:\n  dsn: %s\n  slot: %s\n  publication: %s\n  provision: %s\n%s",
		c.DSNAs(f.db.Name, f.role, "x"), f.slot, f.pub, provision, indexes)
	f.cfg, err = config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	f.store = state.New(t.TempDir(), f.slot)
	f.conn, err = pgx.Connect(ctx, f.cfg.Source.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.conn.Close(context.Background()) })
	f.log = zaptest.NewLogger(t)
	return f
}

func (f *fixture) inspect(t *testing.T) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Inspect(ctx, f.conn, f.cfg, nil)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	return r
}

// want asserts that the report holds exactly one finding of check for
// table ("" for a finding about no table), with status, a message containing msg and a
// fix equal to fix (when fix is not "-").
func want(t *testing.T, r *Report, check, table string, status Status, msg, fix string) Finding {
	t.Helper()
	fs := exactly(r.Find(check, table), table)
	if len(fs) != 1 {
		t.Fatalf("want one %s finding for table %q, got %d:\n%s", check, table, len(fs), dump(r))
	}
	f := fs[0]
	if f.Status != status {
		t.Errorf("%s %s: status %s, want %s (%s)", check, table, f.Status, status, f.Message)
	}
	if !strings.Contains(f.Message, msg) {
		t.Errorf("%s %s: message %q does not contain %q", check, table, f.Message, msg)
	}
	if fix != "-" && f.Fix != fix {
		t.Errorf("%s %s: fix\n  %q\nwant\n  %q", check, table, f.Fix, fix)
	}
	return f
}

func none(t *testing.T, r *Report, check, table string) {
	t.Helper()
	if fs := exactly(r.Find(check, table), table); len(fs) != 0 {
		t.Fatalf("want no %s finding for table %q, got:\n%s", check, table, dump(r))
	}
}

func exactly(fs []Finding, table string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Table == table {
			out = append(out, f)
		}
	}
	return out
}

func dump(r *Report) string {
	var b strings.Builder
	r.WriteText(&b)
	return b.String()
}

// stopCluster stops a cluster a test started itself and removes its files.
func stopCluster(c *pgtest.Cluster) {
	c.Stop()
	os.RemoveAll(filepath.Dir(c.DataDir))
}

func (f *fixture) publicationTables(t *testing.T) []string {
	t.Helper()
	rows, err := f.db.Pool.Query(context.Background(),
		`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, f.pub)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
