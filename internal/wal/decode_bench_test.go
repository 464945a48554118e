package wal

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// corpusMessages reads the pgoutput messages captured from a real server
// into the fuzz seed corpus (testdata/fuzz/FuzzPgoutput).
func corpusMessages(b *testing.B) [][][]byte {
	b.Helper()
	files, err := filepath.Glob("testdata/fuzz/FuzzPgoutput/*")
	if err != nil || len(files) == 0 {
		b.Fatalf("no seed corpus: %v", err)
	}
	var seqs [][][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		lines := strings.SplitN(string(data), "\n", 3)
		if len(lines) < 2 || !strings.HasPrefix(lines[1], "[]byte(") {
			b.Fatalf("%s: not a go fuzz corpus file", f)
		}
		lit := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[1]), "[]byte("), ")")
		raw, err := strconv.Unquote(lit)
		if err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		seqs = append(seqs, splitMessages([]byte(raw)))
	}
	return seqs
}

// BenchmarkDecode decodes and assembles the captured pgoutput messages:
// relation cache, inserts, updates (key changes, TOAST), deletes, truncates,
// streamed blocks — and extracts the thin rows (key and join columns).
func BenchmarkDecode(b *testing.B) {
	seqs := corpusMessages(b)
	dir := b.TempDir()
	msgs, rows := 0, 0
	b.ReportAllocs()
	for b.Loop() {
		dec := newDecoder(fuzzTables)
		asm := newAssembler(64<<20, dir, nil)
		for _, seq := range seqs {
			for _, m := range seq {
				msgs++
				msg, err := dec.decode(m)
				if err != nil {
					break
				}
				txn, err := asm.handle(&msg)
				if err != nil {
					break
				}
				if txn != nil {
					txn.Each(500, func(r []change.Row) error { rows += len(r); return nil })
					txn.Release()
				}
			}
			asm.reset()
		}
	}
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
