package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// session is one worker's connection and its snapshot transaction.
type session struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// end closes the transaction (read only: nothing to commit) and gives the
// connection back to the pool.
func (s session) end(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s.tx.Rollback(ctx)
	s.conn.Release()
}

// positionSQL reads the WAL position of the snapshot; a standby has no
// current insert position, only the last replayed one.
const positionSQL = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"

// begin opens n REPEATABLE READ, READ ONLY transactions that all see one
// snapshot: snap.Name when given (imported by every one), else one exported
// by the first transaction and imported by the others. It returns the
// sessions opened so far even on error, for the caller to end.
func (b *Backfill) begin(ctx context.Context, snap Snapshot, n int) ([]session, pglogrepl.LSN, error) {
	var sessions []session
	name, lsn := snap.Name, snap.LSN
	for i := range n {
		conn, err := b.pool.Acquire(ctx)
		if err != nil {
			return sessions, lsn, fmt.Errorf("connect reader %d: %w", i+1, err)
		}
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			conn.Release()
			return sessions, lsn, fmt.Errorf("begin snapshot transaction: %w", err)
		}
		sessions = append(sessions, session{conn: conn, tx: tx})
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
				return sessions, lsn, fmt.Errorf("export snapshot: %w", err)
			}
			if lsn == 0 {
				if lsn, err = pglogrepl.ParseLSN(pos); err != nil {
					return sessions, lsn, fmt.Errorf("snapshot position %q: %w", pos, err)
				}
			}
			if exported != nil {
				name = *exported
			}
			continue
		}
		// SET TRANSACTION SNAPSHOT must be the transaction's first statement.
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+change.QuoteLiteral(name)); err != nil {
			return sessions, lsn, fmt.Errorf("import snapshot %s: %w", name, err)
		}
	}
	return sessions, lsn, nil
}
