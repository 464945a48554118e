package wal

import (
	"sync/atomic"

	"github.com/jackc/pglogrepl"
)

// watermark decides the position reported to the server as written,
// flushed and applied — the slot's confirmed_flush_lsn. The rules:
//
//   - it moves to what the consumer reports through Confirm: the EndLSN of a
//     transaction whose documents are durably written, so never past a
//     commit still in flight, and never into the middle of a transaction;
//   - when nothing is pending (every transaction handed out is confirmed
//     and none is open), it may move to the end of WAL the server says it
//     has sent (a keepalive's ServerWALEnd), or to the end of a transaction
//     with nothing for us: an idle or unrelated workload then retains no WAL;
//   - it never moves backwards.
//
// Confirm runs on the consumer's goroutine; everything else on Run's.
type watermark struct {
	confirmed atomic.Uint64 // the highest LSN passed to Confirm
	reported  atomic.Uint64 // the last position sent to the server

	flushed pglogrepl.LSN // Run's goroutine: the position to report
	handed  pglogrepl.LSN // Run's goroutine: EndLSN of the last transaction handed out
}

func (w *watermark) init(lsn pglogrepl.LSN) {
	w.flushed = lsn
	w.handed = lsn
	w.raise(&w.confirmed, lsn)
	w.raise(&w.reported, lsn)
}

func (w *watermark) raise(a *atomic.Uint64, lsn pglogrepl.LSN) {
	for {
		old := a.Load()
		if uint64(lsn) <= old || a.CompareAndSwap(old, uint64(lsn)) {
			return
		}
	}
}

// confirm records that the transactions up to lsn are durably written.
func (w *watermark) confirm(lsn pglogrepl.LSN) { w.raise(&w.confirmed, lsn) }

// hand records that the transaction ending at end is being handed out.
func (w *watermark) hand(end pglogrepl.LSN) {
	if end > w.handed {
		w.handed = end
	}
}

// pending reports whether a transaction handed out is not yet confirmed.
func (w *watermark) pending() bool {
	return pglogrepl.LSN(w.confirmed.Load()) < w.handed
}

// idle moves the position to lsn when nothing is pending and open is false.
func (w *watermark) idle(lsn pglogrepl.LSN, open bool) {
	if !open && !w.pending() && lsn > w.flushed {
		w.flushed = lsn
	}
}

// position is the LSN to send in the next status update.
func (w *watermark) position() pglogrepl.LSN {
	if c := pglogrepl.LSN(w.confirmed.Load()); c > w.flushed {
		w.flushed = c
	}
	return w.flushed
}
