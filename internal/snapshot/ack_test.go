package snapshot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// In ack mode the saved record follows the acknowledgements: one token per
// marked batch, taken in order; a stale ack takes none; after the backfill,
// an ack past its LSN covers every token and saves the final record.
func TestCheckpointsFollowAcks(t *testing.T) {
	dir := t.TempDir()
	store := state.New(dir, "s")
	w, err := output.Open(filepath.Join(dir, "out.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ip := &indexProgress{Fingerprint: "f"}
	r := &keyRange{}
	ip.Ranges = []*keyRange{r}
	c := &checkpoints{store: store, acks: true, rec: &record{Version: recordVersion, Indexes: map[string]*indexProgress{"p": ip}}}
	saved := func() (rows int64, done bool) {
		t.Helper()
		var rec record
		ok, err := store.Load(state.BackfillRecord, &rec)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return -1, false
		}
		return rec.Indexes["p"].Rows, rec.Indexes["p"].Done
	}
	line := func(id string) []byte {
		return []byte(`{"index":"p","op":"upsert","key":{"id":` + id + `},"id":"` + id + `","lsn":"0/64","doc":{}}` + "\n")
	}
	for _, id := range []string{"1", "2", "3"} {
		if _, err := c.wrote(w, line(id), 100, ip, r, build.Key{id}, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.wrote(w, nil, 100, ip, r, nil, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := c.checkpoint(w); err != nil {
		t.Fatal(err)
	}
	if rows, _ := saved(); rows != -1 {
		t.Fatalf("a record was saved before any acknowledgement: %d rows", rows)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "out.ndjson"))
	if n := strings.Count(string(data), `"ack":true`); n != 3 {
		t.Fatalf("%d marked lines, want one per batch (3):\n%s", n, data)
	}
	c.ack(99) // stale: older than the backfill's LSN
	c.ack(100)
	c.checkpoint(w)
	if rows, _ := saved(); rows != 1 {
		t.Fatalf("after one acknowledgement the record says %d rows, want 1", rows)
	}
	c.ack(100)
	c.finish()
	c.checkpoint(w)
	if rows, done := saved(); rows != 2 || done {
		t.Fatalf("after two acknowledgements: %d rows, done %v; want 2, not done", rows, done)
	}
	c.ack(200) // a stream line: everything before it arrived
	c.saveAcked()
	if rows, done := saved(); rows != 3 || !done {
		t.Fatalf("after an ack past the backfill: %d rows, done %v; want 3, done", rows, done)
	}
}
