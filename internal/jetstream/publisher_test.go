package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/natstest"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

// started is a publisher with its Run loop going.
type started struct {
	*Publisher
	cancel context.CancelFunc
	done   chan error
	marks  *marks
}

type marks struct {
	mu  sync.Mutex
	all []pglogrepl.LSN
}

func (m *marks) add(l pglogrepl.LSN) { m.mu.Lock(); m.all = append(m.all, l); m.mu.Unlock() }
func (m *marks) list() []pglogrepl.LSN {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]pglogrepl.LSN(nil), m.all...)
}

func start(t *testing.T, cfg Config) *started {
	t.Helper()
	if cfg.Indexes == nil {
		cfg.Indexes = []string{"posts"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := &marks{}
	p, err := Open(ctx, cfg, zaptest.NewLogger(t), fault.NewHealth(zaptest.NewLogger(t)), Hooks{OnWatermark: m.add})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	s := &started{Publisher: p, cancel: rcancel, done: make(chan error, 1), marks: m}
	go func() { s.done <- p.Run(rctx) }()
	t.Cleanup(s.stop)
	return s
}

func (s *started) stop() {
	s.cancel()
	<-s.done
	s.Close()
	s.done <- nil // stop is idempotent
}

// line is an upsert line of posts with id and lsn.
func line(id int, lsn pglogrepl.LSN) []byte {
	return output.AppendUpsert(nil, "posts", fmt.Appendf(nil, `{"id":%d}`, id), fmt.Sprint(id), lsn, fmt.Appendf(nil, `{"id":%d,"t":"x"}`, id))
}

// readAll returns the stream's messages in order.
func readAll(t *testing.T, url, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPublishesLinesWithHeadersInOrder(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	p := start(t, Config{URL: srv.URL(), Stream: "DOCS", Indexes: []string{"posts", "tags"}})
	var batch []byte
	batch = append(batch, line(1, 0x100)...)
	batch = output.AppendDelete(batch, "posts", []byte(`{"id":2}`), "2", 0x100)
	batch = output.AppendTruncate(batch, "tags", 0x200)
	batch = append(batch, line(3, 0x300)...)
	if err := p.Write(batch); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.Watermark(); got != 0x300 {
		t.Fatalf("watermark %s after Flush, want 0/300", got)
	}
	msgs := readAll(t, srv.URL(), "DOCS")
	want := strings.Split(strings.TrimSuffix(string(batch), "\n"), "\n")
	if len(msgs) != len(want) {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), len(want))
	}
	wantHdr := []struct{ subj, id, op, lsn string }{
		{"flusso.posts", "posts:1:0/100", "upsert", "0/100"},
		{"flusso.posts", "posts:2:0/100", "delete", "0/100"},
		{"flusso.tags", "tags!truncate:0/200", "truncate", "0/200"},
		{"flusso.posts", "posts:3:0/300", "upsert", "0/300"},
	}
	for i, m := range msgs {
		if string(m.Data) != want[i] {
			t.Errorf("message %d body %s, want %s", i, m.Data, want[i])
		}
		w := wantHdr[i]
		if m.Subject != w.subj || m.Header.Get("Nats-Msg-Id") != w.id || m.Header.Get(HeaderOp) != w.op || m.Header.Get(HeaderLSN) != w.lsn {
			t.Errorf("message %d: subject %s, headers %v; want %+v", i, m.Subject, m.Header, w)
		}
	}
}

// TestReplayIsDeduplicated publishes lines, then, as a restarted flusso-pg
// replaying unconfirmed transactions would, publishes them again followed
// by new ones: the stream keeps each line once, in order.
func TestReplayIsDeduplicated(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var first, second []byte
	for i := 1; i <= 50; i++ {
		first = append(first, line(i, pglogrepl.LSN(0x1000+i))...)
		if i > 25 {
			second = append(second, line(i, pglogrepl.LSN(0x1000+i))...)
		}
	}
	p := start(t, Config{URL: srv.URL()})
	if err := p.Write(first); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.stop()

	q := start(t, Config{URL: srv.URL()})
	replay := second // from the middle: a partial replay
	for i := 51; i <= 80; i++ {
		replay = append(replay, line(i, pglogrepl.LSN(0x1000+i))...)
	}
	if err := q.Write(replay); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := q.Watermark(), pglogrepl.LSN(0x1000+80); got != want {
		t.Fatalf("watermark %s, want %s", got, want)
	}
	msgs := readAll(t, srv.URL(), DefaultStream)
	if len(msgs) != 80 {
		t.Fatalf("stream holds %d messages after the replay, want 80 (duplicates dropped)", len(msgs))
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("posts:%d:%s", i+1, pglogrepl.LSN(0x1000+i+1)); m.Header.Get("Nats-Msg-Id") != want {
			t.Fatalf("message %d is %s, want %s", i, m.Header.Get("Nats-Msg-Id"), want)
		}
	}
}

func TestLineOverMaxPayloadIsPermanent(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{MaxPayload: 4096})
	p := start(t, Config{URL: srv.URL()})
	big := output.AppendUpsert(nil, "posts", []byte(`{"id":7}`), "7", 0x10, []byte(`"`+strings.Repeat("x", 5000)+`"`))
	err := p.Write(big)
	if err == nil {
		t.Fatal("a 5 KB line was accepted by a server with max_payload 4096")
	}
	if fault.Classify(err) != fault.Permanent {
		t.Errorf("classified %s, want permanent: %v", fault.Classify(err), err)
	}
	for _, want := range []string{`index "posts"`, `document "7"`, "max_payload of 4096"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %s", err, want)
		}
	}
}

// TestWindowAndWatermarkWhileTheServerIsDown: with the server killed,
// writes stop at the window, the watermark stays at what was stored before,
// and after a restart everything arrives once, in order.
func TestWindowAndWatermarkWhileTheServerIsDown(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	p := start(t, Config{URL: srv.URL(), MaxInFlight: 8, AckTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := p.Write(line(1, 0x10)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Kill(t)

	wrote := make(chan int, 100)
	go func() {
		for i := 2; i <= 30; i++ {
			if err := p.Write(line(i, pglogrepl.LSN(0x10*i))); err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			p.Sync()
			wrote <- i
		}
		close(wrote)
	}()
	// The window fills (8 in flight) and the writer blocks.
	waitFor(t, "the window to fill", func() bool { return p.Pending() == 8 })
	time.Sleep(500 * time.Millisecond)
	if n := p.Pending(); n > 8 {
		t.Fatalf("%d messages pending, window is 8", n)
	}
	if len(wrote) > 8 {
		t.Fatalf("%d writes returned with the server down and a window of 8", len(wrote))
	}
	if w := p.Watermark(); w != 0x10 {
		t.Fatalf("watermark %s with the server down, want 0/10 (nothing newer stored)", w)
	}

	srv.Restart(t)
	for range wrote {
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if w := p.Watermark(); w != 0x10*30 {
		t.Fatalf("watermark %s after the restart, want %s", w, pglogrepl.LSN(0x10*30))
	}
	msgs := readAll(t, srv.URL(), DefaultStream)
	if len(msgs) != 30 {
		t.Fatalf("stream holds %d messages, want 30", len(msgs))
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("posts:%d:", i+1); !strings.HasPrefix(m.Header.Get("Nats-Msg-Id"), want) {
			t.Fatalf("message %d is %s, want %s…: out of order", i, m.Header.Get("Nats-Msg-Id"), want)
		}
	}
	checkMarks(t, p.marks.list(), 0x10*30)
}

// checkMarks: watermarks increase and end at last.
func checkMarks(t *testing.T, ms []pglogrepl.LSN, last pglogrepl.LSN) {
	t.Helper()
	for i := 1; i < len(ms); i++ {
		if ms[i] <= ms[i-1] {
			t.Fatalf("watermark went from %s to %s", ms[i-1], ms[i])
		}
	}
	if len(ms) == 0 || ms[len(ms)-1] != last {
		t.Fatalf("watermarks %v do not end at %s", ms, last)
	}
}

// TestR3StreamSurvivesKilledNodes publishes a steady stream while nodes of
// a three-node cluster are killed and restarted, one after the other: every
// line is stored once, in order, and the watermark never passes a line the
// stream did not store.
func TestR3StreamSurvivesKilledNodes(t *testing.T) {
	c := natstest.StartCluster(t, 3, natstest.Options{})
	p := start(t, Config{URL: c.URLs(), Replicas: 3, MaxInFlight: 64, AckTimeout: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const n = 3000
	var wmu sync.Mutex
	written := 0
	errc := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if err := p.Write(line(i, pglogrepl.LSN(i))); err != nil {
				errc <- err
				return
			}
			if i%10 == 0 {
				p.Sync()
			}
			wmu.Lock()
			written = i
			wmu.Unlock()
			if i%50 == 0 {
				time.Sleep(2 * time.Millisecond) // a steady stream, not one burst
			}
		}
		errc <- p.Flush(ctx)
	}()
	progress := func(at int) func() bool {
		return func() bool { wmu.Lock(); defer wmu.Unlock(); return written >= at }
	}
	// The watermark may never pass a line the stream has not stored.
	checkStored := func() {
		w := p.Watermark()
		msgs := readAll(t, c.Servers[0].URL(), DefaultStream)
		if len(msgs) < int(w) {
			t.Fatalf("watermark %s but only %d lines stored", w, len(msgs))
		}
	}
	for k, node := range []int{0, 1} {
		waitFor(t, "publishing to progress", progress((k+1)*n/4))
		c.Servers[node].Kill(t)
		waitFor(t, "publishing to progress with a node down", progress((k+1)*n/4+200))
		c.Servers[node].Restart(t)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	checkStored()
	if w := p.Watermark(); w != n {
		t.Fatalf("watermark %s after Flush, want %s", w, pglogrepl.LSN(n))
	}
	msgs := readAll(t, c.Servers[2].URL(), DefaultStream)
	if len(msgs) != n {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		var v struct{ ID string }
		if err := json.Unmarshal(m.Data, &v); err != nil || v.ID != fmt.Sprint(i+1) {
			t.Fatalf("message %d is %s, want id %d: lost or out of order", i, m.Data, i+1)
		}
	}
	checkMarks(t, p.marks.list(), n)
}

func TestOpenFailsClearly(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{Token: "s3cret"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Open(ctx, Config{URL: srv.URL(), Token: "wrong", Indexes: []string{"posts"}}, nil, nil, Hooks{})
	if err == nil || !strings.Contains(err.Error(), "token") || fault.Classify(err) != fault.Permanent {
		t.Fatalf("a wrong token: %v (class %s), want a permanent error naming the token", err, fault.Classify(err))
	}
	p, err := Open(ctx, Config{URL: srv.URL(), Token: "s3cret", Indexes: []string{"posts"}}, nil, nil, Hooks{})
	if err != nil {
		t.Fatalf("the right token: %v", err)
	}
	p.Close()
	// R3 on one server: refused, saying why.
	_, err = Open(ctx, Config{URL: srv.URL(), Token: "s3cret", Stream: "R3", Replicas: 3, Indexes: []string{"posts"}}, nil, nil, Hooks{})
	if err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("R3 on one server: %v, want an error about replicas", err)
	}
	// A stream that does not capture the subject.
	_, err = Open(ctx, Config{URL: srv.URL(), Token: "s3cret", Subject: "other.{index}", Indexes: []string{"posts"}}, nil, nil, Hooks{})
	if err == nil || !strings.Contains(err.Error(), "does not capture subject other.posts") {
		t.Fatalf("an uncovered subject: %v", err)
	}
	// Nothing listening: transient, retried until the context ends.
	short, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	_, err = Open(short, Config{URL: "nats://127.0.0.1:1", Indexes: []string{"posts"}}, nil, nil, Hooks{})
	if err == nil || !errors.Is(short.Err(), context.DeadlineExceeded) {
		t.Fatalf("no server: %v, want retries until the deadline", err)
	}
}

// TestGapIsRepublishedInOrder: another writer's message breaks the
// sequence the pipelined messages expect (as a lost message does); the
// server refuses them, and the publisher publishes them again, in order.
func TestGapIsRepublishedInOrder(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	p := start(t, Config{URL: srv.URL(), MaxInFlight: 32})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	write := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := p.Write(line(i, pglogrepl.LSN(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(1, 10)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, "flusso.posts", []byte(`{"index":"posts","op":"truncate","lsn":"0/B"}`)); err != nil {
		t.Fatal(err)
	}
	write(11, 100)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Messages stored after the refused one are published again after it:
	// the last copy of every line is in order, so the fold is right.
	msgs := readAll(t, srv.URL(), DefaultStream)
	last := map[int]int{} // id → position of its last copy
	for pos, m := range msgs {
		if strings.Contains(string(m.Data), "truncate") {
			continue
		}
		var v struct{ ID string }
		json.Unmarshal(m.Data, &v)
		var id int
		fmt.Sscan(v.ID, &id)
		last[id] = pos
	}
	for id := 1; id <= 100; id++ {
		pos, ok := last[id]
		if !ok {
			t.Fatalf("line %d is missing", id)
		}
		if id > 1 && pos < last[id-1] {
			t.Fatalf("the last copy of line %d (at %d) comes before line %d's (at %d)", id, pos, id-1, last[id-1])
		}
	}
	if len(msgs) > 101 {
		t.Logf("%d messages for 100 lines and the foreign one: the lines stored after the refused one came again", len(msgs))
	}
	checkMarks(t, p.marks.list(), 100)
}

func TestUserAndPassword(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{User: "flusso", Password: "pw"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Open(ctx, Config{URL: srv.URL(), User: "flusso", Password: "nope", Indexes: []string{"posts"}}, nil, nil, Hooks{}); err == nil || fault.Classify(err) != fault.Permanent {
		t.Fatalf("a wrong password: %v, want a permanent error", err)
	}
	p, err := Open(ctx, Config{URL: srv.URL(), User: "flusso", Password: "pw", Indexes: []string{"posts"}}, nil, nil, Hooks{})
	if err != nil {
		t.Fatalf("user and password: %v", err)
	}
	p.Close()
}
