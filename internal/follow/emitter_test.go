package follow

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

var update = flag.Bool("update", false, "rewrite testdata/emitter/*.ndjson with the output of now")

// buffer is a sink over a bytes.Buffer that records where each Write and
// Sync fell, and fails a Write when told to.
type buffer struct {
	bytes.Buffer
	writes, syncs int
	fail          error
}

func (b *buffer) Write(p []byte) error {
	if b.fail != nil {
		return b.fail
	}
	b.writes++
	b.Buffer.Write(p)
	return nil
}

func (b *buffer) Sync() error {
	b.syncs++
	b.Buffer.WriteString("# sync\n")
	return nil
}

// step is one thing done to the emitter: a chunk of lines (each an op at an
// LSN), or the end of a group.
type step struct {
	chunk []op
	flush bool
	reset bool
	need  pglogrepl.LSN // with flush: the newest LSN the group must report
}

type op struct {
	kind string // upsert, delete, truncate
	id   string
	lsn  pglogrepl.LSN
}

func chunk(ops ...op) step               { return step{chunk: ops} }
func flushed(need pglogrepl.LSN) step    { return step{flush: true, need: need} }
func up(id string, lsn pglogrepl.LSN) op { return op{"upsert", id, lsn} }
func del(id string, lsn pglogrepl.LSN) op {
	return op{"delete", id, lsn}
}

func run(t *testing.T, e *emitter, steps []step) {
	t.Helper()
	for i, s := range steps {
		switch {
		case s.flush:
			need, err := e.flush()
			if err != nil {
				t.Fatalf("step %d: flush: %v", i, err)
			}
			if need != s.need {
				t.Fatalf("step %d: flush reports newest line %s, want %s", i, need, s.need)
			}
		case s.reset:
			e.reset()
		default:
			e.begin()
			for _, o := range s.chunk {
				key := []byte(`{"id":` + o.id + `}`)
				switch o.kind {
				case "upsert":
					e.upsert("posts", key, o.id, o.lsn, []byte(`{"id":`+o.id+`}`))
				case "delete":
					e.delete("posts", key, o.id, o.lsn)
				case "truncate":
					e.truncate("posts", o.lsn)
				case "rebuild_start":
					e.rebuildStart("posts", o.lsn)
				case "rebuild_done":
					e.rebuildDone("posts", o.lsn)
				}
			}
			if err := e.end(); err != nil {
				t.Fatalf("step %d: end: %v", i, err)
			}
		}
	}
}

// The emitter's output, as NDJSON with the syncs marked, for each shape of
// group: compared with testdata/emitter/<name>.ndjson (-update rewrites).
func TestEmitterGolden(t *testing.T) {
	cases := []struct {
		name  string
		acks  bool
		steps []step
	}{
		{"empty-group", false, []step{flushed(0)}},
		{"one-line", false, []step{chunk(up("1", 0x100)), flushed(0x100)}},
		{"one-line-acks", true, []step{chunk(up("1", 0x100)), flushed(0x100)}},
		{"chunk-out-of-order", false, []step{
			chunk(up("3", 0x300), del("1", 0x100), up("2", 0x200), up("4", 0x100)), flushed(0x300)}},
		{"chunks-hold-the-last-line", true, []step{
			chunk(up("1", 0x100), up("2", 0x100)),
			chunk(up("3", 0x200)),
			chunk(),
			{chunk: []op{{"truncate", "", 0x300}}},
			chunk(up("4", 0x300), del("5", 0x300)),
			flushed(0x300)}},
		{"rebuild", true, []step{
			chunk(up("1", 0x100)),
			{chunk: []op{{"rebuild_start", "", 0x200}}},
			chunk(up("1", 0x200), up("2", 0x200)),
			chunk(up("3", 0x200)),
			{chunk: []op{{"rebuild_done", "", 0x200}}},
			flushed(0x200)}},
		{"two-groups", true, []step{
			chunk(up("1", 0x100)), flushed(0x100),
			chunk(del("1", 0x200), up("2", 0x180)), flushed(0x200),
			flushed(0)}},
		{"group-written-again-after-a-failure", true, []step{
			chunk(up("1", 0x100), up("2", 0x200)),
			{reset: true}, // the group failed: its held line is dropped, and it runs again
			chunk(up("1", 0x100), up("2", 0x200)),
			flushed(0x200)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b buffer
			run(t, newEmitter(&b, c.acks), c.steps)
			golden := filepath.Join("testdata", "emitter", c.name+".ndjson")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Fatalf("output differs from %s:\ngot:\n%s\nwant:\n%s", golden, b.Bytes(), want)
			}
		})
	}
}

// The properties the golden files show, checked on their own: lines in
// non-decreasing LSN order within a group, exactly one ack mark per group
// that wrote a line (on its last line) and none without acks, a sync at
// the end of each group.
func TestEmitterOrderAndMarks(t *testing.T) {
	for _, acks := range []bool{false, true} {
		var b buffer
		e := newEmitter(&b, acks)
		run(t, e, []step{
			chunk(up("9", 0x900), up("1", 0x100), del("5", 0x500)),
			chunk(up("7", 0x700), up("6", 0x600)),
			flushed(0x900),
		})
		lines := bytes.Split(bytes.TrimSuffix(b.Bytes(), []byte("# sync\n")), []byte("\n"))
		lines = lines[:len(lines)-1]
		// Each chunk in LSN order; chunks in the order they came.
		want := []pglogrepl.LSN{0x100, 0x500, 0x900, 0x600, 0x700}
		if len(lines) != len(want) {
			t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), b.Bytes())
		}
		marks := 0
		for i, l := range lines {
			if lsn := lineLSN(t, l); lsn != want[i] {
				t.Errorf("line %d: lsn %s, want %s", i, lsn, want[i])
			}
			if bytes.Contains(l, []byte(`"ack":true`)) {
				marks++
				if i != len(lines)-1 {
					t.Errorf("ack mark on line %d of %d", i, len(lines))
				}
			}
		}
		if want := map[bool]int{false: 0, true: 1}[acks]; marks != want {
			t.Errorf("acks %v: %d ack marks, want %d", acks, marks, want)
		}
		if b.syncs != 1 {
			t.Errorf("%d syncs, want 1", b.syncs)
		}
	}
}

func lineLSN(t *testing.T, l []byte) pglogrepl.LSN {
	t.Helper()
	i := bytes.Index(l, []byte(`"lsn":"`))
	if i < 0 {
		t.Fatalf("no lsn in %q", l)
	}
	rest := l[i+7:]
	lsn, err := pglogrepl.ParseLSN(string(rest[:bytes.IndexByte(rest, '"')]))
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// A write error is permanent whatever it wraps: the group is not run again
// against a reader that went away, nor against a socket given as stdout.
func TestEmitterWriteErrorsArePermanent(t *testing.T) {
	for _, cause := range []error{output.ErrReaderGone, &netErr{}} {
		b := &buffer{fail: cause}
		e := newEmitter(b, false)
		e.begin()
		e.upsert("posts", []byte(`{"id":1}`), "1", 1, []byte(`{}`))
		e.upsert("posts", []byte(`{"id":2}`), "2", 1, []byte(`{}`))
		err := e.end()
		if !errors.Is(err, cause) {
			t.Fatalf("end: %v, want %v", err, cause)
		}
		if c := fault.Classify(err); c != fault.Permanent {
			t.Fatalf("%v classified %s, want permanent", err, c)
		}
	}
}

// netErr is what a write to a socket returns: on its own, transient.
type netErr struct{}

func (*netErr) Error() string   { return "write: connection reset by peer" }
func (*netErr) Timeout() bool   { return true }
func (*netErr) Temporary() bool { return true }
