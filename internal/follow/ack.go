package follow

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
)

// openAck prepares the acknowledgement channel: a file descriptor inherited
// from the parent (--ack-fd) or a file or FIFO (--ack-file). Opening a FIFO
// for reading blocks until the reader opens its end for writing, so the
// returned function is called by readAcks, which runs from the start, beside
// the backfill: whichever side opens the FIFO first, neither waits for the
// other's lines.
func openAck(fd int, path string) (func(context.Context) (io.ReadCloser, error), error) {
	switch {
	case fd > 0 && path != "":
		return nil, fmt.Errorf("--ack-fd and --ack-file are exclusive: give one")
	case fd > 0:
		f := os.NewFile(uintptr(fd), fmt.Sprintf("ack-fd-%d", fd))
		if f == nil {
			return nil, fmt.Errorf("--ack-fd %d: not an open file descriptor", fd)
		}
		if _, err := f.Stat(); err != nil {
			return nil, fmt.Errorf("--ack-fd %d: not an open file descriptor: %w", fd, err)
		}
		return func(context.Context) (io.ReadCloser, error) { return f, nil }, nil
	case path != "":
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("--ack-file: %w", err)
		}
		return openFIFO(path), nil
	}
	return nil, nil
}

// openFIFO starts opening path for reading at once, before the output is
// opened (a reader may open the ack FIFO before the output FIFO), and
// returns the function that waits for it. When ctx ends while the open
// waits for a writer (a FIFO nobody opened yet), that function opens the
// write end itself, without blocking, to release the wait, and returns ctx's
// error.
func openFIFO(path string) func(context.Context) (io.ReadCloser, error) {
	ch := make(chan opened, 1)
	go func() {
		f, err := os.Open(path)
		ch <- opened{f, err}
	}()
	return func(ctx context.Context) (io.ReadCloser, error) {
		select {
		case o := <-ch:
			if o.err != nil {
				return nil, fmt.Errorf("--ack-file: %w", o.err)
			}
			return o.f, nil
		case <-ctx.Done():
		}
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		select {
		case o := <-ch:
			if o.f != nil {
				o.f.Close()
			}
		case <-time.After(time.Second):
		}
		return nil, ctx.Err()
	}
}

type opened struct {
	f   *os.File
	err error
}

// readAcks reads one LSN per line (as written in the "lsn" field, X/Y) and
// hands each to ack (the stream's confirmer) and to backfill (the backfill's
// progress, which counts them: see snapshot.Backfill.Ack). A malformed line
// is an error: guessing could confirm what the reader never indexed. End of
// input ends the channel without error: nothing more will be confirmed, and
// flusso-pg keeps streaming.
func readAcks(ctx context.Context, open func(context.Context) (io.ReadCloser, error), ack func(pglogrepl.LSN), backfill func(pglogrepl.LSN) error, log *zap.Logger) error {
	r, err := open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	go func() { <-ctx.Done(); r.Close() }()
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		lsn, err := pglogrepl.ParseLSN(text)
		if err != nil {
			return fmt.Errorf("ack channel line %d: %q is not an LSN such as 0/16B3748 (write back the \"lsn\" field of the lines you indexed)", line, text)
		}
		if backfill != nil {
			if err := backfill(lsn); err != nil {
				return fmt.Errorf("save the backfill's acknowledged progress: %w", err)
			}
		}
		ack(lsn)
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("ack channel: %w", err)
	}
	log.Warn("the ack channel was closed by the reader: the slot will not be confirmed further until restart")
	return nil
}
