package output

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenCutsAPartialLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	os.WriteFile(path, []byte("{\"a\":1}\n{\"a\":2}\n{\"a\":"), 0o644)
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteSync([]byte("{\"a\":3}\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, _ := os.ReadFile(path)
	if want := "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"; string(got) != want {
		t.Fatalf("file = %q, want %q", got, want)
	}
}

// stdout redirected with >> is opened write-only: the partial line is cut
// all the same.
func TestNewWriterCutsAPartialLastLineOfAWriteOnlyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	os.WriteFile(path, []byte("{\"a\":1}\n{\"a\":"), 0o644)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteSync([]byte("{\"a\":3}\n")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := "{\"a\":1}\n{\"a\":3}\n"; string(got) != want {
		t.Fatalf("file = %q, want %q", got, want)
	}
}

func TestWriterOnlyWritesWholeBatches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 1000)
	for i := range line {
		line[i] = 'x'
	}
	line[len(line)-1] = '\n'
	for i := 0; i < 3000; i++ { // 3 MB: several buffer flushes
		if err := w.Write(line); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(path)
		if st.Size()%int64(len(line)) != 0 {
			t.Fatalf("after %d lines the file holds %d bytes: a partial line was written", i+1, st.Size())
		}
	}
	w.Close()
	st, _ := os.Stat(path)
	if st.Size() != 3000*1000 {
		t.Fatalf("size %d, want %d", st.Size(), 3000*1000)
	}
}

func TestBrokenPipeIsReaderGone(t *testing.T) {
	r, wf, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w, err := NewWriter(wf, true)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("{}\n"))
	err = w.Sync()
	if !errors.Is(err, ErrReaderGone) {
		t.Fatalf("Sync on a closed pipe = %v, want ErrReaderGone", err)
	}
}
