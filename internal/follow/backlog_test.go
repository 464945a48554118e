package follow_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A backlog read after a stop is built in large groups, not a group per
// batch capture reads: a post whose comment changed 6,000 times while
// flusso-pg was stopped gets a handful of lines, not one per 256-1,280
// transactions (the loop waits a moment for the next batch after a full
// one). And the output equals the reference once the backlog is written.
func TestFollowBacklogIsBuiltInLargeGroups(t *testing.T) {
	db := blog(t, 5, 50, 100)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	p := start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 60*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	before := len(readLines(t, out))
	var post int
	if err := db.Pool.QueryRow(context.Background(), "SELECT post_id FROM comments WHERE id = 1").Scan(&post); err != nil {
		t.Fatal(err)
	}
	// 6,000 transactions of one row each, committed while stopped.
	db.Exec(t, `DO $$ BEGIN FOR i IN 1..6000 LOOP UPDATE comments SET score = score + 1 WHERE id = 1; COMMIT; END LOOP; END $$`)
	start(t, out, "follow", "--config", cfg)
	waitFold(t, db, out, 60*time.Second)
	var lines int
	id := fmt.Sprintf(`"id":"%d"`, post)
	for _, l := range readLines(t, out)[before:] {
		if strings.Contains(l, id) && strings.Contains(l, `"index":"posts"`) {
			lines++
		}
	}
	// One group would write one line; the bound leaves room for a slow
	// machine splitting it a few times. A group per capture batch would
	// write at least 5.
	if lines == 0 || lines > 3 {
		t.Fatalf("post %d got %d lines for a backlog of 6000 changes to one of its comments; want 1 to 3", post, lines)
	}
	t.Logf("post %d: %d lines for 6000 changes", post, lines)
}
