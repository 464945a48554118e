package output

import (
	"bytes"
	"os"
	"testing"

	"github.com/jackc/pglogrepl"
)

// BenchmarkAppendUpsert measures encoding one upsert line around a 1 KiB
// document: the per-document cost of the NDJSON output.
func BenchmarkAppendUpsert(b *testing.B) {
	doc := []byte(`{"id" : 42, "title" : "post title 42", "body" : "` + string(bytes.Repeat([]byte("lorem ipsum "), 80)) + `"}`)
	key := []byte(`{"id":42}`)
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendUpsert(buf[:0], "posts", key, "42", pglogrepl.LSN(0x16B3748), doc)
	}
}

// BenchmarkWriterBatches measures writing batches of 500 lines to a file and
// syncing each: what follow does per batch.
func BenchmarkWriterBatches(b *testing.B) {
	f, err := os.CreateTemp(b.TempDir(), "out")
	if err != nil {
		b.Fatal(err)
	}
	w, err := NewWriter(f, true)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	doc := bytes.Repeat([]byte("x"), 1000)
	var batch []byte
	for i := 0; i < 500; i++ {
		batch = AppendUpsert(batch, "posts", []byte(`{"id":1}`), "1", 1, append([]byte(`"`), append(doc, '"')...))
	}
	b.SetBytes(int64(len(batch)))
	for b.Loop() {
		if err := w.Write(batch); err != nil {
			b.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
