package follow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// visibleSQL counts the transactions of $1 (32-bit xids, as pgoutput sends
// them) that a new snapshot would not yet see. Each xid is widened to an
// xid8 with the epoch of the current snapshot's xmax (one epoch earlier when
// its low bits are past xmax's: it was assigned before the wrap).
const visibleSQL = `
SELECT count(*) FILTER (WHERE NOT pg_visible_in_snapshot(
         ((GREATEST(0, (pg_snapshot_xmax(s)::text::bigint >> 32)
                       - CASE WHEN x > (pg_snapshot_xmax(s)::text::bigint & 4294967295) THEN 1 ELSE 0 END) << 32) | x)::text::xid8,
         s))
  FROM pg_current_snapshot() AS s, unnest($1::bigint[]) AS x`

// errInvisible is what the group's first read returns when a transaction
// of the group is not visible yet: the group runs again after a backoff.
// It is marked permanent so that no retry on the way (a rebuild's page)
// takes it for a fault of the server; process catches it first.
var errInvisible = fault.MarkPermanent(errors.New("a transaction of the group is not visible yet"))

// Why a group must wait: Postgres writes a commit to the WAL — and the
// walsender may send it — a moment before the transaction becomes visible
// to other sessions (the commit record is flushed before the transaction
// leaves the proc array). Building documents in that moment would read the
// state before the commit and write it as the newest.
//
// How it waits without a round trip of its own: every read of a group
// (resolve, build, rebuild) goes through its gate. The gate sends the
// group's first query to the server in one pipeline right behind
// visibleSQL, on one connection. The server runs a pipeline's statements
// one after the other, and each takes its snapshot when it starts (at READ
// COMMITTED every statement has its own; at REPEATABLE READ or
// SERIALIZABLE the implicit transaction of the pipeline, up to its Sync,
// shares the first statement's): the query's snapshot is taken at or
// after the check's. A committed xid visible to one snapshot is visible to
// every later one (it has left the proc array for good). So when the check
// counts no invisible transaction, the query behind it — and every later
// read of the group, on any connection, started after the check answered
// — sees every commit of the group: each document is built at or after its
// commit. When the check counts one, the query's results are discarded
// unread and the group runs again from its start after a backoff (see
// backoff; nothing of it was confirmed). A group that reads nothing (only
// truncations of roots) needs no check: its lines do not depend on the
// database.

// visibility is the waiting of one group, across its attempts.
type visibility struct {
	xids      []int64
	began     time.Time
	delay     time.Duration
	force     bool  // invisible for more than 10 s: build anyway (logged)
	invisible int64 // the count of the last check that failed
}

func newVisibility(txns []*wal.Txn) *visibility {
	v := &visibility{xids: make([]int64, 0, len(txns)), delay: 100 * time.Microsecond}
	for _, t := range txns {
		if t.Xid != 0 {
			v.xids = append(v.xids, int64(t.Xid))
		}
	}
	return v
}

// backoff waits before the group runs again after errInvisible. The
// moment between a commit's flush and its visibility is usually a few
// microseconds (longer when the committing backend is descheduled), so the
// first run again is at once (its round trip is the wait), then after 100
// µs, doubling up to 20 ms. A commit the WAL holds cannot stay invisible;
// after 10 s the group is built anyway (not to hang on a miscomputed xid),
// with a warning.
func (v *visibility) backoff(ctx context.Context, log *zap.Logger) error {
	if v.began.IsZero() {
		v.began = time.Now()
		return nil
	}
	if time.Since(v.began) > 10*time.Second {
		log.Warn("transactions still not visible after 10 s; building anyway",
			zap.Int64("invisible", v.invisible), zap.Int("transactions", len(v.xids)))
		v.force = true
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(v.delay):
	}
	v.delay = min(2*v.delay, 20*time.Millisecond)
	return nil
}

// gate is the build.Querier a group reads through (see above). It is safe
// for the concurrent builds of parallel.go: they wait for the check.
type gate struct {
	pool *pgxpool.Pool
	v    *visibility

	mu     sync.Mutex
	passed atomic.Bool
	took   time.Duration // until the check answered (the trace's "visible")
}

func newGate(pool *pgxpool.Pool, v *visibility) *gate {
	g := &gate{pool: pool, v: v}
	if v.force || len(v.xids) == 0 {
		g.passed.Store(true)
	}
	return g
}

// Query runs sql: the first one behind the visibility check, in the same
// pipeline; the others (started once the check answered) on the pool.
func (g *gate) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if g.passed.Load() {
		return g.pool.Query(ctx, sql, args...)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.passed.Load() {
		return g.pool.Query(ctx, sql, args...)
	}
	began := time.Now()
	conn, err := g.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	b.Queue(visibleSQL, g.v.xids)
	b.Queue(sql, args...)
	br := conn.SendBatch(ctx, b)
	var invisible int64
	err = br.QueryRow().Scan(&invisible)
	g.took += time.Since(began)
	if err != nil || invisible > 0 {
		_ = br.Close() // the query behind is discarded unread
		conn.Release()
		if err != nil {
			return nil, fmt.Errorf("check that the transactions are visible: %w", err)
		}
		g.v.invisible = invisible
		return nil, errInvisible
	}
	g.passed.Store(true)
	rows, err := br.Query()
	if err != nil {
		rows.Close()
		_ = br.Close()
		conn.Release()
		return nil, err
	}
	return &gatedRows{Rows: rows, br: br, conn: conn}, nil
}

// QueryRow is Query for one row.
func (g *gate) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := g.Query(ctx, sql, args...)
	return &gatedRow{rows: rows, err: err}
}

// gatedRows are the rows of the query behind the check: closing them ends
// the pipeline and gives the connection back.
type gatedRows struct {
	pgx.Rows
	br     pgx.BatchResults
	conn   *pgxpool.Conn
	err    error
	closed bool
}

func (r *gatedRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close() // as pgx's rows close themselves at the end
	return false
}

func (r *gatedRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	if err := r.br.Close(); err != nil && r.Rows.Err() == nil {
		r.err = err
	}
	r.conn.Release()
}

func (r *gatedRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// gatedRow is pgx's row over gatedRows.
type gatedRow struct {
	rows pgx.Rows
	err  error
}

func (r *gatedRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
