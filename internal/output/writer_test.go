package output

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenCutsAPartialLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	os.WriteFile(path, []byte("{\"a\":1}\n{\"a\":2}\n{\"index\":\"p\",\"op"), 0o644)
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
	if w.Trimmed() != int64(len(`{"index":"p","op`)) {
		t.Fatalf("Trimmed() = %d, want the %d bytes cut", w.Trimmed(), len(`{"index":"p","op`))
	}
}

// A last line that is not one of flusso-pg's is refused, never cut.
func TestOpenRefusesAForeignLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "precious.txt")
	content := "line one\nimportant record two with no newline at end"
	os.WriteFile(path, []byte(content), 0o644)
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "not a line of flusso-pg's") {
		t.Fatalf("Open = %v, want a refusal", err)
	}
	if got, _ := os.ReadFile(path); string(got) != content {
		t.Fatalf("the file was changed: %q", got)
	}
}

func TestOpenCreatesTheFileForItsOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		t.Fatalf("output created with mode %v, want no access for group and others", perm)
	}
}

// A stdout that is /dev/null (what the Go runtime makes of a closed one) is
// refused; --output /dev/null is taken.
func TestOpenRefusesStdoutOnDevNull(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	saved := os.Stdout
	os.Stdout = null
	_, err = Open("-")
	os.Stdout = saved
	if !errors.Is(err, ErrDevNull) {
		t.Fatalf("Open(\"-\") on /dev/null = %v, want ErrDevNull", err)
	}
	w, err := Open(os.DevNull)
	if err != nil {
		t.Fatalf("an explicit /dev/null is refused: %v", err)
	}
	w.Close()
}

// stdout redirected with >> is opened write-only: the partial line is cut
// all the same.
func TestNewWriterCutsAPartialLastLineOfAWriteOnlyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	os.WriteFile(path, []byte("{\"a\":1}\n{\"ind"), 0o644)
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
