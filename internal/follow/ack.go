package follow

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
)

// openAck opens the acknowledgement channel: a file descriptor inherited from
// the parent (--ack-fd) or a file or FIFO (--ack-file). Opening a FIFO blocks
// until the reader opens its end for writing, so it happens in readAcks.
func openAck(fd int, path string) (func() (io.ReadCloser, error), error) {
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
		return func() (io.ReadCloser, error) { return f, nil }, nil
	case path != "":
		return func() (io.ReadCloser, error) {
			f, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("--ack-file: %w", err)
			}
			return f, nil
		}, nil
	}
	return nil, nil
}

// readAcks reads one LSN per line (as written in the "lsn" field, X/Y) and
// hands each to ack. A malformed line is an error: guessing could confirm
// what the reader never indexed. End of input ends the channel without error:
// nothing more will be confirmed, and flusso-pg keeps streaming.
func readAcks(ctx context.Context, open func() (io.ReadCloser, error), ack func(pglogrepl.LSN), log *zap.Logger) error {
	r, err := open()
	if err != nil {
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
