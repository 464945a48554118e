package follow_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flusso-pg/flusso-pg/internal/natstest"
	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// streamReader reads the whole stream, from its first message, into a file
// the harness's fold reads: what the stream holds is what flusso-pg answers
// for. (A durable consumer's position is the broker's to keep; NATS 2.9
// could leave one stalled for minutes after every node of the cluster was
// killed, which says nothing about the stream.)
type streamReader struct {
	urls, stream, out string
	ids               map[string]int // Nats-Msg-Id → copies in the stream
	last              string         // what the last read saw, for a failure's message
}

func newStreamReader(t *testing.T, urls, stream, out string) *streamReader {
	if err := os.WriteFile(out, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return &streamReader{urls: urls, stream: stream, out: out, ids: map[string]int{}}
}

// drain reads the stream from its first message to its last one into the
// file. A node restarting fails the read; the file then keeps the previous
// complete read and the next poll reads again.
func (r *streamReader) drain(t *testing.T) {
	t.Helper()
	if err := r.read(); err != nil {
		r.last = "read the stream: " + err.Error()
	}
}

func (r *streamReader) read() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(r.urls)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, r.stream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	st := info.State
	r.last = fmt.Sprintf("stream %s: messages %d, sequences %d..%d", r.stream, st.Msgs, st.FirstSeq, st.LastSeq)
	// An ephemeral consumer of our own for each read (an ordered consumer
	// would retry without end while a node is down).
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, MemoryStorage: true, Replicas: 1, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return err
	}
	defer func() { _ = s.DeleteConsumer(context.Background(), cons.CachedInfo().Name) }()
	var buf bytes.Buffer
	ids := map[string]int{}
	var seq uint64
	for seq < st.LastSeq && st.Msgs > 0 {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			seq = md.Sequence.Stream
			buf.Write(m.Data())
			buf.WriteByte('\n')
			ids[m.Headers().Get("Nats-Msg-Id")]++
		}
		if batch.Error() != nil {
			return batch.Error()
		}
		if n == 0 {
			return fmt.Errorf("read up to sequence %d of %d, then nothing", seq, st.LastSeq)
		}
	}
	if err := os.WriteFile(r.out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	r.ids = ids
	return nil
}

// waitStreamFold reads the stream until its fold equals the reference query.
func waitStreamFold(t *testing.T, r *streamReader, db *pgtest.DB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.drain(t)
		got, want := fold(t, r.out), reference(t, db)
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fold of the stream differs from the reference query (%s):\n%s", r.last, diff(got, want))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestFollowToJetStreamSurvivesKills runs the blog workload into an R3
// stream on a three-node cluster while flusso-pg is killed with SIGKILL and
// a NATS node is killed and restarted mid-stream: the fold of what the
// stream holds equals the reference query, and no line is stored twice.
func TestFollowToJetStreamSurvivesKills(t *testing.T) {
	c := natstest.StartCluster(t, 3, natstest.Options{})
	db := blog(t, 20, 300, 1500)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, fmt.Sprintf("output:\n  kind: jetstream\n  jetstream:\n    url: %s\n    stream: DOCS\n    replicas: 3\n    max_in_flight: 128", c.URLs()))
	stdout := filepath.Join(dir, "stdout")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The first start backfills and creates the stream.
	p := start(t, stdout, "follow", "--config", cfg)
	r := func() *streamReader {
		deadline := time.Now().Add(60 * time.Second)
		for {
			nc, err := nats.Connect(c.URLs())
			if err == nil {
				js, _ := jetstream.New(nc)
				_, err = js.Stream(ctx, "DOCS")
				nc.Close()
				if err == nil {
					return newStreamReader(t, c.URLs(), "DOCS", filepath.Join(dir, "folded.ndjson"))
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the stream was not created: %v\nstderr:\n%s", err, tailString(p.stderr.String(), 3000))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	w := newWorkload(db, 3, true)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run(ctx, t, 300)
	}()
	rnd := rand.New(rand.NewSource(11))
	for i := 0; i < 4; i++ {
		time.Sleep(time.Duration(300+rnd.Intn(1200)) * time.Millisecond)
		if i == 1 {
			c.Servers[rnd.Intn(3)].Kill(t) // a node down while flusso-pg publishes and restarts
		}
		if i == 3 {
			c.RestartKilled(t)
		}
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
		p = start(t, stdout, "follow", "--config", cfg)
	}
	wg.Wait()
	waitStreamFold(t, r, db, 90*time.Second)

	// Every node down: lines can only wait in flusso-pg. Commits made now
	// must not be confirmed (the broker acknowledged nothing), so after a
	// SIGKILL and the cluster's return they still arrive.
	for _, s := range c.Servers {
		if s.Running() {
			s.Kill(t)
		}
	}
	// The first commit made now is a marker: the slot may still move up to
	// the WAL written before it (lines acknowledged before the outage are
	// confirmed one status interval late, and an idle slot follows the
	// server's WAL end), but never past the marker's own change, which no
	// broker has acknowledged.
	mark := outageMarker(t, db)
	w.truncate = false
	w.run(ctx, t, 20)
	time.Sleep(3 * time.Second) // three status intervals: time to confirm, were it wrong
	if after := slotLSN(t, db); after > mark {
		t.Errorf("the slot moved to %s, past a change at %s committed while no NATS node was up", after, mark)
	}
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
	c.RestartKilled(t)
	listen := "127.0.0.1:" + freePort(t)
	p = start(t, stdout, "follow", "--config", cfg, "--listen", listen)

	waitStreamFold(t, r, db, 90*time.Second)
	t.Logf("the stream holds %d distinct lines", len(r.ids))
	for id, n := range r.ids {
		if n > 1 {
			t.Errorf("message %s stored %d times: the replay was not de-duplicated", id, n)
		}
	}
	if st, err := os.Stat(stdout); err != nil || st.Size() != 0 {
		t.Errorf("stdout holds %v bytes with output.kind: jetstream, want none (err %v)", st.Size(), err)
	}
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"flusso_jetstream_pending 0", "flusso_jetstream_degraded 0", "flusso_jetstream_publish_seconds_count"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	if strings.Contains(string(body), "flusso_jetstream_acks_total 0\n") || !strings.Contains(string(body), "flusso_jetstream_acks_total ") {
		t.Errorf("/metrics shows no acknowledgement:\n%s", grepLines(string(body), "flusso_jetstream"))
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	// A clean stop confirmed what the broker acknowledged: nothing is pending.
	if lsn := slotLSN(t, db); lsn == 0 {
		t.Fatal("the slot was never confirmed")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// With output.kind: jetstream the stream acknowledges: an ack channel too
// is refused, saying so.
func TestFollowToJetStreamRefusesAckFile(t *testing.T) {
	s := natstest.Start(t, natstest.Options{})
	db := blog(t, 2, 5, 5)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, fmt.Sprintf("output:\n  kind: jetstream\n  jetstream:\n    url: %s", s.URL()))
	if err := os.WriteFile(filepath.Join(dir, "acks"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, filepath.Join(dir, "stdout"), "follow", "--config", cfg, "--ack-file", filepath.Join(dir, "acks"))
	select {
	case <-p.done:
		p.done <- nil
	case <-time.After(60 * time.Second):
		t.Fatal("flusso-pg did not stop")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(p.stderr.String(), "with output.kind: jetstream the stream acknowledges") {
		t.Errorf("stderr does not say why:\n%s", tailString(p.stderr.String(), 2000))
	}
}

// outageMarker commits a change to one post and returns the WAL position
// just after the change, before its commit record: a slot confirmed past it
// has confirmed the marker transaction.
func outageMarker(t *testing.T, db *pgtest.DB) pglogrepl.LSN {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var s string
	if _, err := tx.Exec(ctx, "UPDATE posts SET votes = votes + 1 WHERE id = (SELECT min(id) FROM posts)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
