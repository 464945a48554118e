package follow_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// partitionedSchema: events partitioned by year (an index of its own) and
// comments partitioned likewise, a has_many child of posts; every leaf
// REPLICA IDENTITY FULL, staging a table to attach later.
const partitionedSchema = `
CREATE TABLE events (id int, day date, title text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, date '2024-03-01' + (g % 3) * 365, 'e' || g FROM generate_series(1, 30) g;
CREATE TABLE events_staging (id int, day date, title text, PRIMARY KEY (id, day));
INSERT INTO events_staging SELECT g, date '2027-05-01', 'staged ' || g FROM generate_series(100, 104) g;
CREATE TABLE posts (id int PRIMARY KEY, title text);
INSERT INTO posts SELECT g, 'p' || g FROM generate_series(1, 6) g;
CREATE TABLE comments (id int, day date, post_id int, body text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE comments_2024 PARTITION OF comments FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE comments_2025 PARTITION OF comments FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO comments SELECT g, date '2024-06-01' + (g % 2) * 365, g % 6 + 1, 'c' || g FROM generate_series(1, 24) g;
ALTER TABLE events_2024 REPLICA IDENTITY FULL; ALTER TABLE events_2025 REPLICA IDENTITY FULL;
ALTER TABLE events_2026 REPLICA IDENTITY FULL; ALTER TABLE events_staging REPLICA IDENTITY FULL;
ALTER TABLE comments_2024 REPLICA IDENTITY FULL; ALTER TABLE comments_2025 REPLICA IDENTITY FULL;
ALTER TABLE events REPLICA IDENTITY FULL; ALTER TABLE comments REPLICA IDENTITY FULL;
`

// partitionedReference is what the two indexes' document queries give:
// id and document per key.
const partitionedReference = `
SELECT e.id || ':' || e.day, row_to_json(e)::text FROM events e
UNION ALL
SELECT p.id::text, json_build_object('id', p.id, 'title', p.title, 'comments',
  coalesce((SELECT json_agg(row_to_json(c) ORDER BY c.id, c.day) FROM comments c WHERE c.post_id = p.id), '[]'))::text
FROM posts p`

func partitionedConfig(t *testing.T, db *pgtest.DB, dir string) string {
	t.Helper()
	yaml := fmt.Sprintf(`source: {dsn: %q, slot: %s, publication: pub_%s}
state: {dir: %s}
capture: {status_interval: 200ms}
indexes:
  - name: events
    table: public.events
  - name: posts
    table: public.posts
    relations:
      - {name: comments, table: public.comments, kind: has_many, join: {id: post_id}}
`, db.DSN, db.Name, db.Name, filepath.Join(dir, "state"))
	path := filepath.Join(dir, "flusso.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func partitionedWant(t *testing.T, db *pgtest.DB) map[string]any {
	t.Helper()
	rows, err := db.Pool.Query(t.Context(), partitionedReference)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := map[string]any{}
	for rows.Next() {
		var id, doc string
		if err := rows.Scan(&id, &doc); err != nil {
			t.Fatal(err)
		}
		want[id] = decode(t, []byte(doc))
	}
	return want
}

func waitPartitionedFold(t *testing.T, db *pgtest.DB, out, step string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, want := fold(t, out), partitionedWant(t, db)
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the fold differs from the document queries:\n%s", step, diff(got, want))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// opsSince lists the ops of the lines of out after the first n, with their index.
func opsSince(t *testing.T, out string, n int) []string {
	t.Helper()
	var ops []string
	for _, l := range readLines(t, out)[n:] {
		var v struct{ Index, Op string }
		json.Unmarshal([]byte(l), &v)
		if v.Op != "upsert" {
			ops = append(ops, v.Index+":"+v.Op)
		}
	}
	return ops
}

// Partition maintenance under publish_via_partition_root (what provision
// auto creates) is not in the logical stream: a TRUNCATE of a leaf, an
// ATTACH, a DETACH and a DROP of a partition. Each is detected and rebuilds
// inline the index that reads the table (rebuild_start, every document,
// rebuild_done); the stream goes on, and the fold equals the document
// queries after each step. A change made while flusso-pg is stopped is
// rebuilt at the next start.
func TestFollowPartitionMaintenanceRebuilds(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, partitionedSchema)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	cfg := partitionedConfig(t, db, dir)
	p := start(t, out, "follow", "--config", cfg)
	waitPartitionedFold(t, db, out, "the backfill")

	steps := []struct{ name, sql, index string }{
		{"a TRUNCATE of a leaf", "TRUNCATE events_2024", "events"},
		{"an ATTACH PARTITION", "ALTER TABLE events ATTACH PARTITION events_staging FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')", "events"},
		{"a DETACH PARTITION", "ALTER TABLE events DETACH PARTITION events_2025", "events"},
		{"a DROP of a leaf", "DROP TABLE events_2026", "events"},
		{"a TRUNCATE of a child's leaf", "TRUNCATE comments_2024", "posts"},
	}
	for _, s := range steps {
		n := len(readLines(t, out))
		db.Exec(t, s.sql)
		// A change that does arrive, after the maintenance: the stream goes on.
		db.Exec(t, "UPDATE posts SET title = title || '+'")
		waitPartitionedFold(t, db, out, s.name)
		waitFor(t, 20*time.Second, func() bool {
			ops := opsSince(t, out, n)
			return len(ops) >= 2 && ops[len(ops)-1] == s.index+":rebuild_done"
		})
		t.Logf("%s (%s): lines %v", s.name, s.sql, opsSince(t, out, n))
	}

	// A new partition without rows (what a time-partitioned table gets
	// every day) changes no document: no rebuild; its rows come through
	// the stream.
	n := len(readLines(t, out))
	db.Exec(t, "CREATE TABLE events_2030 PARTITION OF events FOR VALUES FROM ('2030-01-01') TO ('2031-01-01')")
	time.Sleep(3 * time.Second) // several reads of the partitions (every second here)
	db.Exec(t, "INSERT INTO events VALUES (500, '2030-02-01', 'in the new partition')")
	waitPartitionedFold(t, db, out, "a new empty partition")
	if ops := opsSince(t, out, n); len(ops) != 0 {
		t.Fatalf("a new empty partition: lines %v, want no rebuild", ops)
	}

	// While stopped: a leaf dropped; the next start rebuilds.
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	db.Exec(t, "DROP TABLE comments_2025")
	n = len(readLines(t, out))
	p = start(t, out, "follow", "--config", cfg)
	waitPartitionedFold(t, db, out, "a DROP while stopped")
	if ops := opsSince(t, out, n); !reflect.DeepEqual(ops, []string{"posts:rebuild_start", "posts:rebuild_done"}) {
		t.Fatalf("after a DROP while stopped: lines %v, want one rebuild of posts", ops)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}
