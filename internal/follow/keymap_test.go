package follow_test

import (
	"context"
	"io"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The blog with every table at the default replica identity: comments'
// DELETEs and post moves carry only the comment's id, and the key map
// (filled by the backfill, updated by each transaction) gives their old
// post. A random workload (inserts, updates, deletes, key changes, FK
// moves, cascades, truncates, big transactions) runs through SIGKILLs;
// the fold equals the reference. Then the map is deleted: the next start
// says why it rebuilds, recreates the slot and backfills again in rebuild
// lines, and the fold still equals the reference.
func TestKeyMapDefaultIdentity(t *testing.T) {
	// Deletes and moves of comments whose old post only the map knows.
	const moves = `DELETE FROM comments WHERE id IN (SELECT id FROM comments ORDER BY id LIMIT 5);
		UPDATE comments SET post_id = (SELECT min(id) FROM posts) WHERE id IN (SELECT id FROM comments ORDER BY id DESC LIMIT 5);
		UPDATE comments SET post_id = (SELECT max(id) FROM posts), body = 'moved' WHERE id IN (SELECT id FROM comments ORDER BY id LIMIT 5)`
	db := blog(t, 20, 300, 1500)
	db.Exec(t, "ALTER TABLE comments REPLICA IDENTITY DEFAULT; ALTER TABLE posts REPLICA IDENTITY DEFAULT")
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	kmDir := filepath.Join(dir, "state", db.Name+".keymap")

	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 60*time.Second)
	if !strings.Contains(p.stderr.String(), "key map loaded from the slot's snapshot") {
		t.Fatalf("no key map load in the log:\n%s", tailString(p.stderr.String(), 3000))
	}
	if _, err := os.Stat(kmDir); err != nil {
		t.Fatalf("no key map in the state dir: %v", err)
	}
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		newWorkload(db, 14, true).run(ctx, t, 60)
		// No truncate after these (a truncate rebuilds every document,
		// which would hide a stale one): each comment DELETE and move
		// from here on must find its old post through the map.
		w := newWorkload(db, 15, false)
		w.nextID = 20_000_000
		w.run(ctx, t, 150)
	}()
	rnd := rand.New(rand.NewSource(14))
	for i := 0; i < 5; i++ {
		p := start(t, out, "follow", "--config", cfg)
		time.Sleep(time.Duration(300+rnd.Intn(1500)) * time.Millisecond)
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	}
	wg.Wait()
	p = start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 90*time.Second)
	if strings.Contains(p.stderr.String(), "cannot be trusted") {
		t.Fatalf("a SIGKILL left a map that had to be rebuilt:\n%s", tailString(p.stderr.String(), 3000))
	}
	db.Exec(t, moves)
	waitFold(t, db, out, 30*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}

	// The map is lost: rebuilt from a fresh slot, every index re-emitted.
	if err := os.RemoveAll(kmDir); err != nil {
		t.Fatal(err)
	}
	before := len(readLines(t, out))
	addr := "127.0.0.1:" + freePort(t)
	p = start(t, out, "follow", "--config", cfg, "--listen", addr)
	waitFold(t, db, out, 60*time.Second)
	db.Exec(t, moves) // through the rebuilt map
	waitFold(t, db, out, 30*time.Second)
	// TRUNCATE clears comments' entries: 40 new comments are all it holds,
	// and their moves resolve through it.
	db.Exec(t, `TRUNCATE comments; INSERT INTO comments SELECT g, (SELECT min(id) FROM posts), 1, 'again', 1, now() FROM generate_series(1, 40) g`)
	db.Exec(t, moves)
	waitFold(t, db, out, 30*time.Second)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\nflusso_keymap_entries 35\n") || !strings.Contains(string(body), "\nflusso_keymap_bytes ") {
		t.Errorf("/metrics after the truncate, 40 inserts and 5 deletes: want flusso_keymap_entries 35 and flusso_keymap_bytes:\n%s", grepLines(string(body), "flusso_keymap"))
	}
	log := p.stderr.String()
	if !strings.Contains(log, "the key map cannot be trusted") || !strings.Contains(log, "no key map in") {
		t.Fatalf("the rebuild does not say why:\n%s", tailString(log, 3000))
	}
	rebuild := false
	for _, l := range readLines(t, out)[before:] {
		rebuild = rebuild || strings.Contains(l, `"rebuild_start"`)
	}
	if !rebuild {
		t.Fatal("the rebuild after losing the map wrote no rebuild_start line")
	}
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}
