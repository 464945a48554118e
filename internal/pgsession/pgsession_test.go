package pgsession_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// hostileRole creates a role whose own settings would break flusso-pg's
// sessions: tiny timeouts, another time zone and date style, rounded floats,
// writable transactions. It returns a DSN for it.
func hostileRole(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	role := db.Name + "_r"
	db.Exec(t, `CREATE ROLE `+role+` LOGIN PASSWORD 'x';
		GRANT ALL ON SCHEMA public TO `+role+`;
		GRANT SELECT ON ALL TABLES IN SCHEMA public TO `+role+`;
		GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO `+role+`;
		ALTER ROLE `+role+` SET statement_timeout = '2ms';
		ALTER ROLE `+role+` SET idle_in_transaction_session_timeout = '100ms';
		ALTER ROLE `+role+` SET idle_session_timeout = '100ms';
		ALTER ROLE `+role+` SET timezone = 'Asia/Kolkata';
		ALTER ROLE `+role+` SET datestyle = 'SQL, DMY';
		ALTER ROLE `+role+` SET intervalstyle = 'sql_standard';
		ALTER ROLE `+role+` SET extra_float_digits = -3;
		ALTER ROLE `+role+` SET default_transaction_read_only = off;`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db.Pool.Exec(ctx, "DROP OWNED BY "+role)
		db.Pool.Exec(ctx, "DROP ROLE IF EXISTS "+role)
	})
	return db.Cluster.DSNAs(db.Name, role, "x")
}

func parseConfig(t *testing.T, indexes string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte("source:\n  dsn: postgres://x@localhost/x\n  slot: s\n  publication: p\nindexes:\n" + indexes))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestSessionsPinTheirSettings: whatever the role says, flusso-pg's
// sessions have no timeouts, read-only transactions and the text settings.
func TestSessionsPinTheirSettings(t *testing.T) {
	db := pgtest.NewDB(t)
	dsn := hostileRole(t, db)
	want := pgsession.Params()
	check := func(name string, q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) {
		for k, v := range want {
			var got string
			if err := q.QueryRow(ctxT(t), "SELECT current_setting($1)", k).Scan(&got); err != nil {
				t.Fatalf("%s: %s: %v", name, k, err)
			}
			if got != v {
				t.Errorf("%s: %s = %q, want %q", name, k, got, v)
			}
		}
		var app string
		q.QueryRow(ctxT(t), "SELECT current_setting('application_name')").Scan(&app)
		if app != "flusso-pg" {
			t.Errorf("%s: application_name %q", name, app)
		}
	}
	conn, err := pgsession.Connect(ctxT(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	check("Connect", conn)
	pool, err := pgsession.OpenPool(ctxT(t), dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	check("OpenPool", pool)

	// The test can fail: a plain connection gets the role's settings.
	plain, err := pgx.Connect(ctxT(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(context.Background())
	var tz string
	plain.QueryRow(ctxT(t), "SHOW timezone").Scan(&tz)
	if tz != "Asia/Kolkata" {
		t.Fatalf("the role's time zone did not apply to a plain connection: %q", tz)
	}
}

// TestRoleTimeoutsDoNotBreak: a role's statement_timeout of 2 ms and
// idle_in_transaction_session_timeout of 100 ms break neither validation
// nor a backfill's scan inside a long snapshot transaction; a key's text
// is the same as under the server's settings.
func TestRoleTimeoutsDoNotBreak(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE posts (id bigint PRIMARY KEY, title text);
		CREATE TABLE comments (id bigint PRIMARY KEY, post_id bigint, body text, score float8);
		ALTER TABLE comments REPLICA IDENTITY FULL;
		INSERT INTO posts SELECT g, 'post ' || g FROM generate_series(1, 5000) g;
		INSERT INTO comments SELECT g, 1 + g % 5000, 'c' || g, g / 3.0 FROM generate_series(1, 15000) g;
		CREATE INDEX ON comments (post_id);
		CREATE TABLE tk (t timestamptz PRIMARY KEY, d date, i interval, f float8);
		INSERT INTO tk VALUES ('2026-01-01 12:00:00.123456+05:30', '2026-02-01', '1 day 02:03:04', 0.1);`)
	dsn := hostileRole(t, db)
	cfg := parseConfig(t, `  - name: posts
    table: posts
    relations:
      - {name: comments, table: comments, kind: has_many, join: {id: post_id}, where: "score > 0"}
  - {name: tk, table: tk, key: [t]}
`)

	// The test can fail: the role's timeout cancels a plain session's scan.
	plain, err := pgxpool.New(ctxT(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if p, problems, err := build.Compile(ctxT(t), db.Pool, cfg); err != nil || p == nil {
		t.Fatalf("compile: %v %v", err, problems)
	} else if _, _, err := p.Indexes[0].Scan(ctxT(t), plain, nil, nil, 0, func(build.Doc) error { return nil }); !isCode(err, "57014") {
		t.Fatalf("a plain session of the role scanned everything (%v): the test proves nothing", err)
	}

	pool, err := pgsession.OpenPool(ctxT(t), dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	p, problems, err := build.Compile(ctxT(t), pool, cfg)
	if err != nil || p == nil {
		t.Fatalf("validation as the role: %v %v", err, problems)
	}
	// As the backfill reads: REPEATABLE READ, READ ONLY, idle between batches.
	tx, err := pool.BeginTx(ctxT(t), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	time.Sleep(300 * time.Millisecond) // past the role's idle_in_transaction_session_timeout
	_, n, err := p.Indexes[0].Scan(ctxT(t), tx, nil, nil, 0, func(build.Doc) error { return nil })
	if err != nil || n != 5000 {
		t.Fatalf("scan as the role: %d documents, %v", n, err)
	}
	var id, key string
	if _, _, err := p.Indexes[1].Scan(ctxT(t), tx, nil, nil, 0, func(d build.Doc) error {
		id, key = d.ID, string(d.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if id != "2026-01-01 06:30:00.123456+00" || key != `{"t":"2026-01-01T06:30:00.123456+00:00"}` {
		t.Errorf("timestamptz key spelt by the role's settings: id %q key %s", id, key)
	}
	var doc string
	p.Indexes[1].Scan(ctxT(t), tx, nil, nil, 0, func(d build.Doc) error { doc = string(d.Doc); return nil })
	if !strings.Contains(doc, `"i" : "1 day 02:03:04"`) || !strings.Contains(doc, `"f" : 0.1`) {
		t.Errorf("values spelt by the role's settings: %s", doc)
	}
	time.Sleep(300 * time.Millisecond) // past the role's idle_session_timeout
	if err := pool.Ping(ctxT(t)); err != nil {
		t.Errorf("an idle session was ended: %v", err)
	}
}

// TestReadOnly: a where calling nextval() is refused by validation, and
// even unvalidated, a build on flusso-pg's sessions cannot move the
// sequence; ReadWrite's Exec can write (provisioning).
func TestReadOnly(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE SEQUENCE s; CREATE TABLE posts (id bigint PRIMARY KEY, title text); INSERT INTO posts VALUES (1, 'a');`)
	pool, err := pgsession.OpenPool(ctxT(t), db.DSN, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg := parseConfig(t, "  - {name: posts, table: posts, where: \"id > 1000 OR nextval('s') > 0\"}\n")
	p, problems, err := build.Compile(ctxT(t), pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p != nil || !strings.Contains(problemText(problems), "nextval") {
		t.Fatalf("nextval() in a where passed validation: %v", problems)
	}
	cat, err := build.LoadCatalog(ctxT(t), pool, build.ConfigTables(cfg))
	if err != nil {
		t.Fatal(err)
	}
	p, problems = build.NewPlan(cat, cfg) // no server checks
	if p == nil {
		t.Fatal(problems)
	}
	err = p.Indexes[0].Build(ctxT(t), pool, []build.Key{{"1"}}, func(build.Doc) error { return nil })
	if !isCode(err, "25006") {
		t.Fatalf("build with nextval() on a flusso-pg session: %v, want a read-only refusal", err)
	}
	var called bool
	db.Pool.QueryRow(ctxT(t), "SELECT is_called FROM s").Scan(&called)
	if called {
		t.Fatal("the sequence moved")
	}
	w := pgsession.ReadWrite(pool)
	if _, err := w.Exec(ctxT(t), "CREATE PUBLICATION p_"+db.Name+" FOR TABLE posts"); err != nil {
		t.Fatalf("ReadWrite: %v", err)
	}
	if _, err := pool.Exec(ctxT(t), "DROP PUBLICATION p_"+db.Name); !isCode(err, "25006") {
		t.Fatalf("the pool itself writes: %v", err)
	}
}

func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

func problemText(ps []build.Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}
