package output

import (
	"bufio"
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

// Writer owns the destination of the lines: stdout, or a file opened for
// append. Writes are buffered; Sync flushes the buffer and, for a file,
// fsyncs it. Only after Sync returns may the LSNs of the written lines be
// confirmed. A Writer is safe for use by several goroutines: each Write is
// one whole batch of lines, never interleaved with another.
type Writer struct {
	mu   sync.Mutex
	f    *os.File
	buf  *bufio.Writer
	file bool // a regular file: fsync on Sync
	own  bool // we opened it: close on Close
}

// Open returns a Writer for path: "-" is stdout; anything else is a file
// created if missing and opened for append.
func Open(path string) (*Writer, error) {
	if path == "-" || path == "" {
		return NewWriter(os.Stdout, false), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output: %w", err)
	}
	w := NewWriter(f, true)
	return w, nil
}

// NewWriter wraps f; own says whether Close closes it.
func NewWriter(f *os.File, own bool) *Writer {
	w := &Writer{f: f, buf: bufio.NewWriterSize(f, 1<<20), own: own}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		w.file = true
	}
	return w
}

// Write appends whole lines to the buffer.
func (w *Writer) Write(lines []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.buf.Write(lines)
	return classify(err)
}

// Sync flushes buffered lines to the destination, and fsyncs a regular file.
func (w *Writer) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.syncLocked()
}

func (w *Writer) syncLocked() error {
	if err := w.buf.Flush(); err != nil {
		return classify(err)
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
	if _, err := w.buf.Write(lines); err != nil {
		return classify(err)
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
