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

// BenchmarkCompact measures the compaction of a blog document as Postgres'
// json_build_object writes it (nested author, comments, tags) against a
// plain copy of the same bytes: the CPU that compact lines cost.
func BenchmarkCompact(b *testing.B) {
	var d bytes.Buffer
	d.WriteString(`{"id" : 42, "title" : "post title 42", "body" : "` + string(bytes.Repeat([]byte("lorem ipsum "), 30)) + `", "published_at" : "2026-12-03T01:02:03+00:00", "votes" : 17, "author" : {"id" : 7, "name" : "Ann Lee", "user" : {"handle" : "ann"}}, "comments" : [`)
	for i := 0; i < 5; i++ {
		if i > 0 {
			d.WriteString(", ")
		}
		d.WriteString(`{"id" : 100` + string(rune('0'+i)) + `, "body" : "a comment, with \"quotes\" : and more", "score" : 3}`)
	}
	d.WriteString(`], "tags" : ["go", "sql"], "comment_count" : 5}`)
	doc := d.Bytes()
	buf := make([]byte, 0, 4096)
	b.Run("copy", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			buf = append(buf[:0], doc...)
		}
	})
	b.Run("compact", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			buf = AppendCompact(buf[:0], doc)
		}
		b.ReportMetric(float64(len(buf))/float64(len(doc)), "out/in")
	})
}
