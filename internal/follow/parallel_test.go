package follow_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// A backlog of three transactions, read as one group by two followers of
// the same database (two slots, so the same commit LSNs): 1,000 posts
// updated, comments truncated (a rebuild of the posts index), 1,000 other
// posts updated, built in chunks of 50 keys. The follower that builds 4
// chunks at once writes exactly the bytes of the one that builds one at a
// time: the same lines in the same order, the rebuild between the chunks of
// the transactions around it, no line's lsn below the one before it.
func TestParallelChunksWriteTheSameLines(t *testing.T) {
	db := blog(t, 20, 2000, 400)
	outs := map[int]string{}
	var cfgs []string
	for _, w := range []int{1, 4} {
		dir := filepath.Join(t.TempDir(), "w")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := writeConfig(t, db, dir, "")
		data, _ := os.ReadFile(cfg)
		s := strings.Replace(string(data), "  batch_size: 200\n", "  batch_size: 50\n  build_workers: "+map[int]string{1: "1", 4: "4"}[w]+"\n", 1)
		if w != 1 {
			s = strings.Replace(s, "slot: "+db.Name+"\n", "slot: "+db.Name+"_w4\n", 1)
		}
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		outs[w] = filepath.Join(dir, "out.ndjson")
		cfgs = append(cfgs, cfg)
	}
	run := func() {
		ps := []*proc{start(t, outs[1], "follow", "--config", cfgs[0]), start(t, outs[4], "follow", "--config", cfgs[1])}
		waitFold(t, db, outs[1], 60*time.Second)
		waitFold(t, db, outs[4], 60*time.Second)
		for _, p := range ps {
			p.stop(t, syscall.SIGTERM, 15*time.Second)
		}
	}
	run()
	backfilled := map[int]int64{}
	for w, out := range outs {
		st, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		backfilled[w] = st.Size()
	}
	db.Exec(t, "UPDATE posts SET votes = votes + 1 WHERE id <= 1000")
	db.Exec(t, "TRUNCATE comments")
	db.Exec(t, "UPDATE posts SET votes = votes + 1 WHERE id > 1000")
	run()

	tails := map[int][]byte{}
	for w, out := range outs {
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		tails[w] = data[backfilled[w]:]
	}
	if !bytes.Equal(tails[1], tails[4]) {
		a, b := bytes.Split(tails[1], []byte("\n")), bytes.Split(tails[4], []byte("\n"))
		for i := range min(len(a), len(b)) {
			if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("build_workers 4 wrote other lines than 1 (%d and %d lines); first difference at line %d:\n 1: %.300s\n 4: %.300s", len(a), len(b), i+1, a[i], b[i])
			}
		}
		t.Fatalf("build_workers 4 wrote %d lines, 1 wrote %d (the same up to the shorter)", len(b), len(a))
	}
	checkAroundRebuild(t, tails[4])
}

// checkAroundRebuild checks the lines of the three transactions: lsn never
// decreasing; the first transaction's ≥ 1,000 lines, then the truncate's
// rebuild_start … rebuild_done, then the third's ≥ 1,000 lines.
func checkAroundRebuild(t *testing.T, tail []byte) {
	t.Helper()
	type line struct{ Op, LSN string }
	var lsns []pglogrepl.LSN // distinct, in order
	count := map[pglogrepl.LSN]int{}
	var ops []string // of the second transaction
	for i, raw := range bytes.Split(bytes.TrimSpace(tail), []byte("\n")) {
		var l line
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		lsn, err := pglogrepl.ParseLSN(l.LSN)
		if err != nil {
			t.Fatalf("line %d: lsn %q: %v", i+1, l.LSN, err)
		}
		if n := len(lsns); n == 0 || lsn > lsns[n-1] {
			lsns = append(lsns, lsn)
		} else if lsn < lsns[n-1] {
			t.Fatalf("line %d: lsn %s after %s", i+1, lsn, lsns[n-1])
		}
		count[lsn]++
		if len(lsns) == 2 {
			ops = append(ops, l.Op)
		}
	}
	if len(lsns) != 3 {
		t.Fatalf("lines of %d transactions (%v), want 3", len(lsns), lsns)
	}
	if count[lsns[0]] < 1000 || count[lsns[2]] < 1000 {
		t.Fatalf("lines per transaction %v, want ≥ 1000 for the updates", count)
	}
	if ops[0] != "rebuild_start" || ops[len(ops)-1] != "rebuild_done" {
		t.Fatalf("the truncate's lines run from %q to %q, want rebuild_start … rebuild_done between the updates' chunks", ops[0], ops[len(ops)-1])
	}
}

// A chunk whose document query fails (a division by zero in the index's
// where, for one post of 2,000 updated in one transaction), built while
// three others are: the error stops the builds and the daemon, named, and
// the transaction is not confirmed.
func TestParallelChunkErrorStops(t *testing.T) {
	db := blog(t, 20, 2000, 200)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	data, _ := os.ReadFile(cfg)
	s := strings.Replace(string(data), "  batch_size: 200\n", "  batch_size: 50\n  build_workers: 4\n", 1)
	s = strings.Replace(s, "    table: public.posts\n", "    table: public.posts\n    where: \"votes <> 100 OR 1/(votes-100) = 0\"\n", 1)
	if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 60*time.Second)
	db.Exec(t, "UPDATE posts SET votes = CASE WHEN id = 1500 THEN 100 ELSE votes + 1 END")
	var now string
	if err := db.Pool.QueryRow(t.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&now); err != nil {
		t.Fatal(err)
	}
	after, err := pglogrepl.ParseLSN(now)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		p.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatalf("follow still runs 30 s after a document query failed:\n%s", tailString(p.stderr.String(), 2000))
	}
	if code := p.cmd.ProcessState.ExitCode(); code == 0 {
		t.Fatalf("follow exited 0 after a document query failed")
	}
	if !strings.Contains(p.stderr.String(), "division by zero") || !strings.Contains(p.stderr.String(), "posts") {
		t.Fatalf("the error does not name its cause and index:\n%s", tailString(p.stderr.String(), 2000))
	}
	if c := slotLSN(t, db); c >= after {
		t.Fatalf("the slot is confirmed at %s, past the failed transaction (before %s)", c, after)
	}
}
