package follow_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// A backlog read after a stop is built in large groups, not a group per
// batch capture reads: a post whose comment changed 12,000 times while
// flusso-pg was stopped gets a line per group of up to 10,000 rows (the
// spill bound), not one per 1,280 transactions or fewer (what the hand-off
// channel holds): the loop waits a moment for capture's next batch while
// the server sends a backlog. And the output equals the reference once the
// backlog is written.
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
	// 12,000 transactions of one row each, committed while stopped.
	db.Exec(t, `DO $$ BEGIN FOR i IN 1..12000 LOOP UPDATE comments SET score = score + 1 WHERE id = 1; COMMIT; END LOOP; END $$`)
	var endText string
	if err := db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&endText); err != nil {
		t.Fatal(err)
	}
	end, _ := pglogrepl.ParseLSN(endText)
	start(t, out, "follow", "--config", cfg)
	// Every group of the backlog is written once the slot is confirmed
	// past it (the first group alone already builds the final state).
	waitFor(t, 60*time.Second, func() bool { return slotLSN(t, db) >= end })
	waitFold(t, db, out, 60*time.Second)
	var lines int
	id := fmt.Sprintf(`"id":"%d"`, post)
	for _, l := range readLines(t, out)[before:] {
		if strings.Contains(l, id) && strings.Contains(l, `"index":"posts"`) {
			lines++
		}
	}
	// Groups of the bound write 2 lines; the limit leaves room for a
	// loaded machine splitting them a few times. Groups of what the
	// channel holds write at least 10.
	if lines == 0 || lines > 6 {
		t.Fatalf("post %d got %d lines for a backlog of 12000 changes to one of its comments; want 1 to 6", post, lines)
	}
	t.Logf("post %d: %d lines for 12000 changes", post, lines)
}
