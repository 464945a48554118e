package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

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

// ErrRebuildNotRecorded wraps the error of Config.Readd: the table is not
// added back, capture stops.
var ErrRebuildNotRecorded = errors.New("could not record the rebuild a table back in the publication needs")

// PublicationError is a change of the publication that stops capture.
type PublicationError struct {
	Publication string
	Why, Fix    string
}

func (e *PublicationError) Error() string {
	return fmt.Sprintf("publication %s: %s: %s", e.Publication, e.Why, e.Fix)
}

func (e *PublicationError) Is(target error) bool { return target == ErrPublicationChanged }

// publicationSQL reads the publication's actions and the tables it
// publishes (FOR ALL TABLES and FOR TABLES IN SCHEMA expanded), in one
// statement so both come from one snapshot: a row per table, or one with
// NULLs when it publishes none; no row when it does not exist. The one
// query for Open (over the replication connection) and the watcher (over
// an ordinary one); both take the simple protocol.
func publicationSQL(publication string) string {
	return "SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, t.schemaname, t.tablename, " +
		"(quote_ident(t.schemaname) || '.' || quote_ident(t.tablename))::regclass::oid " +
		"FROM pg_catalog.pg_publication p LEFT JOIN pg_catalog.pg_publication_tables t ON t.pubname = p.pubname " +
		"WHERE p.pubname = " + change.QuoteLiteral(publication)
}

// publication is what publicationSQL read.
type publication struct {
	actions   []string // the actions capture needs that it publishes
	published []change.Table
	oids      []string // per published table, its oid
}

// readPublication runs publicationSQL; ErrPublicationMissing when the
// publication does not exist.
func readPublication(ctx context.Context, conn *pgconn.PgConn, name string) (*publication, error) {
	rows, err := simpleQuery(ctx, conn, publicationSQL(name))
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("publication %s: %w", name, ErrPublicationMissing)
	}
	p := &publication{}
	for i, a := range actions {
		if string(rows[0][i]) == "t" {
			p.actions = append(p.actions, a)
		}
	}
	for _, r := range rows {
		if r[4] != nil {
			p.published = append(p.published, change.Table{Schema: string(r[4]), Name: string(r[5])})
			p.oids = append(p.oids, string(r[6]))
		}
	}
	return p, nil
}

// oidOf gives the oid of t (schema-less: in any schema) when it is
// published.
func (p *publication) oidOf(t change.Table) (string, bool) {
	i := slices.IndexFunc(p.published, func(q change.Table) bool {
		return q.Name == t.Name && (t.Schema == "" || q.Schema == t.Schema)
	})
	if i < 0 {
		return "", false
	}
	return p.oids[i], true
}

// checkPublication checks that the publication exists; on Open (first) it
// also notes which captured tables it publishes, for the watcher.
func (c *Capture) checkPublication(ctx context.Context, conn *pgconn.PgConn, first bool) error {
	p, err := readPublication(ctx, conn, c.cfg.Publication)
	if errors.Is(err, ErrPublicationMissing) {
		return err
	}
	if err != nil {
		return fmt.Errorf("check publication: %w", err)
	}
	if first {
		return c.pub.baseline(ctx, conn, p)
	}
	return nil
}

// actions are the changes capture needs published: inserts, updates and
// deletes to follow rows, truncates to rebuild.
var actions = []string{"insert", "update", "delete", "truncate"}

// publicationWatch compares the publication with what capture needs. The
// tables it requires are the captured ones: those published when Open
// looked, and the ordinary tables it did not find there (provision, which
// looked a moment before, found them or refused to start, so one missing
// now was dropped from the publication in between). A partitioned table or
// a partition missing is not required: a publication lists one or the
// other, as publish_via_partition_root says.
type publicationWatch struct {
	cfg      *Config
	log      *zap.Logger
	required map[string]change.Table // by oid (a rename is relation.go's to report); nil until the baseline
}

// baseline notes the captured tables to require (see publicationWatch).
func (w *publicationWatch) baseline(ctx context.Context, conn *pgconn.PgConn, p *publication) error {
	required := map[string]change.Table{}
	for t := range w.cfg.Tables {
		if oid, ok := p.oidOf(t); ok {
			required[oid] = t
			continue
		}
		if t.Schema == "" {
			continue
		}
		rows, err := simpleQuery(ctx, conn, "SELECT oid FROM pg_catalog.pg_class WHERE relkind = 'r' AND NOT relispartition AND oid = to_regclass("+change.QuoteLiteral(t.Quoted())+")")
		if err != nil {
			return fmt.Errorf("check publication: %w", err)
		}
		if len(rows) == 1 {
			required[string(rows[0][0])] = t
		}
	}
	w.required = required
	return nil
}

// look runs the comparison on conn: a PublicationError, or
// ErrPublicationMissing, when the publication no longer fits.
func (w *publicationWatch) look(ctx context.Context, conn *pgconn.PgConn) error {
	name := w.cfg.Publication
	p, err := readPublication(ctx, conn, name)
	if err != nil {
		return err
	}
	if len(p.actions) < len(actions) {
		var off []string
		for _, a := range actions {
			if !slices.Contains(p.actions, a) {
				off = append(off, a)
			}
		}
		set := fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')", change.QuoteIdentIfNeeded(name))
		if w.cfg.Readd == nil {
			return &PublicationError{Publication: name,
				Why: fmt.Sprintf("it no longer publishes %s, so those changes no longer reach flusso-pg", strings.Join(off, ", ")),
				Fix: set + "; then run with --resync (or run with source.provision: auto, which publishes them again and rebuilds every index)"}
		}
		// Every captured table's changes of those kinds were lost.
		tables := make([]change.Table, 0, len(w.cfg.Tables))
		for t := range w.cfg.Tables {
			tables = append(tables, t)
		}
		why := fmt.Sprintf("the publication no longer published %s: published them again; every index is rebuilt", strings.Join(off, ", "))
		return w.repair(ctx, conn, tables, set, why)
	}
	if w.required == nil {
		if err := w.baseline(ctx, conn, p); err != nil {
			return err
		}
	}
	for oid, t := range w.required {
		if slices.Contains(p.oids, oid) {
			continue
		}
		rows, err := simpleQuery(ctx, conn, "SELECT 1 FROM pg_catalog.pg_class WHERE oid = "+oid)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			if err := w.recreated(ctx, conn, p, oid, t); err != nil {
				return err
			}
			continue
		}
		if w.cfg.Readd != nil {
			add := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", change.QuoteIdentIfNeeded(name), t)
			why := "a captured table was no longer in the publication: added it back; the indexes that read it are rebuilt"
			if err := w.repair(ctx, conn, []change.Table{t}, add, why); err != nil {
				return err
			}
			continue
		}
		return &PublicationError{Publication: name,
			Why: fmt.Sprintf("it no longer publishes table %s, so that table's changes no longer reach flusso-pg", t),
			Fix: fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s; then run with --resync (or run with source.provision: auto, which adds it back and rebuilds what reads it)", change.QuoteIdentIfNeeded(name), t)}
	}
	return nil
}

// recreated handles a required table whose oid is gone: dropped, or
// dropped and created again (a new table, whose rows the documents must be
// rebuilt from; DROP TABLE sends no deletes). Under source.provision: auto
// a table of that name is put in the publication (unless it already is)
// and required from then on; otherwise, or when there is none, capture
// stops naming the fix.
func (w *publicationWatch) recreated(ctx context.Context, conn *pgconn.PgConn, p *publication, oid string, t change.Table) error {
	name := w.cfg.Publication
	stop := &PublicationError{Publication: name,
		Why: fmt.Sprintf("table %s was dropped (or dropped and created again: a new table), so its changes no longer reach flusso-pg", t),
		Fix: fmt.Sprintf("create it and ALTER PUBLICATION %s ADD TABLE %s, or remove it from the config; then run with --resync (source.provision: auto adds a table created again by itself, and rebuilds what reads it)", change.QuoteIdentIfNeeded(name), t)}
	if w.cfg.Readd == nil {
		return stop
	}
	rows, err := simpleQuery(ctx, conn, "SELECT oid FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p') AND oid = to_regclass("+change.QuoteLiteral(t.Quoted())+")")
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return stop
	}
	add := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", change.QuoteIdentIfNeeded(name), t)
	if _, published := p.oidOf(t); published {
		add = "" // FOR ALL TABLES, or added by someone: published already
	}
	why := "a captured table was dropped and created again: put the new one in the publication; the indexes that read it are rebuilt"
	if err := w.repair(ctx, conn, []change.Table{t}, add, why); err != nil {
		return err
	}
	delete(w.required, oid)
	w.required[string(rows[0][0])] = t
	return nil
}

// repair makes the publication fit again under source.provision: auto:
// the rebuild of every index reading tables is recorded (Config.Readd),
// then sql runs (in standby mode on the primary: a standby is read-only),
// then the tables count as back.
func (w *publicationWatch) repair(ctx context.Context, conn *pgconn.PgConn, tables []change.Table, sql, why string) error {
	name := w.cfg.Publication
	for _, t := range tables {
		if err := w.cfg.Readd(t, false); err != nil {
			return fmt.Errorf("%w (table %s): %w", ErrRebuildNotRecorded, t, err)
		}
	}
	if sql != "" {
		if w.cfg.PrimaryDSN != "" {
			// Standby mode: the publication is the primary's; the
			// standby sees the change once it replays it.
			primary, err := pgconn.Connect(ctx, w.cfg.PrimaryDSN)
			if err != nil {
				return fmt.Errorf("connect to source.primary_dsn to repair publication %s: %w", name, err)
			}
			defer closeConn(primary)
			conn = primary
		}
		// 42710, already a member: added back by an earlier look whose
		// ALTER the standby had not replayed yet, or by someone else.
		if _, err := simpleQuery(ctx, conn, sql); err != nil && !isSQLState(err, "42710") {
			return &PublicationError{Publication: name,
				Why: fmt.Sprintf("it no longer fits what flusso-pg captures, and repairing it failed (%v)", err),
				Fix: sql + "; (flusso-pg then rebuilds the indexes that read the tables)"}
		}
	}
	for _, t := range tables {
		if err := w.cfg.Readd(t, true); err != nil {
			return fmt.Errorf("%w (table %s): %w", ErrRebuildNotRecorded, t, err)
		}
	}
	if w.log != nil {
		w.log.Warn(why, zap.String("publication", name), zap.Stringers("tables", tables))
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
			case errors.Is(err, ErrPublicationMissing), errors.Is(err, ErrPublicationChanged), errors.Is(err, ErrRebuildNotRecorded):
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

// isSQLState reports whether err is a server error with the SQLSTATE code.
func isSQLState(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
