package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// The publication decides which changes reach the slot's stream, and it can
// change under a running capture without the stream saying so: dropped
// (PG18 goes on without it), a table dropped from it, an action turned off.
// Open checks that it exists; while Run streams, a watcher compares it now
// and then with what capture needs, and stops Run naming the fix.

// ErrPublicationChanged: the publication no longer publishes a captured
// table or one of the actions capture needs; the PublicationError wrapping
// it names the fix.
var ErrPublicationChanged = errors.New("the publication changed under flusso-pg")

// PublicationError is a change of the publication that stops capture.
type PublicationError struct {
	Publication string
	Why, Fix    string
}

func (e *PublicationError) Error() string {
	return fmt.Sprintf("publication %s: %s: %s", e.Publication, e.Why, e.Fix)
}

func (e *PublicationError) Is(target error) bool { return target == ErrPublicationChanged }

// publicationSQL reads the publication's actions; no row: it does not
// exist. The one query for both Open (over the replication connection) and
// the watcher (over an ordinary one); both take the simple protocol.
func publicationSQL(publication string) string {
	return "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_catalog.pg_publication WHERE pubname = " +
		change.QuoteLiteral(publication)
}

// publishedSQL lists the tables the publication publishes (FOR ALL TABLES
// and FOR TABLES IN SCHEMA expanded).
func publishedSQL(publication string) string {
	return "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = " +
		change.QuoteLiteral(publication)
}

// checkPublication checks that the publication exists; on Open (first) it
// also notes which captured tables it publishes, for the watcher.
func (c *Capture) checkPublication(ctx context.Context, conn *pgconn.PgConn, first bool) error {
	rows, err := simpleQuery(ctx, conn, publicationSQL(c.cfg.Publication))
	if err != nil {
		return fmt.Errorf("check publication: %w", err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("publication %s: %w", c.cfg.Publication, ErrPublicationMissing)
	}
	if first {
		if err := c.pub.baseline(ctx, conn); err != nil {
			return fmt.Errorf("check publication: %w", err)
		}
	}
	return nil
}

// actions are the changes capture needs published: inserts, updates and
// deletes to follow rows, truncates to rebuild.
var actions = []string{"insert", "update", "delete", "truncate"}

// publicationWatch compares the publication with what capture needs. The
// tables it requires are the captured ones published when Open looked: one
// the publication never had is provision's to report at start, not a
// change to stop for.
type publicationWatch struct {
	cfg      *Config
	required []change.Table // nil until the baseline
}

// published reads the tables the publication publishes.
func (w *publicationWatch) published(ctx context.Context, conn *pgconn.PgConn) ([]change.Table, error) {
	rows, err := simpleQuery(ctx, conn, publishedSQL(w.cfg.Publication))
	if err != nil {
		return nil, err
	}
	var out []change.Table
	for _, r := range rows {
		out = append(out, change.Table{Schema: string(r[0]), Name: string(r[1])})
	}
	return out, nil
}

// publishes reports whether t (schema-less: any schema) is in published.
func publishes(published []change.Table, t change.Table) bool {
	return slices.ContainsFunc(published, func(p change.Table) bool {
		return p.Name == t.Name && (t.Schema == "" || p.Schema == t.Schema)
	})
}

// baseline notes the captured tables the publication publishes now.
func (w *publicationWatch) baseline(ctx context.Context, conn *pgconn.PgConn) error {
	published, err := w.published(ctx, conn)
	if err != nil {
		return err
	}
	w.required = []change.Table{}
	for t := range w.cfg.Tables {
		if publishes(published, t) {
			w.required = append(w.required, t)
		}
	}
	return nil
}

// look runs the comparison on conn: a PublicationError, or
// ErrPublicationMissing, when the publication no longer fits.
func (w *publicationWatch) look(ctx context.Context, conn *pgconn.PgConn) error {
	pub := w.cfg.Publication
	rows, err := simpleQuery(ctx, conn, publicationSQL(pub))
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("publication %s: %w", pub, ErrPublicationMissing)
	}
	var off []string
	for i, a := range actions {
		if string(rows[0][i]) != "t" {
			off = append(off, a)
		}
	}
	if len(off) > 0 {
		return &PublicationError{Publication: pub,
			Why: fmt.Sprintf("it no longer publishes %s, so those changes no longer reach flusso-pg", strings.Join(off, ", ")),
			Fix: fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate'); then run with --resync", change.QuoteIdentIfNeeded(pub))}
	}
	if w.required == nil {
		return w.baseline(ctx, conn)
	}
	published, err := w.published(ctx, conn)
	if err != nil {
		return err
	}
	for _, t := range w.required {
		if !publishes(published, t) {
			return &PublicationError{Publication: pub,
				Why: fmt.Sprintf("it no longer publishes table %s, so that table's changes no longer reach flusso-pg", t),
				Fix: fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s; then run with --resync", change.QuoteIdentIfNeeded(pub), t)}
		}
	}
	return nil
}

// watchPublication looks at the publication every few status intervals (at
// least every 10 s), over an ordinary connection, and cancels ctx with the
// reason when it no longer fits. Connection trouble here is not reported:
// the stream's own reconnects report it.
func (c *Capture) watchPublication(ctx context.Context, cancel context.CancelCauseFunc) {
	every := min(max(5*c.cfg.StatusInterval, time.Second), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	w := &c.pub
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	for {
		if conn == nil {
			var err error
			if conn, err = pgconn.Connect(ctx, c.cfg.DSN); err != nil {
				conn = nil
			}
		}
		if conn != nil {
			qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
			err := w.look(qctx, conn)
			qcancel()
			switch {
			case errors.Is(err, ErrPublicationMissing), errors.Is(err, ErrPublicationChanged):
				cancel(err)
				return
			case err != nil:
				closeConn(conn)
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
