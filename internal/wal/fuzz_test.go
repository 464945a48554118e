package wal

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// The fuzz input is a sequence of pgoutput messages, each prefixed with its
// length as a big-endian uint16 — what the decoder sees, one XLogData
// payload at a time.
func splitMessages(data []byte) [][]byte {
	var msgs [][]byte
	for len(data) >= 2 {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		if n > len(data) {
			n = len(data)
		}
		msgs = append(msgs, data[:n])
		data = data[n:]
	}
	return msgs
}

func joinMessages(msgs [][]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
		out = append(out, m...)
	}
	return out
}

var fuzzTables = map[change.Table][]string{
	{Schema: "public", Name: "t"}:     {"id", "parent"},
	{Schema: "public", Name: "big"}:   {"id", "doc"},
	{Name: "c"}:                       {"a", "b"},
	{Schema: "public", Name: "other"}: {"id"},
}

// FuzzPgoutput feeds corrupt, truncated and reordered message sequences to
// the decoder and the transaction assembler: they must answer with an error,
// never a panic or a hang, and whatever they hand out must replay.
func FuzzPgoutput(f *testing.F) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := newDecoder(fuzzTables)
		asm := newAssembler(512, dir, nil)
		defer asm.reset()
		for _, m := range splitMessages(data) {
			msg, err := dec.decode(m)
			if err != nil {
				return
			}
			txn, err := asm.handle(&msg)
			if err != nil {
				return
			}
			if txn != nil {
				n := 0
				err := txn.Each(7, func(rows []change.Row) error {
					n += len(rows)
					return nil
				})
				txn.Release()
				if err != nil || n != txn.Rows {
					t.Fatalf("each: %d rows of %d, %v", n, txn.Rows, err)
				}
			}
		}
	})
}

// FuzzSpillRecord decodes arbitrary spill records: errors, never panics.
func FuzzSpillRecord(f *testing.F) {
	b := newRowBuffer(0, "")
	row := change.Row{Table: change.Table{Schema: "public", Name: "t"}, Op: change.Update, Cols: []string{"id", "p"},
		Old: []change.Value{{Text: "1"}, {Missing: true}}, New: []change.Value{{Text: "2"}, {Null: true}}}
	f.Add(b.encode(nil, &row))
	f.Fuzz(func(t *testing.T, rec []byte) {
		var r change.Row
		if err := b.decodeRecord(rec, &r); err != nil {
			return
		}
		if got := b.encode(nil, &r); string(got) != string(rec) && len(r.Cols) > 0 {
			// Re-encoding need not be byte-identical (varints), but a row
			// that decoded must encode and decode to itself.
			var again change.Row
			if err := b.decodeRecord(got, &again); err != nil || fmt.Sprint(again) != fmt.Sprint(r) {
				t.Fatalf("round trip: %v vs %v (%v)", r, again, err)
			}
		}
	})
}

var captureCorpus = flag.Bool("capture-corpus", false, "rewrite testdata/fuzz/FuzzPgoutput from a real server")

// TestCaptureFuzzCorpus records pgoutput messages from a real server into
// the seed corpus of FuzzPgoutput. It runs only with -capture-corpus:
//
//	go test ./internal/wal -run TestCaptureFuzzCorpus -capture-corpus
func TestCaptureFuzzCorpus(t *testing.T) {
	if !*captureCorpus {
		t.Skip("run with -capture-corpus to rewrite the seed corpus")
	}
	fx := newFixture(t, `
		CREATE TABLE t (id int PRIMARY KEY, parent int, note text);
		CREATE TABLE big (id int PRIMARY KEY, doc text);
		ALTER TABLE big ALTER doc SET STORAGE EXTERNAL;
		CREATE TABLE c (a int, b text, PRIMARY KEY (a, b));
		ALTER TABLE c REPLICA IDENTITY FULL;
		CREATE TABLE other (id int PRIMARY KEY);`, "t, big, c, other", fuzzTables)
	c := New(fx.cfg, testLogger(t))
	var mu sync.Mutex
	var msgs [][]byte
	c.tap = func(b []byte) {
		mu.Lock()
		msgs = append(msgs, append([]byte(nil), b...))
		mu.Unlock()
	}
	st, err := c.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := run(t, c, st, 16)
	steps := []string{
		`INSERT INTO t VALUES (1, 10, 'a'), (2, 20, 'b')`,
		`UPDATE t SET parent = 11 WHERE id = 1`,
		`UPDATE t SET id = 3 WHERE id = 2`,
		`DELETE FROM t WHERE id = 1`,
		`INSERT INTO big VALUES (1, repeat('x', 5000))`,
		`UPDATE big SET id = 2`,
		`INSERT INTO c VALUES (1, 'x'), (2, 'y')`,
		`UPDATE c SET b = 'z' WHERE a = 1`,
		`DELETE FROM c WHERE a = 2`,
		`BEGIN; INSERT INTO t SELECT g, g, 'pad pad pad pad' FROM generate_series(100, 700) g; ROLLBACK`,
		`BEGIN; INSERT INTO t SELECT g, g, 'pad pad pad pad' FROM generate_series(100, 700) g; SAVEPOINT s; INSERT INTO t SELECT g, g, 'pad' FROM generate_series(2000, 2400) g; ROLLBACK TO s; INSERT INTO t VALUES (3000, 1, ''); COMMIT`,
		`ALTER TABLE t ADD COLUMN extra int; INSERT INTO t VALUES (4000, 1, '', 5)`,
		`TRUNCATE t, other`,
		`INSERT INTO other VALUES (1)`,
	}
	for _, s := range steps {
		fx.db.Exec(t, s)
	}
	// Wait for the last one.
	for {
		txn := r.next(20 * time.Second)
		rows, _ := allRows(txn)
		txn.Release()
		if len(rows) == 1 && rows[0].Table.Name == "other" {
			break
		}
	}
	r.stop()
	mu.Lock()
	defer mu.Unlock()
	out := filepath.Join("testdata", "fuzz", "FuzzPgoutput")
	os.RemoveAll(out)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, m [][]byte) {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(joinMessages(m))) + ")\n"
		if err := os.WriteFile(filepath.Join(out, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Each transaction on its own after the Relation messages seen so far
	// (what its changes need).
	var rels [][]byte
	from, n := 0, 0
	for i, m := range msgs {
		if len(m) == 0 {
			continue
		}
		if m[0] == 'R' {
			rels = append(rels, m)
		}
		if m[0] == 'C' || m[0] == 'c' || m[0] == 'A' {
			seed := append(append([][]byte(nil), rels...), msgs[from:i+1]...)
			from = i + 1
			if size := len(joinMessages(seed)); size > 128<<10 {
				continue
			}
			n++
			write(fmt.Sprintf("txn_%02d", n), seed)
		}
	}
	t.Logf("captured %d messages into %s", len(msgs), out)
}
