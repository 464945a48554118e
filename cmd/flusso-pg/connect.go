package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
)

// connectFailure is a failed connection described in one line: the cause
// and the fix, as check gives its verdicts. Fix is what to change.
type connectFailure struct {
	dsn   string // redacted
	cause string
	fix   string
}

func (e *connectFailure) Error() string {
	return fmt.Sprintf("cannot connect to %s: %s: %s", e.dsn, e.cause, e.fix)
}

// describeConnect names why a connection to dsn failed and what fixes it,
// in one line without any part of the password (the driver's own message,
// which may run over several lines, is kept only for causes it alone knows).
func describeConnect(dsn string, err error) *connectFailure {
	f := &connectFailure{dsn: config.RedactDSN(dsn)}
	cfg, perr := pgconn.ParseConfig(dsn)
	host, user, db := "", "", ""
	if perr == nil {
		host = fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
		user, db = cfg.User, cfg.Database
	}
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case perr != nil:
		f.cause = "the connection string does not parse (" + redact(perr.Error()) + ")"
		f.fix = "write source.dsn as postgres://user@host:5432/db or host=... user=... dbname=..."
	case errors.As(err, &pgErr) && pgErr.Code == "28P01":
		f.cause = fmt.Sprintf("password authentication failed for user %q", user)
		f.fix = "check the password (in FLUSSO_SOURCE_DSN, PGPASSWORD or ~/.pgpass)"
	case errors.As(err, &pgErr) && pgErr.Code == "28000":
		f.cause = fmt.Sprintf("the server refuses user %q here (%s)", user, pgErr.Message)
		f.fix = "add a pg_hba.conf line for this user, database and address (host " + db + " " + user + " <address>/32 scram-sha-256), then SELECT pg_reload_conf();"
	case errors.As(err, &pgErr) && pgErr.Code == "3D000":
		f.cause = fmt.Sprintf("database %q does not exist", db)
		f.fix = "check the database name in source.dsn"
	case errors.As(err, &pgErr) && (pgErr.Code == "53300" || pgErr.Code == "53400"):
		f.cause = "the server has no connection slot free (" + pgErr.Message + ")"
		f.fix = "raise max_connections or close idle connections"
	case errors.As(err, &pgErr):
		f.cause = "the server refused the connection: " + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"
		f.fix = "check source.dsn's user, database and options"
	case errors.As(err, &dnsErr):
		f.cause = fmt.Sprintf("host %q is not known (DNS)", cfg.Host)
		f.fix = "check the host name in source.dsn"
	case errors.Is(err, syscall.ECONNREFUSED):
		f.cause = "nothing listens at " + host + " (connection refused)"
		f.fix = "check that the server is running and the host and port in source.dsn"
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		f.cause = "no server socket at " + cfg.Host
		f.fix = "check that the server is running, or give host and port in source.dsn"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		f.cause = "no answer from " + host + " in time"
		f.fix = "check the host and port, and that no firewall drops the packets (connect_timeout= in source.dsn waits longer)"
	default:
		f.cause = oneLine(redact(err.Error()))
		f.fix = "check source.dsn (host, port, user, password, database), that the server is running, and that pg_hba.conf lets this user connect from here"
	}
	return f
}

// oneLine joins the lines of a driver message.
func oneLine(s string) string {
	out := make([]rune, 0, len(s))
	space := false
	for _, r := range s {
		if r == '\n' || r == '\t' || r == ' ' {
			space = true
			continue
		}
		if space && len(out) > 0 {
			out = append(out, ' ')
		}
		space = false
		out = append(out, r)
	}
	return string(out)
}

// connect opens one connection to dsn, or returns the failure described.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	conn, err := pgsession.Connect(ctx, dsn)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, describeConnect(dsn, err)
	}
	return conn, nil
}

// preflight proves the source reachable before follow or backfill start, so
// a failed connection reads as one line naming the cause and the fix.
func preflight(ctx context.Context, dsn string) error {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
