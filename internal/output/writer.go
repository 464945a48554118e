package output

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// ErrReaderGone reports that the reader of stdout went away (EPIPE): nothing
// past what it received may be confirmed.
var ErrReaderGone = errors.New("the reader of the output went away (broken pipe)")

// bufferSize is how much is gathered before a write; a batch larger than
// this is written straight through.
const bufferSize = 1 << 20

// Writer owns the destination of the lines: stdout, or a file opened for
// append. Lines are gathered in a buffer that is only ever written at a line
// boundary, so a kill -9 cannot leave half a line behind a whole one; Sync
// writes the buffer and, for a regular file, fsyncs it. Only after Sync
// returns may the LSNs of the written lines be confirmed. A Writer is safe
// for use by several goroutines: each Write is one whole batch of lines,
// never interleaved with another.
type Writer struct {
	mu      sync.Mutex
	f       *os.File
	buf     []byte
	file    bool  // a regular file: fsync on Sync
	own     bool  // we opened it: close on Close
	trimmed int64 // bytes of a partial last line cut when opened
}

// ErrDevNull refuses a stdout that is /dev/null when no output was asked
// for: the Go runtime opens /dev/null for a stdout that was closed, and
// every line would "succeed" while nobody receives it.
var ErrDevNull = errors.New(`stdout is /dev/null (or was closed): the lines would reach nobody, and their changes would be confirmed; give --output /dev/null (output.path) to discard them on purpose`)

// Open returns a Writer for path: "-" is stdout; anything else is a file
// created if missing and opened for append.
// stdout that is /dev/null is refused (ErrDevNull). A file is created
// readable by its owner only: documents often carry personal data.
func Open(path string) (*Writer, error) {
	if path == "-" || path == "" {
		if isDevNull(os.Stdout) {
			return nil, ErrDevNull
		}
		return NewWriter(os.Stdout, false)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open output: %w", err)
	}
	w, err := NewWriter(f, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// NewWriter wraps f; own says whether Close closes it. When f is a regular
// file that ends in the middle of a line (an earlier process was killed
// while writing), the partial line is cut off: it was never confirmed, and
// appending to it would spoil the next line.
func NewWriter(f *os.File, own bool) (*Writer, error) {
	w := &Writer{f: f, buf: make([]byte, 0, bufferSize), own: own}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		w.file = true
		n, err := trimPartialLine(f, st.Size())
		if err != nil {
			return nil, err
		}
		w.trimmed = n
	}
	return w, nil
}

// Trimmed is how many bytes of a partial last line were cut when the file
// was opened (0: none); the caller logs it.
func (w *Writer) Trimmed() int64 { return w.trimmed }

// Name is the destination's name (the file's path, or /dev/stdout).
func (w *Writer) Name() string { return w.f.Name() }

// isDevNull reports whether f is the null device (character device 1:3).
func isDevNull(f *os.File) bool {
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err == nil && os.SameFile(st, null)
}

// trimPartialLine cuts f back to its last newline, when the partial line is
// one of flusso-pg's (it starts with {"index":); a file that ends in
// anything else was not written by flusso-pg and is refused, not cut. It
// returns the bytes cut. A file opened write-only
// — stdout redirected with the shell's >> — is read through a second,
// read-only descriptor of the same file (/proc/self/fd on Linux); when that
// is impossible too, the file is left as it is.
func trimPartialLine(f *os.File, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	var r io.ReaderAt = f
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		rf, oerr := os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if oerr != nil {
			return 0, nil
		}
		defer rf.Close()
		if _, err := rf.ReadAt(last, size-1); err != nil {
			return 0, nil
		}
		r = rf
	}
	if last[0] == '\n' {
		return 0, nil
	}
	// Find the last newline, reading backwards in blocks.
	const block = 64 << 10
	end := size
	for end > 0 {
		start := max(end-block, 0)
		chunk := make([]byte, end-start)
		if _, err := r.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read output tail: %w", err)
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			return truncate(f, r, start+int64(i)+1, size)
		}
		end = start
	}
	return truncate(f, r, 0, size)
}

// ownLine starts every line flusso-pg writes.
const ownLine = `{"index":`

func truncate(f *os.File, r io.ReaderAt, at, size int64) (int64, error) {
	head := make([]byte, min(int64(len(ownLine)), size-at))
	if _, err := r.ReadAt(head, at); err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read output tail: %w", err)
	}
	if !bytes.HasPrefix([]byte(ownLine), head) || len(head) == 0 {
		return 0, fmt.Errorf("output %s ends in %d bytes without a newline that are not a line of flusso-pg's (it would cut them to append): give a file of flusso-pg's or a new one", f.Name(), size-at)
	}
	if err := f.Truncate(at); err != nil {
		return 0, fmt.Errorf("cut the partial last line of the output: %w", err)
	}
	return size - at, nil
}

// Write adds whole lines.
func (w *Writer) Write(lines []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(lines)
}

func (w *Writer) writeLocked(lines []byte) error {
	if len(w.buf)+len(lines) <= cap(w.buf) {
		w.buf = append(w.buf, lines...)
		return nil
	}
	if err := w.flushLocked(); err != nil {
		return err
	}
	if len(lines) > cap(w.buf) {
		_, err := w.f.Write(lines)
		return classify(err)
	}
	w.buf = append(w.buf, lines...)
	return nil
}

func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.f.Write(w.buf)
	w.buf = w.buf[:0]
	return classify(err)
}

// Sync writes buffered lines to the destination, and fsyncs a regular file.
func (w *Writer) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.syncLocked()
}

func (w *Writer) syncLocked() error {
	if err := w.flushLocked(); err != nil {
		return err
	}
	if w.file {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("fsync output: %w", err)
		}
	}
	return nil
}

// WriteSync writes lines and syncs, as one step no other batch can split.
func (w *Writer) WriteSync(lines []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writeLocked(lines); err != nil {
		return err
	}
	return w.syncLocked()
}

// Close syncs and closes a file the Writer opened.
func (w *Writer) Close() error {
	err := w.Sync()
	if w.own {
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe) {
		return ErrReaderGone
	}
	return fmt.Errorf("write output: %w", err)
}
