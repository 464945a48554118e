package follow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// exactSchema has the keys and load patterns that used to diverge: citext
// and numeric keys reached through children that spell them otherwise,
// composite text keys with ':' and '\' in them, a table reloaded with
// TRUNCATE and INSERT in one transaction, and float, date and timestamptz
// keys under a database whose settings print them otherwise. Every table is
// at the default replica identity: the children's deletes and moves go
// through the key map.
const exactSchema = `
CREATE EXTENSION citext;
CREATE TABLE users (email citext PRIMARY KEY, name text);
CREATE TABLE posts (id bigint PRIMARY KEY, author_email citext, title text);
CREATE TABLE n (id numeric PRIMARY KEY, v text);
CREATE TABLE nk (id bigint PRIMARY KEY, n_id numeric, v text);
CREATE TABLE c2 (a text, b text, v text, PRIMARY KEY (a, b));
CREATE TABLE c2kids (id bigint PRIMARY KEY, a text, b text, body text);
CREATE TABLE reload (id bigint PRIMARY KEY, v text);
CREATE TABLE fk (f float8 PRIMARY KEY, v text);
CREATE TABLE dk (d date, t timestamptz, v text, PRIMARY KEY (d, t));
CREATE TABLE marker (id int PRIMARY KEY, round int);
CREATE TABLE gposts (id bigint PRIMARY KEY, title text, slug text GENERATED ALWAYS AS (lower(title)) STORED);
CREATE TABLE grefs (id bigint PRIMARY KEY, post_slug text, body text);
INSERT INTO gposts VALUES (1, 'Hello'), (2, 'World');
INSERT INTO grefs VALUES (1, 'hello', 'r1'), (2, 'world', 'r2'), (3, 'hello!', 'r3');
INSERT INTO users VALUES ('Ada@Example.com', 'ada'), ('Bob@Example.com', 'bob');
INSERT INTO posts VALUES (1, 'ada@example.com', 'p1'), (2, 'BOB@EXAMPLE.COM', 'p2');
INSERT INTO n VALUES (2.0, 'two'), (3.50, 'three and a half');
INSERT INTO nk VALUES (1, 2, 'k1'), (2, 3.5, 'k2');
INSERT INTO c2 VALUES ('x:y', 'z', 'first'), ('x', 'y:z', 'second'), ('a\', 'b', 'third'), ('a', '\b', 'fourth');
INSERT INTO reload SELECT g, 'v' || g FROM generate_series(1, 50) g;
INSERT INTO fk VALUES (0.1 + 0.2, 'point three-ish'), (1e-300, 'tiny');
INSERT INTO dk VALUES ('2026-02-01', '2026-01-01 12:00:00.123456+05:30', 'one');
INSERT INTO marker VALUES (1, 0);
`

const exactIndexes = `
indexes:
  - name: users
    table: users
    relations:
      - {name: posts, table: posts, kind: has_many, join: {email: author_email}, columns: [id, title]}
  - name: n
    table: n
    relations:
      - {name: nk, table: nk, kind: has_many, join: {id: n_id}, columns: [id, v]}
  - name: c2
    table: c2
    relations:
      - {name: kids, table: c2kids, kind: has_many, join: {a: a, b: b}, columns: [id, body]}
  - {name: reload, table: reload}
  - {name: fk, table: fk}
  - {name: dk, table: dk}
  - {name: marker, table: marker}
  - name: gposts
    table: gposts
    relations:
      - {name: refs, table: grefs, kind: has_many, join: {slug: post_slug}, columns: [id, body]}
`

// TestExactKeysAndReloads runs a seeded random workload of those patterns
// under follow; after every burst, the fold of the stream must equal the
// fold of a fresh backfill (the index's query on the database), index by
// index and id by id.
func TestExactKeysAndReloads(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, exactSchema)
	// Settings that would print keys otherwise than flusso-pg's sessions do
	// (for every session of this database, the walsender's too).
	db.Exec(t, "ALTER DATABASE "+db.Name+" SET datestyle = 'SQL, DMY'; ALTER DATABASE "+db.Name+
		" SET extra_float_digits = -3; ALTER DATABASE "+db.Name+" SET timezone = 'Asia/Kolkata'")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "flusso.yaml")
	conf := fmt.Sprintf("source:\n  dsn: %s\n  slot: %s\n  publication: pub_%s\nstate:\n  dir: %s\ncapture:\n  status_interval: 1s\n  batch_size: 200\nbackfill:\n  workers: 2\n  batch_size: 100\n%s",
		db.DSN, db.Name, db.Name, filepath.Join(dir, "state"), exactIndexes)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.ndjson")
	p := xStart(t, out, "follow", "--config", cfg)

	rnd := rand.New(rand.NewSource(20))
	parts := []string{"x", "y", ":", `\`, "x:y", `a\`, `\:`, "z:", ""}
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	cases := []string{"ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.com", "bob@example.com", "Bob@Example.COM"}
	numbers := []string{"2", "2.0", "2.00", "3.5", "3.50", "3.500"}
	nextID := 100
	for round := 1; round <= 4; round++ {
		for i := 0; i < 25; i++ {
			nextID++
			var sql string
			switch rnd.Intn(14) {
			case 12:
				// A generated column on the parent side of a join: not in the
				// stream, not needed from it.
				sql = "UPDATE gposts SET title = title || '!' WHERE id = 1 + " + fmt.Sprint(rnd.Intn(2))
			case 13:
				sql = fmt.Sprintf("INSERT INTO grefs VALUES (%d, %s, 'g%d'); UPDATE grefs SET post_slug = %s WHERE id = 1", nextID, lit([]string{"hello", "hello!", "world!"}[rnd.Intn(3)]), nextID, lit([]string{"hello", "hello!!", "world"}[rnd.Intn(3)]))
			case 0:
				sql = fmt.Sprintf("INSERT INTO posts VALUES (%d, %s, 'p%d')", nextID, lit(cases[rnd.Intn(len(cases))]), nextID)
			case 1:
				sql = fmt.Sprintf("UPDATE posts SET title = title || '!', author_email = %s WHERE id = (SELECT min(id) FROM posts)", lit(cases[rnd.Intn(len(cases))]))
			case 2:
				sql = fmt.Sprintf("INSERT INTO nk VALUES (%d, %s, 'k%d')", nextID, numbers[rnd.Intn(len(numbers))], nextID)
			case 3:
				sql = fmt.Sprintf("UPDATE nk SET v = v || '!', n_id = %s WHERE id = (SELECT max(id) FROM nk)", numbers[rnd.Intn(len(numbers))])
			case 4:
				a, b := parts[rnd.Intn(len(parts))], parts[rnd.Intn(len(parts))]
				sql = fmt.Sprintf("INSERT INTO c2 VALUES (%s, %s, 'v%d') ON CONFLICT (a, b) DO UPDATE SET v = excluded.v", lit(a), lit(b), nextID)
			case 5:
				a, b := parts[rnd.Intn(len(parts))], parts[rnd.Intn(len(parts))]
				sql = fmt.Sprintf("INSERT INTO c2kids VALUES (%d, %s, %s, 'kid%d')", nextID, lit(a), lit(b), nextID)
			case 6:
				sql = "DELETE FROM c2 WHERE (a, b) = (SELECT a, b FROM c2 ORDER BY v LIMIT 1)"
			case 7:
				// The reload pattern: more rows than a resolve batch.
				k := 150 + rnd.Intn(500)
				sql = fmt.Sprintf("BEGIN; INSERT INTO reload VALUES (%d, 'before') ON CONFLICT DO NOTHING; TRUNCATE reload; INSERT INTO reload SELECT g, 'r%d-' || g FROM generate_series(1, %d) g; UPDATE reload SET v = v || '!' WHERE id %% 7 = 0; COMMIT",
					100000+nextID, round, k)
			case 8:
				sql = fmt.Sprintf("UPDATE fk SET v = v || '!'; INSERT INTO fk VALUES (%d.1 + 0.2, 'f%d'); DELETE FROM fk WHERE f = (SELECT min(f) FROM fk)", nextID, nextID)
			case 9:
				sql = fmt.Sprintf("INSERT INTO dk VALUES ('2026-02-01'::date + %d, '2026-01-01 12:00:00.123456+05:30'::timestamptz + interval '%d hours', 'd%d'); UPDATE dk SET v = v || '!' WHERE d = (SELECT min(d) FROM dk)", nextID, nextID, nextID)
			case 10:
				sql = fmt.Sprintf("UPDATE users SET name = name || '!' WHERE email = %s", lit(cases[rnd.Intn(len(cases))]))
			case 11:
				sql = "BEGIN; DELETE FROM dk WHERE d = (SELECT max(d) FROM dk); UPDATE n SET v = v || '!'; COMMIT"
			}
			db.Exec(t, sql)
		}
		db.Exec(t, fmt.Sprintf("UPDATE marker SET round = %d", round))
		xWaitFold(t, p, out, cfg, round, 90*time.Second)
	}
	var rows int
	db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM reload").Scan(&rows)
	if got := len(xFold(t, out)["reload"]); got != rows {
		t.Fatalf("reload: %d documents for %d rows", got, rows)
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// xWaitFold polls until the stream has the marker of round and its fold
// equals a fresh backfill's.
func xWaitFold(t *testing.T, p *proc, out, cfg string, round int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-p.done:
			p.done <- err // for the cleanup
			t.Fatalf("round %d: flusso-pg exited: %v\nstderr:\n%s", round, err, tailString(p.stderr.String(), 3000))
		default:
		}
		got := xFold(t, out)
		if m := got["marker"]["1"]; m != nil && fmt.Sprint(m.(map[string]any)["round"]) == fmt.Sprint(round) {
			want := xBackfill(t, cfg)
			if reflect.DeepEqual(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the fold of the stream differs from the backfill:\n%s", round, xDiff(got, want))
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("round %d: the stream did not reach the marker in %s\nstderr:\n%s", round, timeout, tailString(p.stderr.String(), 3000))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func xStart(t *testing.T, out string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &proc{stderr: &logBuf{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout = f
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("flusso-pg stderr:\n%s", tailString(p.stderr.String(), 4000))
		}
	})
	return p
}

// xBackfill runs the one-shot backfill (the indexes' queries) and folds it.
func xBackfill(t *testing.T, cfg string) map[string]map[string]any {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backfill.ndjson")
	cmd := exec.Command(binary, "backfill", "--config", cfg, "--output", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("backfill: %v\n%s", err, stderr.String())
	}
	return xFold(t, path)
}

// xFold folds an NDJSON output per index and id: the last line wins,
// delete removes, truncate empties the index, rebuild_done removes what its
// rebuild did not upsert.
func xFold(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	docs := map[string]map[string]any{}
	rebuilt := map[string]map[string]bool{}
	for i, text := range wholeLines(t, path) {
		n := i + 1
		var l struct {
			Index string          `json:"index"`
			Op    string          `json:"op"`
			ID    string          `json:"id"`
			Key   json.RawMessage `json:"key"`
			Doc   json.RawMessage `json:"doc"`
		}
		if err := json.Unmarshal(text, &l); err != nil {
			t.Fatalf("%s line %d is not JSON: %v: %q", path, n, err, tailString(string(text), 300))
		}
		if docs[l.Index] == nil {
			docs[l.Index] = map[string]any{}
		}
		switch l.Op {
		case "upsert":
			if len(l.Key) == 0 || l.ID == "" {
				t.Fatalf("line %d: upsert without key or id: %s", n, text)
			}
			docs[l.Index][l.ID] = decode(t, l.Doc)
			if rebuilt[l.Index] != nil {
				rebuilt[l.Index][l.ID] = true
			}
		case "delete":
			delete(docs[l.Index], l.ID)
		case "truncate":
			docs[l.Index] = map[string]any{}
		case "rebuild_start":
			rebuilt[l.Index] = map[string]bool{}
		case "rebuild_done":
			for id := range docs[l.Index] {
				if !rebuilt[l.Index][id] {
					delete(docs[l.Index], id)
				}
			}
			delete(rebuilt, l.Index)
		default:
			t.Fatalf("line %d: op %q", n, l.Op)
		}
	}
	for ix, m := range docs {
		if len(m) == 0 {
			delete(docs, ix)
		}
	}
	return docs
}

func xDiff(got, want map[string]map[string]any) string {
	var lines []string
	for ix := range union(got, want) {
		for id, w := range want[ix] {
			g, ok := got[ix][id]
			if !ok {
				lines = append(lines, fmt.Sprintf("%s: missing %q", ix, id))
			} else if !reflect.DeepEqual(g, w) {
				gj, _ := json.Marshal(g)
				wj, _ := json.Marshal(w)
				lines = append(lines, fmt.Sprintf("%s %q:\n  got  %s\n  want %s", ix, id, gj, wj))
			}
		}
		for id := range got[ix] {
			if _, ok := want[ix][id]; !ok {
				lines = append(lines, fmt.Sprintf("%s: extra %q", ix, id))
			}
		}
	}
	sort.Strings(lines)
	if len(lines) > 40 {
		lines = append(lines[:40], fmt.Sprintf("... and %d more", len(lines)-40))
	}
	return strings.Join(lines, "\n")
}

func union(a, b map[string]map[string]any) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// TestWhereNextvalRefusedByFollow: follow refuses a where that calls
// nextval() at start, naming it, and the sequence does not move.
func TestWhereNextvalRefusedByFollow(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, "CREATE SEQUENCE s; CREATE TABLE posts (id bigint PRIMARY KEY, title text); INSERT INTO posts VALUES (1, 'a'), (5000, 'b')")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "flusso.yaml")
	conf := fmt.Sprintf("source:\n  dsn: %s\n  slot: %s\n  publication: pub_%s\nstate:\n  dir: %s\nindexes:\n  - {name: posts, table: posts, where: \"id < 1000 OR nextval('s') > 0\"}\n",
		db.DSN, db.Name, db.Name, filepath.Join(dir, "state"))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := xStart(t, filepath.Join(dir, "out.ndjson"), "follow", "--config", cfg)
	select {
	case <-p.done:
		p.done <- nil
	case <-time.After(60 * time.Second):
		t.Fatal("follow did not refuse the config")
	}
	if code := p.cmd.ProcessState.ExitCode(); code == 0 {
		t.Fatalf("exit 0 with nextval() in a where")
	}
	if msg := p.stderr.String(); !strings.Contains(msg, "nextval()") || !strings.Contains(msg, "VOLATILE") {
		t.Fatalf("the refusal does not name nextval(): %s", msg)
	}
	var called bool
	db.Pool.QueryRow(context.Background(), "SELECT is_called FROM s").Scan(&called)
	if called {
		t.Fatal("the sequence moved")
	}
}
