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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flusso-follow-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "flusso-pg")
	// A plain build: these tests measure the real binary (memory, latency);
	// the race detector runs over the packages' own tests.
	if out, err := exec.Command("go", "build", "-o", binary, "../../cmd/flusso-pg").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build flusso-pg: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	pgtest.Main(m)
}

// blog loads the blog workload at a small size into a fresh database.
func blog(t *testing.T, authors, posts, comments int) *pgtest.DB {
	t.Helper()
	db := pgtest.NewDB(t)
	db.LoadFile(t, filepath.Join(pgtest.RepoRoot(t), "workloads/blog/schema.sql"), map[string]string{
		"authors": fmt.Sprint(authors), "posts": fmt.Sprint(posts), "comments": fmt.Sprint(comments)})
	return db
}

// writeConfig writes the blog config pointing at db, with its state in dir.
func writeConfig(t *testing.T, db *pgtest.DB, dir string, extra string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pgtest.RepoRoot(t), "workloads/blog/flusso.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(data)
	cfg = strings.Replace(cfg, "postgres://postgres@127.0.0.1:5432/blog?sslmode=disable", db.DSN, 1)
	cfg = strings.Replace(cfg, "slot: flusso_blog", "slot: "+db.Name, 1)
	cfg = strings.Replace(cfg, "publication: flusso_blog", "publication: pub_"+db.Name, 1)
	cfg = strings.Replace(cfg, "indexes:", fmt.Sprintf("state:\n  dir: %s\ncapture:\n  status_interval: 1s\n  batch_size: 200\nbackfill:\n  workers: 2\n  batch_size: 100\n%s\nindexes:", filepath.Join(dir, "state"), extra), 1)
	path := filepath.Join(dir, "flusso.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// proc is a running flusso-pg.
type proc struct {
	cmd    *exec.Cmd
	stderr *logBuf
	done   chan error
}

// start runs flusso-pg with stdout appended to out.
func start(t *testing.T, out string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
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

// logBuf collects a child's stderr; the test reads it while the child writes.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// stop sends sig and waits for the exit, returning the exit code.
func (p *proc) stop(t *testing.T, sig syscall.Signal, within time.Duration) int {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		p.done <- nil // for the cleanup
	case <-time.After(within):
		t.Fatalf("flusso-pg did not exit within %s of %s\nstderr:\n%s", within, sig, tailString(p.stderr.String(), 3000))
	}
	return p.cmd.ProcessState.ExitCode()
}

// fold reads the NDJSON output and folds it: the last line per key wins,
// delete removes, truncate empties the index, rebuild_done removes what was
// not upserted since the index's last rebuild_start. (Keys are ids: the
// tests' configs never give two indexes' documents the same id; truncate
// and rebuild_done act on their own index's documents only.)
func fold(t *testing.T, path string) map[string]any {
	t.Helper()
	docs := map[string]any{}
	owner := map[string]string{}            // id → its index
	rebuilt := map[string]map[string]bool{} // index → ids upserted since its rebuild_start
	for i, text := range wholeLines(t, path) {
		n := i + 1
		var l struct {
			Index string          `json:"index"`
			Op    string          `json:"op"`
			ID    string          `json:"id"`
			LSN   string          `json:"lsn"`
			Key   json.RawMessage `json:"key"`
			Doc   json.RawMessage `json:"doc"`
		}
		if err := json.Unmarshal(text, &l); err != nil {
			t.Fatalf("line %d is not JSON: %v: %q", n, err, tailString(string(text), 300))
		}
		if _, err := pglogrepl.ParseLSN(l.LSN); err != nil {
			t.Fatalf("line %d: bad lsn %q", n, l.LSN)
		}
		switch l.Op {
		case "upsert":
			docs[l.ID] = decode(t, l.Doc)
			owner[l.ID] = l.Index
			if r := rebuilt[l.Index]; r != nil {
				r[l.ID] = true
			}
		case "delete":
			delete(docs, l.ID)
		case "truncate":
			for id := range docs {
				if owner[id] == l.Index {
					delete(docs, id)
				}
			}
		case "rebuild_start":
			rebuilt[l.Index] = map[string]bool{}
		case "rebuild_done":
			r := rebuilt[l.Index]
			if r == nil {
				t.Fatalf("line %d: rebuild_done of %s without a rebuild_start", n, l.Index)
			}
			for id := range docs {
				if owner[id] == l.Index && !r[id] {
					delete(docs, id)
				}
			}
			// The set stays: a rebuild_done written again after a kill
			// (before its index was recorded done) drops the same.
		default:
			t.Fatalf("line %d: op %q", n, l.Op)
		}
	}
	return docs
}

// wholeLines returns the lines of the file at path that end in a newline.
// The tests read the output while flusso-pg writes it, and a line longer
// than one write (a post with 2000 comments) may be half there: what follows
// the last newline is left for the next read. Every line before it must be
// whole; the callers check that.
func wholeLines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return nil
	}
	return bytes.Split(data[:end], []byte("\n"))
}

func decode(t *testing.T, raw []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("document is not JSON: %v", err)
	}
	return v
}

// reference runs the blog reference query: what the fold must equal.
func reference(t *testing.T, db *pgtest.DB) map[string]any {
	t.Helper()
	sql, err := os.ReadFile(filepath.Join(pgtest.RepoRoot(t), "workloads/blog/reference.sql"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Pool.Query(context.Background(), "SELECT (key->>'id'), doc::text FROM ("+string(sql)+") r")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]any{}
	for rows.Next() {
		var id, doc string
		if err := rows.Scan(&id, &doc); err != nil {
			t.Fatal(err)
		}
		out[id] = decode(t, []byte(doc))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFold polls until the fold of out equals the reference query, or fails
// with the first differences.
func waitFold(t *testing.T, db *pgtest.DB, out string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, want := fold(t, out), reference(t, db)
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the fold of the output differs from the reference query:\n%s", timeout, diff(got, want))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func diff(got, want map[string]any) string {
	var lines []string
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			lines = append(lines, fmt.Sprintf("missing %s", id))
		} else if !reflect.DeepEqual(g, w) {
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			lines = append(lines, fmt.Sprintf("key %s:\n  got  %s\n  want %s", id, gj, wj))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			lines = append(lines, fmt.Sprintf("extra %s", id))
		}
	}
	sort.Strings(lines)
	if len(lines) > 8 {
		lines = append(lines[:8], fmt.Sprintf("... and %d more", len(lines)-8))
	}
	return fmt.Sprintf("%d docs, want %d\n%s", len(got), len(want), strings.Join(lines, "\n"))
}

// slotLSN returns the slot's confirmed_flush_lsn (0 when the slot is absent).
func slotLSN(t *testing.T, db *pgtest.DB) pglogrepl.LSN {
	t.Helper()
	var s *string
	err := db.Pool.QueryRow(context.Background(),
		"SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", db.Name).Scan(&s)
	if err != nil || s == nil {
		return 0
	}
	l, _ := pglogrepl.ParseLSN(*s)
	return l
}

// workload runs n random transactions of the blog workload, seeded: inserts,
// updates, deletes, key changes, foreign-key moves, cascades, and now and
// then a big transaction or a truncate.
type workload struct {
	db     *pgtest.DB
	rnd    *rand.Rand
	nextID int64
	// truncates allowed
	truncate bool
}

func newWorkload(db *pgtest.DB, seed int64, truncate bool) *workload {
	return &workload{db: db, rnd: rand.New(rand.NewSource(seed)), nextID: 10_000_000, truncate: truncate}
}

func (w *workload) id() int64 { w.nextID++; return w.nextID }

func (w *workload) run(ctx context.Context, t *testing.T, n int) {
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sql := w.txn()
		conn, err := w.db.Pool.Acquire(ctx)
		if err != nil {
			t.Errorf("workload: %v", err)
			return
		}
		_, err = conn.Conn().PgConn().Exec(ctx, "BEGIN;"+sql+";COMMIT").ReadAll()
		conn.Release()
		if err != nil && ctx.Err() == nil {
			t.Errorf("workload transaction %q: %v", sql, err)
			return
		}
	}
}

func (w *workload) txn() string {
	r := w.rnd
	post := func() string { return fmt.Sprintf("(SELECT id FROM posts ORDER BY id OFFSET %d LIMIT 1)", r.Intn(50)) }
	comment := func() string {
		return fmt.Sprintf("(SELECT id FROM comments ORDER BY id OFFSET %d LIMIT 1)", r.Intn(200))
	}
	var stmts []string
	for k := 0; k < 1+r.Intn(3); k++ {
		switch r.Intn(16) {
		case 0:
			id := w.id()
			stmts = append(stmts, fmt.Sprintf("INSERT INTO posts VALUES (%d, %d, 'new post %d', 'body', now(), %d)", id, 1+r.Intn(20), id, r.Intn(100)))
		case 1:
			stmts = append(stmts, fmt.Sprintf("UPDATE posts SET title = 'edited %d', votes = votes + 1 WHERE id = %s", r.Int(), post()))
		case 2:
			stmts = append(stmts, "DELETE FROM posts WHERE id = "+post()) // cascades to comments and post_tags
		case 3: // key change of a post with no children
			id := w.id()
			stmts = append(stmts, fmt.Sprintf("INSERT INTO posts VALUES (%d, 1, 'rekey', NULL, NULL, 0)", id),
				fmt.Sprintf("UPDATE posts SET id = %d WHERE id = %d", w.id(), id))
		case 4:
			stmts = append(stmts, fmt.Sprintf("INSERT INTO comments VALUES (%d, %s, %d, 'new comment', %d, now())", w.id(), post(), 1+r.Intn(20), r.Intn(13)))
		case 5:
			stmts = append(stmts, fmt.Sprintf("UPDATE comments SET body = 'edited %d', score = score + 1 WHERE id = %s", r.Int(), comment()))
		case 6: // a foreign-key move: the comment changes post
			stmts = append(stmts, fmt.Sprintf("UPDATE comments SET post_id = %s WHERE id = %s", post(), comment()))
		case 7:
			stmts = append(stmts, "DELETE FROM comments WHERE id = "+comment())
		case 8:
			stmts = append(stmts, fmt.Sprintf("UPDATE authors SET name = 'author %d' WHERE id = %d", r.Int(), 1+r.Intn(20)))
		case 9:
			stmts = append(stmts, fmt.Sprintf("UPDATE users SET handle = 'user %d' WHERE id = %d", r.Int(), 1+r.Intn(20)))
		case 10:
			stmts = append(stmts, fmt.Sprintf("INSERT INTO post_tags VALUES (%s, %d) ON CONFLICT DO NOTHING", post(), 1+r.Intn(200)))
		case 11:
			stmts = append(stmts, fmt.Sprintf("DELETE FROM post_tags WHERE (post_id, tag_id) IN (SELECT post_id, tag_id FROM post_tags ORDER BY 1, 2 OFFSET %d LIMIT 1)", r.Intn(100)))
		case 12:
			stmts = append(stmts, fmt.Sprintf("UPDATE tags SET name = 'tag %d' WHERE id = %d", r.Int(), 1+r.Intn(200)))
		case 13: // an author goes: posts.author_id is set to NULL
			id := w.id()
			stmts = append(stmts, fmt.Sprintf("INSERT INTO authors VALUES (%d, 'temp', NULL)", id),
				fmt.Sprintf("UPDATE posts SET author_id = %d WHERE id = %s", id, post()),
				fmt.Sprintf("DELETE FROM authors WHERE id = %d", id))
		case 14: // a big transaction
			base := w.id()
			w.nextID += 3000
			stmts = append(stmts, fmt.Sprintf("INSERT INTO comments SELECT %d + g, %s, 1, 'bulk', g %% 13, now() FROM generate_series(1, 2000) g", base, post()))
		case 15:
			if w.truncate && r.Intn(10) == 0 {
				stmts = append(stmts, "TRUNCATE post_tags")
			} else {
				stmts = append(stmts, fmt.Sprintf("UPDATE posts SET author_id = %d WHERE id = %s", 1+r.Intn(20), post()))
			}
		}
	}
	return strings.Join(stmts, ";")
}
