package follow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// gatedSink is an output whose writes wait for open; it records what it got.
type gatedSink struct {
	mu     sync.Mutex
	got    bytes.Buffer
	syncs  int
	open   chan struct{}
	failAt int // the failAt-th write fails (0: none)
	writes int
}

func (s *gatedSink) Write(b []byte) error {
	<-s.open
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.failAt > 0 && s.writes >= s.failAt {
		return errors.New("broken pipe")
	}
	s.got.Write(b)
	return nil
}

func (s *gatedSink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	return nil
}

func (s *gatedSink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

// The next group is handed over while the output still holds the one
// before (the pipeline goes on), lines come out in order, and each group's
// hand-over runs only after its lines are written and synced, in order.
func TestLineWriterOverlapsAndKeepsOrder(t *testing.T) {
	out := &gatedSink{open: make(chan struct{})}
	w := newLineWriter(context.Background(), out)
	var mu sync.Mutex
	var handed []int
	var want bytes.Buffer
	for g := range 3 {
		line := fmt.Sprintf("{\"group\":%d}\n", g)
		want.WriteString(line)
		if err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		err := w.SyncThen(func() {
			mu.Lock()
			handed = append(handed, g)
			mu.Unlock()
			if got := out.text(); !bytes.HasSuffix([]byte(got), []byte(line)) {
				t.Errorf("group %d handed on before its line was written: %q", g, got)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// All three groups were handed over with the output blocked.
	mu.Lock()
	if len(handed) != 0 {
		t.Fatalf("handed on before any write: %v", handed)
	}
	mu.Unlock()
	close(out.open)
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := out.text(); got != want.String() {
		t.Fatalf("output %q, want %q", got, want.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(handed) != "[0 1 2]" {
		t.Fatalf("handed on %v, want [0 1 2]", handed)
	}
	w.close()
}

// What waits is bounded: past writeAhead bytes Write waits for the output.
func TestLineWriterBoundsWhatWaits(t *testing.T) {
	out := &gatedSink{open: make(chan struct{})}
	w := newLineWriter(context.Background(), out)
	chunk := bytes.Repeat([]byte("x"), writeAhead/4)
	returned := make(chan int, 16)
	go func() {
		for i := range 8 {
			if err := w.Write(chunk); err != nil {
				t.Error(err)
				return
			}
			returned <- i
		}
		close(returned)
	}()
	// One write is in the output (blocked), at most writeAhead bytes more
	// wait: the writes of at most 5 chunks return.
	for deadline := time.Now().Add(10 * time.Second); len(returned) < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes returned: the writer does not write ahead", len(returned))
		}
	}
	time.Sleep(200 * time.Millisecond) // room for a write past the bound, were there one
	if n := len(returned); n > 5 {
		t.Fatalf("%d writes of %d bytes returned with the output blocked; the bound is %d bytes", n, len(chunk), writeAhead)
	}
	close(out.open)
	n := 0
	for range returned {
		n++
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if n != 8 || out.got.Len() != 8*len(chunk) {
		t.Fatalf("%d writes returned, %d bytes written; want 8 and %d", n, out.got.Len(), 8*len(chunk))
	}
	w.close()
}

// An output error is every later call's error, stops the pipeline (failure)
// and confirms nothing handed over with or after the failed write.
func TestLineWriterErrorConfirmsNothingAfter(t *testing.T) {
	out := &gatedSink{open: make(chan struct{}), failAt: 2}
	close(out.open)
	w := newLineWriter(context.Background(), out)
	handed := make(chan int, 4)
	for g := range 3 {
		_ = w.Write([]byte("line\n"))
		_ = w.SyncThen(func() { handed <- g })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.failure(ctx); err == nil || err.Error() != "broken pipe" {
		t.Fatalf("failure: %v, want broken pipe", err)
	}
	if err := w.Write([]byte("more\n")); err == nil {
		t.Fatal("a write after the error succeeded")
	}
	if err := w.Sync(); err == nil {
		t.Fatal("a sync after the error succeeded")
	}
	w.close()
	close(handed)
	var got []int
	for g := range handed {
		got = append(got, g)
	}
	if fmt.Sprint(got) != "[0]" {
		t.Fatalf("handed on %v, want only the group before the failed write: [0]", got)
	}
}

// The stop's end (ctx) releases a Write waiting on a stuck output, and
// close does not wait for the stuck write.
func TestLineWriterStuckOutputReleasedByStop(t *testing.T) {
	out := &gatedSink{open: make(chan struct{})} // never opened: a reader that stopped reading
	ctx, cancel := context.WithCancel(context.Background())
	w := newLineWriter(ctx, out)
	chunk := bytes.Repeat([]byte("x"), writeAhead/2)
	done := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			err = w.Write(chunk)
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("write ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write waiting on a stuck output was not released by the stop")
	}
	closed := make(chan struct{})
	go func() { w.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close waited for a stuck write")
	}
}
