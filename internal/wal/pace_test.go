package wal

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// script is a net.Conn whose reads return the given chunks, one per Read.
type script struct {
	net.Conn // nil: only Read and deadlines are used
	chunks   [][]byte
}

func (s *script) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	s.chunks = s.chunks[1:]
	return n, nil
}

func (s *script) SetReadDeadline(time.Time) error { return nil }

// fakePacer is a pacedConn over scripted reads, with a clock that moves by
// step on every read and a sleep that only counts.
func fakePacer(step time.Duration, chunks ...[]byte) (*pacedConn, *[]time.Duration) {
	var slept []time.Duration
	clock := time.Unix(1000, 0)
	c := newPacedConn(&script{chunks: chunks}, time.Millisecond, &paceStats{})
	c.now = func() time.Time { clock = clock.Add(step); return clock }
	c.sleep = func(d time.Duration) { slept = append(slept, d) }
	c.streaming(true, nil)
	return c, &slept
}

func small(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{'x'}, 60)
	}
	return out
}

func readAll(t *testing.T, c *pacedConn, n int) {
	t.Helper()
	buf := make([]byte, 8192)
	for i := 0; i < n; i++ {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
}

// Drained reads a few microseconds apart (a busy stream) turn pausing on:
// from then on each drained read is followed by a pause.
func TestPaceEngagesOnABusyStream(t *testing.T) {
	chunks := small(engageReads)
	big := bytes.Repeat([]byte{'y'}, 4096) // what piles up in a pause
	chunks = append(chunks, big, big, big)
	c, slept := fakePacer(10*time.Microsecond, chunks...)
	readAll(t, c, engageReads)
	if len(*slept) != 0 || !c.pacing {
		t.Fatalf("after %d quick drained reads: pacing %v, %d pauses; want pacing and no pause yet", engageReads, c.pacing, len(*slept))
	}
	readAll(t, c, 3)
	if len(*slept) != 3 || (*slept)[0] != time.Millisecond {
		t.Fatalf("pauses %v, want one of 1ms before each of the 3 reads", *slept)
	}
	if !c.pacing {
		t.Fatal("pacing turned off although each pause gathered 4 KiB")
	}
}

// A coalesce of 0 (capture.coalesce: 0) is off here too: New gives it no
// default, and a busy stream is read without a pause.
func TestCoalesceZeroIsOff(t *testing.T) {
	if c := New(Config{Slot: "s"}, nil); c.cfg.Coalesce != 0 {
		t.Fatalf("New turned coalesce 0 into %v; 0 is off, the default is config's", c.cfg.Coalesce)
	}
	c, slept := fakePacer(10*time.Microsecond, small(4*engageReads)...)
	c.pause = 0
	readAll(t, c, 4*engageReads)
	if len(*slept) != 0 || c.stats.pauses.Load() != 0 {
		t.Fatalf("coalesce 0: %d pauses on a busy stream, want none", len(*slept))
	}
}

// Reads far apart (a quiet database) never pause.
func TestPaceStaysOffOnAQuietStream(t *testing.T) {
	c, slept := fakePacer(400*time.Microsecond, small(200)...)
	readAll(t, c, 200)
	if len(*slept) != 0 || c.pacing {
		t.Fatalf("200 drained reads 400µs apart: %d pauses, pacing %v; want none", len(*slept), c.pacing)
	}
}

// A pause that finds little data waiting turns pausing off again.
func TestPaceDisengagesWhenAPauseGathersLittle(t *testing.T) {
	chunks := small(engageReads)
	chunks = append(chunks, []byte("tiny"), []byte("tiny"), []byte("tiny"))
	c, slept := fakePacer(10*time.Microsecond, chunks...)
	readAll(t, c, engageReads+1)
	if len(*slept) != 1 || c.pacing {
		t.Fatalf("a pause gathered 4 bytes: %d pauses, pacing %v; want 1 pause, then off", len(*slept), c.pacing)
	}
	readAll(t, c, 2)
	if len(*slept) != 1 {
		t.Fatalf("%d pauses after pacing turned off, want 1", len(*slept))
	}
}

// Outside streaming (connection setup, commands) nothing is paced.
func TestPaceOffOutsideStreaming(t *testing.T) {
	c, slept := fakePacer(time.Microsecond, small(100)...)
	c.streaming(false, nil)
	readAll(t, c, 100)
	if len(*slept) != 0 || c.stats.reads.Load() != 0 {
		t.Fatalf("not streaming: %d pauses, %d counted reads; want none", len(*slept), c.stats.reads.Load())
	}
}

// tcpPair is a connected loopback TCP pair: the client side wrapped.
func tcpPair(t *testing.T, pause time.Duration) (*pacedConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, _ := ln.Accept()
		accepted <- s
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	c := newPacedConn(nc, pause, &paceStats{})
	t.Cleanup(func() { nc.Close(); srv.Close() })
	return c, srv
}

// While transactions are held, Read does not wait: it returns what is
// there, or errWouldBlock, which pgconn treats as a timeout.
func TestPaceHoldDoesNotWait(t *testing.T) {
	c, srv := tcpPair(t, time.Millisecond)
	if !c.canHold() {
		t.Fatal("a TCP connection should be able to hold")
	}
	held := true
	c.streaming(true, func() bool { return held })
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if !errors.Is(err, errWouldBlock) || n != 0 {
		t.Fatalf("nothing queued: Read gave %d, %v; want errWouldBlock", n, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("errWouldBlock must be a net.Error timeout, so pgconn keeps the connection")
	}
	srv.Write([]byte("hello"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err = c.Read(buf)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("data queued: Read gave %q, %v", buf[:n], err)
	}
	held = false
	srv.Write([]byte("world"))
	n, err = c.Read(buf) // not held: waits as usual
	if err != nil || string(buf[:n]) != "world" {
		t.Fatalf("not held: Read gave %q, %v", buf[:n], err)
	}
}

// pausing is a loopback pair whose client side is already pausing, as on
// a busy stream.
func pausing(t *testing.T, pause time.Duration) (*pacedConn, net.Conn) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("SO_RCVLOWAT pauses are Linux-only; elsewhere a pause is a sleep")
	}
	c, srv := tcpPair(t, pause)
	c.streaming(true, nil)
	c.pacing, c.drained = true, true
	return c, srv
}

// A pause on Linux TCP is not cut short by a little data: the reader waits
// the whole pause (nobody is woken), then reads what came.
func TestPauseWaitsThroughSmallWrites(t *testing.T) {
	const pause = time.Second
	c, srv := pausing(t, pause)
	srv.Write([]byte("early")) // before the pause: marks the socket readable
	time.Sleep(20 * time.Millisecond)
	began := time.Now()
	go func() {
		time.Sleep(50 * time.Millisecond)
		srv.Write([]byte("-late"))
	}()
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	took := time.Since(began)
	if err != nil {
		t.Fatal(err)
	}
	if took < pause-20*time.Millisecond {
		t.Fatalf("the pause ended after %v, before its %v, with only %d bytes queued", took, pause, n)
	}
	if string(buf[:n]) != "early-late" {
		t.Fatalf("read %q after the pause, want both writes", buf[:n])
	}
	if c.stats.pauses.Load() != 1 {
		t.Fatalf("%d pauses, want 1", c.stats.pauses.Load())
	}
}

// A pause ends early once lowWater bytes are queued.
func TestPauseEndsAtTheLowWaterMark(t *testing.T) {
	const pause = 10 * time.Second
	c, srv := pausing(t, pause)
	go func() {
		time.Sleep(50 * time.Millisecond)
		srv.Write(bytes.Repeat([]byte{'z'}, 2*lowWater))
	}()
	began := time.Now()
	buf := make([]byte, 8192)
	n, err := c.Read(buf)
	if err != nil || n == 0 {
		t.Fatalf("read %d, %v", n, err)
	}
	if took := time.Since(began); took > pause/2 {
		t.Fatalf("with %d bytes queued the pause still lasted %v", 2*lowWater, took)
	}
}

// The caller's read deadline (a status update due, or a stop) ends a pause;
// the data stays for the next read.
func TestPauseYieldsToTheCallersDeadline(t *testing.T) {
	const pause = 10 * time.Second
	c, srv := pausing(t, pause)
	srv.Write([]byte("kept"))
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	began := time.Now()
	buf := make([]byte, 100)
	_, err := c.Read(buf)
	if !isTimeout(err) || errors.Is(err, errWouldBlock) {
		t.Fatalf("Read gave %v, want the deadline's timeout", err)
	}
	if took := time.Since(began); took > pause/2 {
		t.Fatalf("the caller's deadline ended the pause after %v", took)
	}
	c.SetReadDeadline(time.Time{})
	began = time.Now()
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "kept" {
		t.Fatalf("after the timeout Read gave %q, %v; want the queued data", buf[:n], err)
	}
	if took := time.Since(began); took > pause/2 {
		t.Fatalf("the read after a cut-short pause paused again (%v)", took)
	}
}
