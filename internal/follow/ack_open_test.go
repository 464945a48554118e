package follow

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestOpenAckMissingFileRefusedAtStart(t *testing.T) {
	if _, err := openAck(0, filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("a missing --ack-file is accepted")
	}
}

// A FIFO nobody opens for writing does not hold a stop: the wait for the
// writer ends with the context.
func TestOpenAckFIFOWaitEndsWithTheContext(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "acks")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	open, err := openAck(0, fifo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := open(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the open returned before any writer: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("open = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the open still waits for a writer after the context ended")
	}
}
