package follow

import (
	"time"

	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// trace times the stages of one group, for the "group written" debug log:
// where a commit's latency goes (docs/benchmarks.md). The stamps of the
// group's last transaction come from capture (wal.Txn): the server's
// commit time, the socket read that brought the commit, the hand-off.
type trace struct {
	taken    time.Time     // loop took the group from capture
	first    time.Time     // the first attempt began
	attempt  time.Time     // the last attempt began (after any backoff)
	visible  time.Duration // waiting for visibility (its round trips)
	resolved time.Time     // the keys were resolved
	built    time.Time     // the documents were built and handed to the output
	flushed  time.Time     // the output was written (and synced)
	retries  int           // attempts run again because a commit was not visible yet
}

// fields are the stage durations of the group ending with last, confirmed
// now.
func (t *trace) fields(last *wal.Txn, confirmed time.Time) []zap.Field {
	since := func(a, b time.Time) time.Duration {
		if a.IsZero() || b.IsZero() {
			return 0
		}
		return b.Sub(a)
	}
	return []zap.Field{
		zap.Duration("to_read", since(last.CommitTime, last.Received)), // server: commit → walsender → our socket read
		zap.Duration("hold", since(last.Received, last.Handed)),        // decode, and held while the socket had more
		zap.Duration("handoff", since(last.Handed, t.taken)),           // channel: until the loop took it
		zap.Duration("visible", t.visible),
		zap.Duration("invisible", since(t.first, t.attempt)), // attempts run again: a commit not visible yet
		zap.Duration("resolve", since(t.attempt, t.resolved)),
		zap.Duration("build", since(t.resolved, t.built)),
		zap.Duration("flush", since(t.built, t.flushed)),
		zap.Duration("confirm", since(t.flushed, confirmed)),
		zap.Int("visibility_retries", t.retries),
	}
}
