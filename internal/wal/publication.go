package wal

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// publicationExistsSQL is the one query for whether the publication exists,
// for Open (over the replication connection) and the watcher (over an
// ordinary one); both take the simple protocol.
func publicationExistsSQL(publication string) string {
	return "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = " + change.QuoteLiteral(publication)
}

func (c *Capture) checkPublication(ctx context.Context, conn *pgconn.PgConn) error {
	rows, err := simpleQuery(ctx, conn, publicationExistsSQL(c.cfg.Publication))
	if err != nil {
		return fmt.Errorf("check publication: %w", err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("publication %s: %w", c.cfg.Publication, ErrPublicationMissing)
	}
	return nil
}

// watchPublication checks every few status intervals, over an ordinary
// connection, that the publication still exists; when it does not, it
// cancels ctx with ErrPublicationMissing. A dropped publication ends the
// stream with an error on most servers, but PG18 skips it and goes on.
// Connection trouble here is not reported: the stream's own reconnects
// report it.
func (c *Capture) watchPublication(ctx context.Context, cancel context.CancelCauseFunc) {
	every := min(max(5*c.cfg.StatusInterval, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	sql := publicationExistsSQL(c.cfg.Publication)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn == nil {
			var err error
			if conn, err = pgconn.Connect(ctx, c.cfg.DSN); err != nil {
				conn = nil
				continue
			}
		}
		qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
		rows, err := simpleQuery(qctx, conn, sql)
		qcancel()
		if err != nil {
			closeConn(conn)
			conn = nil
			continue
		}
		if len(rows) == 0 {
			cancel(fmt.Errorf("publication %s: %w", c.cfg.Publication, ErrPublicationMissing))
			return
		}
	}
}
