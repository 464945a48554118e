package follow_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A tag shared by 20,000 posts is renamed: one changed row, 20,000
// documents. They are resolved as a stream and written in chunks of the
// spill bound (10,000 keys here) while the resolution reads on, never held
// all at once, and the fold equals the reference query. Before the stream,
// the one row's 20,000 keys were resolved whole and written in one chunk:
// the log's chunks and most_held tell the two apart. Then a fan-out and a
// truncation in one transaction: the rebuild comes first, the chunks after.
func TestFanoutIsResolvedInChunks(t *testing.T) {
	const posts = 20000
	db := blog(t, 20, posts, 200)
	db.Exec(t, "INSERT INTO tags VALUES (1000, 'everywhere'); INSERT INTO post_tags SELECT id, 1000 FROM posts")
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "log:\n  format: json")
	out := filepath.Join(dir, "out.ndjson")
	addr := "127.0.0.1:" + freePort(t)
	p := start(t, out, "follow", "--config", cfg, "--listen", addr)
	waitFold(t, db, out, 60*time.Second)
	db.Exec(t, "UPDATE tags SET name = 'renamed everywhere' WHERE id = 1000")
	waitFold(t, db, out, 60*time.Second)
	// A fan-out and a truncation in one transaction: the rebuild the
	// truncation means is written before the transaction's first chunk.
	db.Exec(t, "BEGIN; UPDATE tags SET name = 'renamed again' WHERE id = 1000; TRUNCATE comments; COMMIT")
	waitFold(t, db, out, 60*time.Second)
	rebuildFirst(t, out, posts)

	var begun bool
	var done map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l["msg"] {
		case "a large fan-out: its documents are written in chunks as they are resolved":
			begun = true
		case "fan-out written":
			if done == nil && begun {
				done = l
			}
		}
	}
	if done == nil {
		t.Fatalf("no large fan-out logged (start, then written):\n%s", tailString(p.stderr.String(), 3000))
	}
	if n := done["documents"].(float64); n < posts {
		t.Fatalf("fan-out of %v documents, want %d: %v", n, posts, done)
	}
	if c, held := done["chunks"].(float64), done["most_held"].(float64); c < 2 || held > 10000 {
		t.Fatalf("the fan-out was written in %v chunks holding up to %v keys, want ≥ 2 chunks of ≤ 10000: %v", c, held, done)
	}
	t.Logf("fan-out: %v documents in %v chunks, most held %v, %v docs/s", done["documents"], done["chunks"], done["most_held"], done["docs_per_s"])
	if done["docs_per_s"].(float64) <= 0 {
		t.Fatalf("no rate: %v", done)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if small, all := metric(t, string(body), `flusso_group_documents_bucket{le="10000"}`),
		metric(t, string(body), `flusso_group_documents_bucket{le="100000"}`); all-small < 1 {
		t.Fatalf("no group of 10,000 to 100,000 documents in flusso_group_documents (%v, %v)", small, all)
	}
	if v := metric(t, string(body), "flusso_fanout_documents"); v != 0 {
		t.Fatalf("flusso_fanout_documents %v once the group is written, want 0", v)
	}
	p.stop(t, syscall.SIGTERM, 15*time.Second)
}

// rebuildFirst checks that the last rebuild's transaction wrote no line
// before its rebuild_start, and its fan-out's n lines after its rebuild_done.
func rebuildFirst(t *testing.T, out string, n int) {
	t.Helper()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	type line struct{ Op, LSN string }
	var lines []line
	start := -1
	for i, raw := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var l line
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if l.Op == "rebuild_start" {
			start = i
		}
		lines = append(lines, l)
	}
	if start < 0 {
		t.Fatal("no rebuild_start: the truncation was not written as a rebuild")
	}
	lsn := lines[start].LSN
	for i, l := range lines[:start] {
		if l.LSN == lsn {
			t.Fatalf("line %d (%s) of the transaction comes before its rebuild_start", i+1, l.Op)
		}
	}
	done, after := false, 0
	for _, l := range lines[start:] {
		if l.Op == "rebuild_done" {
			done = true
		} else if done && l.LSN == lsn {
			after++
		}
	}
	if !done || after < n {
		t.Fatalf("after the rebuild (done: %v) %d lines of its transaction, want the fan-out's %d", done, after, n)
	}
}

// metric reads one sample of the Prometheus text format.
func metric(t *testing.T, body, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}
