//go:build !linux

package wal

import (
	"errors"
	"syscall"
)

// lowWaterWorks: elsewhere a pause is a sleep.
const lowWaterWorks = false

func setLowWater(syscall.RawConn, int) error { return errors.ErrUnsupported }

func queued(uintptr) int { return 1 << 30 }
