package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// session is one worker's connection and its snapshot transaction; tx is
// nil once ended.
type session struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// end closes the transaction (read only: nothing to commit) and gives the
// connection back to the pool (which drops it when it is broken). Ending an
// ended session does nothing.
func (s *session) end(ctx context.Context) {
	if s.tx == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s.tx.Rollback(ctx)
	s.conn.Release()
	s.tx, s.conn = nil, nil
}

// stage is the backfill's name in fault.Health.
const stage = "backfill"

// view is the snapshot a worker reads in: the backfill's (name, "" when it
// was not exported: one worker reading in its own), or, once that one was
// lost, a newer one of the worker's own.
type view struct {
	name  string
	newer bool
}

// reopen gives s a new connection and snapshot transaction after its old
// one died: in the backfill's snapshot when it can still be imported (the
// session that exported it is alive), else, when Config.NewerSnapshotOK, in
// a newer one of its own, logged once per worker.
func (b *Backfill) reopen(ctx context.Context, s *session, v view) (view, error) {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return v, fmt.Errorf("reconnect reader: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return v, fmt.Errorf("begin snapshot transaction: %w", err)
	}
	if !v.newer {
		lost := fmt.Errorf("the backfill's snapshot was lost with its connection")
		if v.name != "" {
			_, err = tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+change.QuoteLiteral(v.name))
			lost = fmt.Errorf("the backfill's snapshot %s was lost with its connection: %w", v.name, err)
		}
		if v.name == "" || err != nil {
			tx.Rollback(ctx)
			conn.Release()
			if err != nil && fault.Classify(err) != fault.Permanent {
				return v, err
			}
			if !b.cfg.NewerSnapshotOK {
				return v, fault.MarkPermanent(fmt.Errorf("%w; run the backfill again", lost))
			}
			b.log.Warn("a backfill reader lost its connection and the snapshot with it: it reads on in a newer snapshot; "+
				"the stream that follows replays every commit since the snapshot's LSN, so every document reaches its newest state",
				zap.Error(lost))
			return b.reopen(ctx, s, view{newer: true})
		}
	}
	s.conn, s.tx = conn, tx
	return v, nil
}

// positionSQL reads the WAL position of the snapshot; a standby has no
// current insert position, only the last replayed one.
const positionSQL = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"

// begin opens n REPEATABLE READ, READ ONLY transactions that all see one
// snapshot: snap.Name when given (imported by every one), else one exported
// by the first transaction and imported by the others. It returns the
// sessions opened so far even on error, for the caller to end.
func (b *Backfill) begin(ctx context.Context, snap Snapshot, n int) ([]*session, view, pglogrepl.LSN, error) {
	var sessions []*session
	name, lsn := snap.Name, snap.LSN
	for i := range n {
		conn, err := b.pool.Acquire(ctx)
		if err != nil {
			return sessions, view{name: name}, lsn, fmt.Errorf("connect reader %d: %w", i+1, err)
		}
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			conn.Release()
			return sessions, view{name: name}, lsn, fmt.Errorf("begin snapshot transaction: %w", err)
		}
		sessions = append(sessions, &session{conn: conn, tx: tx})
		if name == "" {
			// Export our own: the first statement of this transaction takes
			// its snapshot, and the position is read in that same statement.
			sql := "SELECT NULL::text, " + positionSQL
			if n > 1 {
				sql = "SELECT pg_export_snapshot(), " + positionSQL
			}
			var exported *string
			var pos string
			if err := tx.QueryRow(ctx, sql).Scan(&exported, &pos); err != nil {
				return sessions, view{name: name}, lsn, fmt.Errorf("export snapshot: %w", err)
			}
			if lsn == 0 {
				if lsn, err = pglogrepl.ParseLSN(pos); err != nil {
					return sessions, view{name: name}, lsn, fmt.Errorf("snapshot position %q: %w", pos, err)
				}
			}
			if exported != nil {
				name = *exported
			}
			continue
		}
		// SET TRANSACTION SNAPSHOT must be the transaction's first statement.
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+change.QuoteLiteral(name)); err != nil {
			return sessions, view{name: name}, lsn, fmt.Errorf("import snapshot %s: %w", name, err)
		}
	}
	return sessions, view{name: name}, lsn, nil
}
