package follow_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
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
	return partitionedConfigEvery(t, db, dir, "200ms")
}

func partitionedConfigEvery(t *testing.T, db *pgtest.DB, dir, statusInterval string) string {
	return partitionedConfigWith(t, db, dir, "status_interval: "+statusInterval)
}

// partitionedConfigWith: capture's settings as given (the partitions are
// read every 5 status intervals, at least 1 s, at most 10 s).
func partitionedConfigWith(t *testing.T, db *pgtest.DB, dir, capture string) string {
	t.Helper()
	yaml := fmt.Sprintf(`source: {dsn: %q, slot: %s, publication: pub_%s}
state: {dir: %s}
capture: {%s}
indexes:
  - name: events
    table: public.events
  - name: posts
    table: public.posts
    relations:
      - {name: comments, table: public.comments, kind: has_many, join: {id: post_id}}
`, db.DSN, db.Name, db.Name, filepath.Join(dir, "state"), capture)
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

	// A leaf made and at once written, by a later transaction: its row came
	// through the stream, so no rebuild either, even when the first look
	// at the leaf finds the row.
	n = len(readLines(t, out))
	db.Exec(t, "CREATE TABLE events_2031 PARTITION OF events FOR VALUES FROM ('2031-01-01') TO ('2032-01-01')")
	db.Exec(t, "INSERT INTO events VALUES (501, '2031-02-01', 'made and written')")
	waitPartitionedFold(t, db, out, "a new partition written at once")
	time.Sleep(1500 * time.Millisecond) // a periodic look after it
	if ops := opsSince(t, out, n); len(ops) != 0 {
		t.Fatalf("a new partition written at once: lines %v, want no rebuild", ops)
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

	// While stopped: a leaf detached, changed (nothing of it is in the
	// stream) and attached again. Same table, same relfilenode: the new
	// pg_inherits row tells it; the next start rebuilds.
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	db.Exec(t, `ALTER TABLE events DETACH PARTITION events_2024;
		INSERT INTO events_2024 VALUES (600, '2024-09-01', 'while detached');
		ALTER TABLE events ATTACH PARTITION events_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`)
	n = len(readLines(t, out))
	p = start(t, out, "follow", "--config", cfg)
	waitPartitionedFold(t, db, out, "a DETACH, a change and an ATTACH while stopped")
	if ops := opsSince(t, out, n); !reflect.DeepEqual(ops, []string{"events:rebuild_start", "events:rebuild_done"}) {
		t.Fatalf("after a DETACH and ATTACH while stopped: lines %v, want one rebuild of events", ops)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A leaf made, written and detached between two periodic looks (every 10 s
// here) is in neither look, and the detach is not in the stream: the row
// the stream carried must not stay in the documents. The group that
// writes a partitioned table looks at the partitions before it builds, so
// the leaf is known and its detach seen by the next look. (Without that,
// this fails unless a periodic look falls in the few milliseconds between
// the CREATE and the insert's document.)
func TestFollowLeafMadeWrittenDetachedBetweenLooks(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, partitionedSchema)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", partitionedConfigEvery(t, db, dir, "2s"))
	waitPartitionedFold(t, db, out, "the backfill")

	db.Exec(t, "CREATE TABLE events_2032 PARTITION OF events FOR VALUES FROM ('2032-01-01') TO ('2033-01-01')")
	db.Exec(t, "INSERT INTO events VALUES (502, '2032-02-01', 'soon detached')")
	waitEvery(t, 20*time.Second, 5*time.Millisecond, func() bool { return fold(t, out)["502:2032-02-01"] != nil })
	db.Exec(t, "ALTER TABLE events DETACH PARTITION events_2032")
	// The marker: the fold reaches it only past the detach.
	db.Exec(t, "UPDATE posts SET title = title || '+'")
	deadline := time.Now().Add(25 * time.Second) // the next look, 10 s at most, and its rebuild
	for {
		got, want := fold(t, out), partitionedWant(t, db)
		if reflect.DeepEqual(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a leaf made, written and detached between two looks: the fold differs from the document queries:\n%s", diff(got, want))
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A partition attached while an index is rebuilt, and dropped right after
// the rebuild: pages of the rebuild read its rows, and no look at the
// partitions before or after the rebuild sees it. Each page reads the partitions after its
// scan, in its transaction (holding the leaves' locks): the rebuild saw
// other partitions than it was to be built from, so the index is rebuilt
// again at the next look, and the rows dropped leave the documents.
func TestFollowPartitionAttachedAndDroppedDuringARebuild(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, partitionedSchema)
	db.Exec(t, "INSERT INTO events SELECT g, date '2025-02-01' + g % 300, 'more ' || g FROM generate_series(1000, 40000) g")
	// The staged rows' ids come last in the scan's order: the pages after
	// the ATTACH read them.
	db.Exec(t, "UPDATE events_staging SET id = id + 90000")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	// Pages of 10 documents: the rebuild takes long enough to attach and
	// drop a partition in its middle.
	// The partitions are read every 10 s, and by a group that writes events.
	p := start(t, out, "follow", "--config", partitionedConfigWith(t, db, dir, "status_interval: 2s, batch_size: 10"))
	waitPartitionedFold(t, db, out, "the backfill")

	n := len(readLines(t, out))
	// A rebuild of events, at once: the insert's group looks.
	db.Exec(t, "TRUNCATE events_2024")
	db.Exec(t, "INSERT INTO events VALUES (7, '2026-07-07', 'after the truncate')")
	waitEvery(t, 20*time.Second, 2*time.Millisecond, func() bool {
		return slices.Contains(opsSince(t, out, n), "events:rebuild_start")
	})
	db.Exec(t, "ALTER TABLE events ATTACH PARTITION events_staging FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')")
	waitEvery(t, 20*time.Second, time.Millisecond, func() bool {
		return slices.Contains(opsSince(t, out, n), "events:rebuild_done")
	})
	// Dropped at once, before the next look.
	db.Exec(t, "DROP TABLE events_staging")
	if fold(t, out)["90100:2027-05-01"] == nil {
		t.Fatal("the rebuild did not read the partition attached in its middle: the test proves nothing")
	}
	db.Exec(t, "UPDATE posts SET title = title || '+'")
	waitPartitionedFold(t, db, out, "a partition attached and dropped during a rebuild")
	if !strings.Contains(p.stderr.String(), "the partitions changed while the index was rebuilt") {
		t.Fatalf("no rebuild was marked unsure:\n%s", tailString(p.stderr.String(), 3000))
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}

// A partitioned child at the default replica identity: its leaves send the
// key (id, day), and the key map resolves deletes and moves. A partition
// detached, changed and attached again (not in the stream) reads the map's
// entries again before the rebuild, so a later delete of a row moved while
// detached finds the post it is under now; so does a truncated leaf's.
func TestFollowPartitionedChildAtDefaultIdentity(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, strings.ReplaceAll(partitionedSchema, "ALTER TABLE comments_2024 REPLICA IDENTITY FULL; ALTER TABLE comments_2025 REPLICA IDENTITY FULL;", ""))
	db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	cfg := partitionedConfig(t, db, dir)
	p := start(t, out, "follow", "--config", cfg)
	waitPartitionedFold(t, db, out, "the backfill")
	if !strings.Contains(p.stderr.String(), "key map loaded") {
		t.Fatalf("no key map was loaded for the partitioned child:\n%s", tailString(p.stderr.String(), 3000))
	}
	db.Exec(t, "DELETE FROM comments WHERE id = 1; UPDATE comments SET post_id = 6 WHERE id = 2")
	waitPartitionedFold(t, db, out, "a delete and a move")

	// Comment 3 (in 2025) moves to post 1 while its partition is detached.
	db.Exec(t, `ALTER TABLE comments DETACH PARTITION comments_2025;
		UPDATE comments_2025 SET post_id = 1 WHERE id = 3;
		ALTER TABLE comments ATTACH PARTITION comments_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`)
	waitPartitionedFold(t, db, out, "a partition detached, changed and attached")
	db.Exec(t, "DELETE FROM comments WHERE id = 3")
	waitPartitionedFold(t, db, out, "a delete of a row moved while detached")

	// A truncated leaf: its rows leave the map; a new row of a key it held.
	db.Exec(t, "TRUNCATE comments_2024")
	waitPartitionedFold(t, db, out, "a truncated leaf")
	db.Exec(t, "INSERT INTO comments VALUES (4, '2024-06-01', 2, 'again')")
	db.Exec(t, "UPDATE comments SET post_id = 3 WHERE id = 4")
	waitPartitionedFold(t, db, out, "a key of the truncated leaf used again")

	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
	p = start(t, out, "follow", "--config", cfg)
	db.Exec(t, "DELETE FROM comments WHERE id IN (4, 5)")
	waitPartitionedFold(t, db, out, "deletes after a SIGKILL")
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}
