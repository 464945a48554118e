package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// owns gives the role every table of the blog schema and CREATE on the
// database: everything auto provisioning needs.
const owns = `ALTER TABLE authors OWNER TO %[1]s; ALTER TABLE posts OWNER TO %[1]s; ALTER TABLE comments OWNER TO %[1]s;
ALTER TABLE tags OWNER TO %[1]s; ALTER TABLE post_tags OWNER TO %[1]s;
DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %%I TO %[1]s', current_database()); END $$;`

var allBlog = []string{"public.authors", "public.comments", "public.post_tags", "public.posts", "public.tags"}

// A role with everything: the publication is missing, so auto provisioning
// creates it for exactly the tables read, records that it created it, and
// adds a table the config reads later; the report is then ready.
func TestEnsureAutoCreatesThenExtends(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema+"CREATE TABLE likes (id int PRIMARY KEY, post_id int); CREATE TABLE unrelated (id int PRIMARY KEY);",
		"REPLICATION", owns+"ALTER TABLE likes OWNER TO %[1]s;", "auto", blogIndexes)
	ctx := context.Background()

	before := f.inspect(t)
	want(t, before, CheckPublication, "", Warn, "flusso-pg will create it", "CREATE PUBLICATION "+f.pub+" FOR TABLE "+strings.Join(allBlog, ", ")+";")
	want(t, before, CheckCoverage, "public.comments", Warn, "flusso-pg will add it (provision: auto)", "-")
	want(t, before, CheckCreate, "", OK, "may create publications", "")
	if !before.Ready {
		t.Fatalf("a report whose only problems auto fixes must be ready:\n%s", dump(before))
	}

	r, err := Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log)
	if err != nil {
		t.Fatalf("ensure: %v", err)
	}
	if got := f.publicationTables(t); !slices.Equal(got, allBlog) {
		t.Fatalf("publication tables %v, want %v", got, allBlog)
	}
	if len(r.Actions) != 1 || !strings.HasPrefix(r.Actions[0], "CREATE PUBLICATION "+f.pub+" FOR TABLE ") {
		t.Fatalf("actions %q, want one CREATE PUBLICATION", r.Actions)
	}
	want(t, r, CheckPublication, "", OK, "publishes 5 table(s)", "")
	want(t, r, CheckCoverage, "public.comments", OK, "is in publication", "")
	want(t, r, CheckPublish, "", OK, "insert, update, delete and truncate", "")
	if !r.Ready || len(r.Failures()) != 0 {
		t.Fatalf("not ready after provisioning:\n%s", dump(r))
	}
	var rec state.Publication
	if ok, err := f.store.Load(state.PublicationRecord, &rec); err != nil || !ok || !rec.Created || rec.Name != f.pub {
		t.Fatalf("publication record %+v (found %v, %v), want created %s", rec, ok, err, f.pub)
	}

	// The config now also counts likes: auto adds it, and only it.
	f.cfg.Indexes[0].Aggregates = append(f.cfg.Indexes[0].Aggregates, config.Aggregate{Name: "likes", Table: "public.likes", Join: config.Pairs{{From: "id", To: "post_id"}}, Fn: "count"})
	r, err = Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log)
	if err != nil {
		t.Fatalf("ensure again: %v", err)
	}
	if len(r.Actions) != 1 || r.Actions[0] != "ALTER PUBLICATION "+f.pub+" ADD TABLE public.likes;" {
		t.Fatalf("actions %q, want ALTER PUBLICATION ... ADD TABLE public.likes;", r.Actions)
	}
	wantTables := append(slices.Clone(allBlog), "public.likes")
	slices.Sort(wantTables)
	if got := f.publicationTables(t); !slices.Equal(got, wantTables) {
		t.Fatalf("publication tables %v, want %v", got, wantTables)
	}
	if ok, _ := f.store.Load(state.PublicationRecord, &rec); !ok || !rec.Created {
		t.Fatalf("extending must keep the created record: %+v", rec)
	}

	// Nothing is missing: a third run does nothing.
	r, err = Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log)
	if err != nil || len(r.Actions) != 0 {
		t.Fatalf("third ensure: actions %q, err %v", r.Actions, err)
	}
}

// provision: check changes nothing and refuses with the same verdicts as
// the check command, each with its fix.
func TestEnsureCheckRefusesMissingTable(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "REPLICATION", owns, "check", blogIndexes)
	f.db.Exec(t, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE posts, authors, tags, post_tags", f.pub))
	r, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("err %v, want ErrNotReady", err)
	}
	fix := "ALTER PUBLICATION " + f.pub + " ADD TABLE public.comments;"
	want(t, r, CheckCoverage, "public.comments", Fail, "table public.comments is not in publication "+f.pub+", so its changes never reach flusso-pg", fix)
	want(t, r, CheckCoverage, "public.posts", OK, "is in publication", "")
	if !strings.Contains(err.Error(), fix) || !strings.Contains(err.Error(), "index posts: table public.comments is not in publication") {
		t.Fatalf("error does not name the index, the table and the fix:\n%v", err)
	}
	if got := f.publicationTables(t); len(got) != 4 {
		t.Fatalf("check mode changed the publication: %v", got)
	}
	if ok, _ := f.store.Load(state.PublicationRecord, &state.Publication{}); ok {
		t.Fatal("check mode wrote a publication record")
	}
	// The same verdict from Inspect, which is what `flusso-pg check` prints.
	want(t, f.inspect(t), CheckCoverage, "public.comments", Fail, "is not in publication", fix)

	// off assumes all is well.
	f.cfg.Source.Provision = config.ProvisionOff
	if r, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log); r != nil || err != nil {
		t.Fatalf("off: %v, %v; want nil, nil", r, err)
	}
}

// No REPLICATION attribute: the role cannot create the slot or stream.
func TestCheckNoReplication(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "", owns, "auto", blogIndexes)
	r := f.inspect(t)
	want(t, r, CheckReplicationRole, "", Fail, "role "+f.role+" has neither the REPLICATION attribute nor superuser",
		"ALTER ROLE "+f.role+" REPLICATION;  -- on Amazon RDS/Aurora: GRANT rds_replication TO "+f.role+";")
	if r.Ready {
		t.Fatal("ready without REPLICATION")
	}
	_, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "ALTER ROLE "+f.role+" REPLICATION;") {
		t.Fatalf("ensure: %v", err)
	}
	// auto still did what it could: the publication exists for the next run.
	if len(f.publicationTables(t)) != 5 {
		t.Fatal("auto did not create the publication")
	}
}

// No SELECT on one table; and no USAGE on a schema.
func TestCheckNoSelect(t *testing.T) {
	t.Parallel()
	schema := blogSchema + "CREATE SCHEMA hidden; CREATE TABLE hidden.notes (id int PRIMARY KEY, post_id int);"
	indexes := blogIndexes + `    aggregates:
      - name: notes
        table: hidden.notes
        join: {id: post_id}
        fn: count
`
	grants := "GRANT SELECT ON posts, authors, tags, post_tags TO %[1]s;"
	f := setup(t, schema, "REPLICATION", grants, "check", indexes)
	r := f.inspect(t)
	fix := "GRANT SELECT ON public.comments TO " + f.role + ";"
	if r.Version >= 14 {
		fix += "  -- or, for every table: GRANT pg_read_all_data TO " + f.role + ";"
	}
	want(t, r, CheckSelect, "public.comments", Fail, "role "+f.role+" has no SELECT on table public.comments", fix)
	want(t, r, CheckSchemaUsage, "hidden.notes", Fail, "may not use schema hidden", "GRANT USAGE ON SCHEMA hidden TO "+f.role+";")
	none(t, r, CheckSelect, "public.posts")
	if f := r.Find(CheckSelect, "public.comments"); f[0].Index != "posts" {
		t.Errorf("finding index %q, want posts", f[0].Index)
	}
	if r.Version >= 14 {
		// pg_read_all_data is enough for every table.
		f.db.Exec(t, "GRANT pg_read_all_data TO "+f.role)
		r := f.inspect(t)
		none(t, r, CheckSelect, "public.comments")
		want(t, r, CheckSelect, "", OK, "can read all 6 tables", "")
	}
}

// No CREATE on the database: auto cannot create the publication, and says
// what to grant or what to run instead.
func TestCheckNoCreate(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "REPLICATION", `ALTER TABLE authors OWNER TO %[1]s; ALTER TABLE posts OWNER TO %[1]s;
ALTER TABLE comments OWNER TO %[1]s; ALTER TABLE tags OWNER TO %[1]s; ALTER TABLE post_tags OWNER TO %[1]s;`, "auto", blogIndexes)
	r := f.inspect(t)
	create := "CREATE PUBLICATION " + f.pub + " FOR TABLE " + strings.Join(allBlog, ", ") + ";"
	want(t, r, CheckCreate, "", Fail, "role "+f.role+" has no CREATE on database "+f.db.Name+", so flusso-pg cannot create publication "+f.pub,
		"GRANT CREATE ON DATABASE "+f.db.Name+" TO "+f.role+";  -- or create the publication yourself: "+create)
	want(t, r, CheckPublication, "", Fail, "flusso-pg cannot create it", create)
	// One CREATE PUBLICATION (above) covers every table: fixes run in order.
	want(t, r, CheckCoverage, "public.posts", Fail, "is not in publication", "-- covered by the CREATE PUBLICATION above")
	_, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("ensure: %v", err)
	}
	var n int
	f.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM pg_publication WHERE pubname = $1", f.pub).Scan(&n)
	if n != 0 {
		t.Fatal("a publication was created without CREATE")
	}
}

// Not the owner: of a table missing from the publication, and of the
// publication itself. auto adds nothing it cannot, and the fix says who
// must run what.
func TestCheckNotOwner(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "REPLICATION", `ALTER TABLE authors OWNER TO %[1]s; ALTER TABLE posts OWNER TO %[1]s;
ALTER TABLE tags OWNER TO %[1]s; ALTER TABLE post_tags OWNER TO %[1]s; GRANT SELECT ON comments TO %[1]s;`, "auto", blogIndexes)
	f.db.Exec(t, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE posts; ALTER PUBLICATION %s OWNER TO %s", f.pub, f.pub, f.role))
	r := f.inspect(t)
	add := "ALTER PUBLICATION " + f.pub + " ADD TABLE public.comments;"
	want(t, r, CheckOwnership, "public.comments", Fail, "role "+f.role+" does not own table public.comments (its owner is postgres), and only the owner may add a table to a publication",
		add+"  -- run as postgres or a superuser; or: ALTER TABLE public.comments OWNER TO "+f.role+";")
	want(t, r, CheckCoverage, "public.comments", Fail, "is not in publication", add)
	want(t, r, CheckCoverage, "public.authors", Warn, "flusso-pg will add it", "-")
	none(t, r, CheckOwnership, "public.authors")

	_, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), add) {
		t.Fatalf("ensure: %v", err)
	}
	// The tables it could add are added; comments is not.
	if got, want := f.publicationTables(t), []string{"public.authors", "public.post_tags", "public.posts", "public.tags"}; !slices.Equal(got, want) {
		t.Fatalf("publication tables %v, want %v", got, want)
	}
	var rec state.Publication
	if ok, _ := f.store.Load(state.PublicationRecord, &rec); !ok || rec.Created {
		t.Fatalf("extending a publication flusso-pg did not create must record created=false: %+v", rec)
	}

	// A publication owned by someone else cannot be extended at all.
	f.db.Exec(t, fmt.Sprintf("ALTER PUBLICATION %s OWNER TO postgres", f.pub))
	r = f.inspect(t)
	want(t, r, CheckOwnership, "", Fail, "role "+f.role+" does not own publication "+f.pub+" (its owner is postgres)",
		"ALTER PUBLICATION "+f.pub+" OWNER TO "+f.role+";  -- or, as postgres: "+add)

	// With provision: check, you add the table yourself: ownership is
	// information, and the coverage verdict carries the fix.
	f.cfg.Source.Provision = config.ProvisionCheck
	r = f.inspect(t)
	none(t, r, CheckOwnership, "public.comments")
	want(t, r, CheckOwnership, "", Info, "does not own publication", "-")
	want(t, r, CheckCoverage, "public.comments", Fail, "is not in publication", add)
}

// REPLICA IDENTITY NOTHING: Postgres would refuse UPDATE and DELETE once
// the table is published, so auto never adds it; DEFAULT where the join
// column is not in the identity: build's verdict, merged into the report.
func TestCheckReplicaIdentity(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema+"ALTER TABLE comments REPLICA IDENTITY NOTHING; CREATE TABLE logs (post_id int, line text);",
		"REPLICATION", owns+"ALTER TABLE logs OWNER TO %[1]s;", "auto", blogIndexes+`    aggregates:
      - name: log_count
        table: public.logs
        join: {id: post_id}
        fn: count
`)
	r := f.inspect(t)
	want(t, r, CheckReplicaIdentity, "public.comments", Fail,
		"table public.comments has REPLICA IDENTITY NOTHING, so its old rows cannot be sent: once it is in publication "+f.pub+", Postgres refuses every UPDATE and DELETE on it",
		"ALTER TABLE public.comments REPLICA IDENTITY FULL;")
	want(t, r, CheckReplicaIdentity, "public.logs", Fail, "REPLICA IDENTITY DEFAULT and no primary key", "ALTER TABLE public.logs REPLICA IDENTITY FULL;")
	want(t, r, CheckCoverage, "public.comments", Fail, "is not in publication", "-")
	none(t, r, CheckReplicaIdentity, "public.posts")
	// build says the same about comments (no old row, so no post_id): one verdict is shown.
	_, problems, err := build.Compile(context.Background(), f.conn, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(problems, func(p build.Problem) bool { return p.Code == "replica_identity" && p.Table == "public.comments" }) {
		t.Fatalf("build has no replica_identity problem for comments: %v", problems)
	}
	r.AddProblems(problems)
	want(t, r, CheckReplicaIdentity, "public.comments", Fail, "Postgres refuses every UPDATE and DELETE on it", "ALTER TABLE public.comments REPLICA IDENTITY FULL;")

	_, err = Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("ensure: %v", err)
	}
	if slices.Contains(f.publicationTables(t), "public.comments") {
		t.Fatal("auto added a table without a replica identity")
	}
	// An UPDATE on the published tables still works.
	f.db.Exec(t, "INSERT INTO posts VALUES (1, 1, 'a'); UPDATE posts SET title = 'b'; DELETE FROM posts")

	// DEFAULT identity (the primary key id) does not carry comments.post_id:
	// with capture.key_map: auto, build says the key map resolves it (info);
	// with off, that FULL is needed, and check shows it.
	f.db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT")
	r = f.inspect(t)
	none(t, r, CheckReplicaIdentity, "public.comments")
	_, problems, err = build.Compile(context.Background(), f.conn, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.AddProblems(problems)
	want(t, r, "key_map", "public.comments", Info, "REPLICA IDENTITY DEFAULT sends only id in the old row, not post_id: a DELETE or an UPDATE that changes post_id finds its old document through the key map", "")
	none(t, r, "replica_identity", "public.comments")
	f.cfg.Capture.KeyMap = config.KeyMapOff
	defer func() { f.cfg.Capture.KeyMap = config.KeyMapAuto }()
	r = f.inspect(t)
	_, problems, err = build.Compile(context.Background(), f.conn, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.AddProblems(problems)
	got := want(t, r, "replica_identity", "public.comments", Fail, "relations[comments]: table public.comments: REPLICA IDENTITY DEFAULT sends only id in the old row, not post_id",
		"ALTER TABLE public.comments REPLICA IDENTITY FULL;")
	if got.Index != "posts" {
		t.Errorf("build's finding has index %q, want posts", got.Index)
	}
	f.db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY FULL; ALTER TABLE logs REPLICA IDENTITY FULL")
	if _, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log); err != nil {
		t.Fatalf("ensure after REPLICA IDENTITY FULL: %v", err)
	}
	if !slices.Contains(f.publicationTables(t), "public.comments") {
		t.Fatal("comments not added once it has an identity")
	}
}

// wal_level = replica: a separate cluster.
func TestCheckWalLevelReplica(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	c, err := pgtest.Start(pgtest.Options{Settings: []string{"wal_level = replica"}})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { stopCluster(c) })
	db := c.NewDB(t)
	db.Exec(t, blogSchema)
	cfg, err := config.Parse([]byte(fmt.Sprintf("source:\n  dsn: %s\n  slot: s\n  publication: p\n%s", db.DSN, blogIndexes)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(context.Background(), db.Pool, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want(t, r, CheckWalLevel, "", Fail, "wal_level is replica: logical decoding needs wal_level = logical",
		"ALTER SYSTEM SET wal_level = logical;  -- then restart the server (on Amazon RDS/Aurora: set rds.logical_replication = 1 in the parameter group and reboot)")
	want(t, r, CheckReplicationRole, "", OK, "superuser", "")
	if r.Ready {
		t.Fatal("ready with wal_level = replica")
	}
}

// What the publication publishes: options, FOR ALL TABLES, no tables,
// partitioned tables, row filters and column lists (PostgreSQL 15+).
func TestCheckPublicationShape(t *testing.T) {
	t.Parallel()
	schema := blogSchema + `CREATE TABLE events (id int, post_id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');`
	indexes := blogIndexes + `    aggregates:
      - name: events
        table: public.events
        join: {id: post_id}
        fn: count
`
	f := setup(t, schema, "SUPERUSER", "", "check", indexes)
	ctx := context.Background()
	pub := f.pub

	f.db.Exec(t, fmt.Sprintf("CREATE PUBLICATION %s WITH (publish = 'insert, update')", pub))
	r := f.inspect(t)
	want(t, r, CheckPublication, "", Warn, "publication "+pub+" exists but publishes no tables",
		"ALTER PUBLICATION "+pub+" ADD TABLE public.authors, public.comments, public.events, public.post_tags, public.posts, public.tags;")
	want(t, r, CheckPublish, "", Fail, "does not publish delete, truncate", "ALTER PUBLICATION "+pub+" SET (publish = 'insert, update, delete, truncate');")
	want(t, r, CheckPartitionRoot, "public.events", Fail, "publish_via_partition_root off", "ALTER PUBLICATION "+pub+" SET (publish_via_partition_root = true);")

	f.db.Exec(t, fmt.Sprintf("DROP PUBLICATION %s; CREATE PUBLICATION %s FOR ALL TABLES", pub, pub))
	r = f.inspect(t)
	want(t, r, CheckPublication, "", OK, "FOR ALL TABLES", "")
	want(t, r, CheckCoverage, "public.comments", OK, "is in publication", "")
	// Without publish_via_partition_root, the leaves are listed: covered, but under the leaves' names.
	want(t, r, CheckCoverage, "public.events", OK, "is in publication", "")
	want(t, r, CheckPartitionRoot, "public.events", Fail, "arrive under the partitions' names", "-")

	// auto with a FOR ALL TABLES publication: nothing to do, nothing touched.
	f.cfg.Source.Provision = config.ProvisionAuto
	f.db.Exec(t, fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true)", pub))
	if r, err := Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log); err != nil || len(r.Actions) != 0 {
		t.Fatalf("ensure with FOR ALL TABLES: %v, %v", r.Actions, err)
	}

	// auto creates a publication for a partitioned table through its root.
	f.db.Exec(t, "DROP PUBLICATION "+pub)
	r, err := Ensure(ctx, f.conn, f.cfg, nil, f.store, f.log)
	if err != nil {
		t.Fatalf("ensure: %v", err)
	}
	if !strings.HasSuffix(r.Actions[0], " WITH (publish_via_partition_root = true);") {
		t.Fatalf("actions %q: want publish_via_partition_root", r.Actions)
	}
	none(t, r, CheckPartitionRoot, "public.events")
	f.cfg.Source.Provision = config.ProvisionCheck

	if f.inspect(t).Version < 15 {
		return
	}
	f.db.Exec(t, fmt.Sprintf(`DROP PUBLICATION %[1]s; CREATE PUBLICATION %[1]s FOR TABLE posts, authors, tags, post_tags,
  comments (id, body) WITH (publish_via_partition_root = true); ALTER PUBLICATION %[1]s ADD TABLE events WHERE (id > 0)`, pub))
	r = f.inspect(t)
	readd := func(tab string) string {
		return "ALTER PUBLICATION " + pub + " DROP TABLE " + tab + ";\nALTER PUBLICATION " + pub + " ADD TABLE " + tab + ";"
	}
	got := want(t, r, CheckColumnList, "public.comments", Fail, "column list for public.comments leaves out post_id, which flusso-pg needs", readd("public.comments"))
	if got.Column != "post_id" {
		t.Errorf("column list finding names column %q, want post_id", got.Column)
	}
	want(t, r, CheckRowFilter, "public.events", Fail, "publishes only the rows of public.events WHERE (id > 0)", readd("public.events"))
	none(t, r, CheckColumnList, "public.posts")
}

// The slot: absent, healthy, not a pgoutput slot, in use by another process.
func TestCheckSlot(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "SUPERUSER", "", "check", blogIndexes)
	r := f.inspect(t)
	want(t, r, CheckSlot, "", Info, "slot "+f.slot+" does not exist yet", "")

	f.db.Exec(t, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'test_decoding')", f.slot))
	r = f.inspect(t)
	want(t, r, CheckSlot, "", Fail, `plugin "test_decoding", not a logical pgoutput slot`, "choose another name in source.slot")
	f.db.Exec(t, fmt.Sprintf("SELECT pg_drop_replication_slot('%s')", f.slot))
	f.db.Exec(t, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", f.slot))
	r = f.inspect(t)
	want(t, r, CheckSlot, "", OK, "slot "+f.slot+" exists (pgoutput, wal_status reserved, retains", "")
	want(t, r, CheckReplicationSlot, "", OK, "slot "+f.slot+" exists", "")

	pid := holdSlot(t, f)
	r = f.inspect(t)
	want(t, r, CheckSlot, "", Warn, fmt.Sprintf("is in use by process %d", pid), fmt.Sprintf("stop that process; or end it: SELECT pg_terminate_backend(%d);", pid))
}

// The report prints readably and as JSON.
func TestReportOutput(t *testing.T) {
	t.Parallel()
	r := &Report{Server: "17.2", Version: 17, Database: "app", Role: "flusso", Publication: "p", Slot: "s", Provision: "check", Ready: true}
	r.add(Finding{Check: CheckWalLevel, Status: OK, Message: "wal_level is logical"})
	r.add(Finding{Check: CheckCoverage, Status: Fail, Index: "posts", Table: "public.comments", Message: "table public.comments is not in publication p", Fix: "ALTER PUBLICATION p ADD TABLE public.comments;"})
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"  ok    wal_level", "  FAIL  publication_table  index posts: table public.comments is not in publication p",
		"fix: ALTER PUBLICATION p ADD TABLE public.comments;", "not ready: 1 problem(s) to fix, 0 warning(s)"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
	var js strings.Builder
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"ready": false`, `"check": "publication_table"`, `"status": "fail"`, `"index": "posts"`, `"fix": "ALTER PUBLICATION p ADD TABLE public.comments;"`, `"actions": []`} {
		if !strings.Contains(js.String(), s) {
			t.Errorf("JSON report lacks %s:\n%s", s, js.String())
		}
	}
	if err := r.Err(); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "index posts: table public.comments is not in publication p\n    fix: ALTER PUBLICATION p ADD TABLE public.comments;") {
		t.Fatalf("Err: %v", err)
	}
}

// A partition published through its root (publish_via_partition_root) and
// a view: neither can be followed under its own name.
func TestCheckPartitionAndView(t *testing.T) {
	t.Parallel()
	schema := `CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE notes (id int PRIMARY KEY, event_id int);
CREATE VIEW event_notes AS SELECT id, event_id FROM notes;`
	indexes := `
indexes:
  - name: events
    table: public.events_2026
    relations:
      - name: notes
        table: public.event_notes
        kind: has_many
        join: {id: event_id}
`
	f := setup(t, schema, "SUPERUSER", "", "auto", indexes)
	f.db.Exec(t, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE events WITH (publish_via_partition_root = true)", f.pub))
	r := f.inspect(t)
	want(t, r, CheckPartitionRoot, "public.events_2026", Fail,
		"table public.events_2026 is a partition of public.events, and publication "+f.pub+" publishes it through public.events",
		"name the partitioned table public.events in the config instead; or: ALTER PUBLICATION "+f.pub+" SET (publish_via_partition_root = false);")
	want(t, r, CheckCoverage, "public.events_2026", OK, "is in publication", "")
	want(t, r, CheckTable, "public.event_notes", Warn, "public.event_notes is a view, not a table: it cannot be in a publication", "read the tables it is built from instead")
	none(t, r, CheckCoverage, "public.event_notes")
	none(t, r, CheckReplicaIdentity, "public.event_notes")
	// auto adds nothing: the partition is published already, the view cannot be.
	_, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "is a partition of public.events") {
		t.Fatalf("ensure: %v", err)
	}
	if got := f.publicationTables(t); !slices.Equal(got, []string{"public.events"}) {
		t.Fatalf("publication tables %v", got)
	}
}

// Slot verdicts are capture's to act on (follow --resync replaces an
// invalidated slot): Ensure does not refuse over them, check reports them.
func TestEnsureLeavesSlotToCapture(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "SUPERUSER", "", "check", blogIndexes)
	f.db.Exec(t, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE posts, authors, comments, tags, post_tags", f.pub))
	f.db.Exec(t, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'test_decoding')", f.slot))
	r, err := Ensure(context.Background(), f.conn, f.cfg, nil, f.store, f.log)
	if err != nil {
		t.Fatalf("ensure refused over the slot: %v", err)
	}
	want(t, r, CheckSlot, "", Fail, "not a logical pgoutput slot", "-")
	if r.Ready {
		t.Fatal("report ready with a foreign slot")
	}
}

// Several flusso-pg (one slot each) sharing one publication, started at
// once under provision: auto: one creates the publication, the others find
// it made a moment after their look (a unique violation on its name) and go
// on from there; none fails.
func TestEnsureAutoConcurrentStarts(t *testing.T) {
	t.Parallel()
	f := setup(t, blogSchema, "REPLICATION", owns, "auto", blogIndexes)
	ctx := context.Background()
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() {
			conn, err := pgx.Connect(ctx, f.conn.Config().ConnString())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			store := state.New(t.TempDir(), fmt.Sprintf("%s_%d", f.slot, i))
			_, err = Ensure(ctx, conn, f.cfg, nil, store, f.log)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("a concurrent start failed: %v", err)
		}
	}
	var tables int
	if err := f.conn.QueryRow(ctx, "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1", f.pub).Scan(&tables); err != nil || tables != len(allBlog) {
		t.Fatalf("the publication has %d tables (err %v), want %d", tables, err, len(allBlog))
	}
}
