package follow_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// acker plays an acknowledging reader: it reads the lines flusso-pg writes
// to out and, while on, writes the lsn of each marked line to the FIFO.
type acker struct {
	on   atomic.Bool
	done chan struct{}
}

func startAcker(t *testing.T, out, fifo string) *acker {
	t.Helper()
	a := &acker{done: make(chan struct{})}
	a.on.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(a.done)
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // waits for flusso-pg to open its end
		if err != nil {
			return
		}
		defer w.Close()
		f, err := os.Open(out)
		if err != nil {
			return
		}
		defer f.Close()
		r := bufio.NewReader(f)
		var part []byte
		for ctx.Err() == nil {
			b, err := r.ReadBytes('\n')
			part = append(part, b...)
			if err != nil {
				time.Sleep(20 * time.Millisecond) // at the end of what is written: tail
				continue
			}
			var l struct {
				LSN string `json:"lsn"`
				Ack bool   `json:"ack"`
			}
			if json.Unmarshal(part, &l) == nil && l.Ack && a.on.Load() {
				if _, err := w.WriteString(l.LSN + "\n"); err != nil {
					return
				}
			}
			part = part[:0]
		}
	}()
	t.Cleanup(func() { cancel(); <-a.done })
	return a
}

// With an acknowledging reader, an inline rebuild counts as written only
// once a line after it is acknowledged: a reader that read a partition's
// rebuild but never acknowledged it (then flusso-pg was killed) gets the
// rebuild again at the next start. Saved after the flush, the record would
// say it was written, and a reader that lost those lines would never see
// them again.
func TestAckedInlineRebuildIsRebuiltWhenNotAcknowledged(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, partitionedSchema)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	fifo := filepath.Join(dir, "acks")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := partitionedConfig(t, db, dir)
	if err := os.WriteFile(out, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, out, "follow", "--config", cfg, "--ack-file", fifo)
	a := startAcker(t, out, fifo)
	waitPartitionedFold(t, db, out, "the backfill")
	db.Exec(t, "UPDATE posts SET title = title || '+' WHERE id = 1")
	waitPartitionedFold(t, db, out, "a change")

	a.on.Store(false) // the reader reads on, and acknowledges nothing more
	n := len(readLines(t, out))
	db.Exec(t, "TRUNCATE events_2024")
	waitFor(t, 20*time.Second, func() bool {
		ops := opsSince(t, out, n)
		return len(ops) >= 2 && ops[len(ops)-1] == "events:rebuild_done"
	})
	time.Sleep(time.Second) // five status intervals: a wrong save would be on disk
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil

	n = len(readLines(t, out))
	p = start(t, out, "follow", "--config", cfg, "--ack-file", fifo)
	a = startAcker(t, out, fifo)
	waitPartitionedFold(t, db, out, "the restart")
	waitFor(t, 20*time.Second, func() bool {
		return reflect.DeepEqual(opsSince(t, out, n), []string{"events:rebuild_start", "events:rebuild_done"})
	})
	// Acknowledged now (a change after the rebuild, acknowledged): the
	// clean stop saves the record, and a restart has nothing to rebuild.
	db.Exec(t, "UPDATE posts SET title = title || '+' WHERE id = 2")
	waitPartitionedFold(t, db, out, "a change after the rebuild")
	p.stop(t, syscall.SIGTERM, 10*time.Second)
	n = len(readLines(t, out))
	p = start(t, out, "follow", "--config", cfg, "--ack-file", fifo)
	startAcker(t, out, fifo)
	db.Exec(t, "UPDATE posts SET title = title || '+' WHERE id = 3")
	waitPartitionedFold(t, db, out, "a restart after the acknowledged rebuild")
	if ops := opsSince(t, out, n); len(ops) != 0 {
		t.Fatalf("after an acknowledged rebuild a restart wrote %v, want no rebuild", ops)
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)
}
