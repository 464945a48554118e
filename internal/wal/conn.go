package wal

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// batchingConn lets data pile up in the socket while a stream is busy, so
// that one read takes many small messages instead of one. pgoutput sends
// each message as it is decoded — a single-row transaction is three
// messages of a few dozen bytes — and reading them one by one costs a
// syscall and a trip through the scheduler each: on a busy machine that
// CPU is taken from the walsender, which is what bounds throughput.
//
// After a short read (one that left most of the buffer empty) that came
// right after another, the next read waits a moment first. A trickling
// stream loses at most that moment per read; an idle one loses nothing,
// since the wait comes after data arrived, not before.
type batchingConn struct {
	net.Conn
	on    atomic.Bool // only while streaming: queries keep their latency
	short int
}

const (
	batchWait     = time.Millisecond
	shortReadSize = 4096
)

func (c *batchingConn) Read(p []byte) (int, error) {
	if c.on.Load() && c.short >= 2 {
		time.Sleep(batchWait)
	}
	n, err := c.Conn.Read(p)
	if n > 0 && n < shortReadSize && n < len(p)/2 {
		c.short++
	} else {
		c.short = 0
	}
	return n, err
}

// dialBatching wraps a dial function so its connections batch reads.
func dialBatching(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &batchingConn{Conn: nc}, nil
	}
}
