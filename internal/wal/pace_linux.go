package wal

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// lowWaterWorks: Linux wakes a TCP socket's readers only once SO_RCVLOWAT
// bytes are queued (since 4.18), and a non-blocking read still returns
// whatever is there.
const lowWaterWorks = true

func setLowWater(raw syscall.RawConn, n int) error {
	var serr error
	err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
	})
	if err != nil {
		return err
	}
	return serr
}

// queued is the number of bytes in the socket's receive queue (SIOCINQ);
// on error it claims plenty, so that a wait ends.
func queued(fd uintptr) int {
	n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	if err != nil {
		return 1 << 30
	}
	return n
}
