// Package pgsession opens flusso-pg's own (non-replication) sessions with the
// settings they need whatever the role, the database or the environment
// (PGTZ, PGDATESTYLE, ALTER ROLE ... SET) say:
//
//   - statement_timeout, idle_in_transaction_session_timeout and
//     idle_session_timeout 0: these sessions are long-running batch readers
//     (a backfill scan, a snapshot transaction held for hours, a pool
//     connection idle between bursts); a role's timeout must not cancel them.
//   - default_transaction_read_only on: documents are built by reading, so a
//     where: that calls nextval() or a function that writes is refused by the
//     server in follow exactly as in backfill.
//   - TimeZone UTC, DateStyle ISO, MDY, IntervalStyle postgres,
//     extra_float_digits 1: the text of a key (its "id") and the values
//     to_json writes never depend on settings; a timestamptz key keeps its id.
//   - jit off: a batch of a few thousand documents costs enough for the
//     planner to JIT compile it, paid again on every batch, for index lookups
//     JIT does not speed up.
//
// Provisioning (CREATE/ALTER PUBLICATION) is the one write flusso-pg makes
// through these sessions; [ReadWrite] runs it in an explicit READ WRITE
// transaction.
package pgsession

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/config"
)

// TextParams are the settings that shape the text form of values: a key's
// text, and what to_json writes. The replication connection can take them
// too, so that the values pgoutput sends are spelled the same way.
func TextParams() map[string]string {
	return map[string]string{
		"TimeZone":           "UTC",
		"DateStyle":          "ISO, MDY",
		"IntervalStyle":      "postgres",
		"extra_float_digits": "1",
	}
}

// Params are the settings of every session flusso-pg opens to read the
// database: TextParams, no timeouts, read-only transactions, no JIT.
func Params() map[string]string {
	p := TextParams()
	p["statement_timeout"] = "0"
	p["idle_in_transaction_session_timeout"] = "0"
	p["idle_session_timeout"] = "0"
	p["lock_timeout"] = "0"
	p["default_transaction_read_only"] = "on"
	p["jit"] = "off"
	return p
}

// apply sets Params on a connection config, and application_name
// flusso-pg unless the DSN names one. The DSN's own options= still apply,
// but a startup parameter given here wins over them.
func apply(cc *pgconn.Config) {
	for k, v := range Params() {
		cc.RuntimeParams[k] = v
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = "flusso-pg"
	}
}

// OpenPool connects a pool: Params on every connection, at most maxConns
// connections (0: pgx's default), and a first connection made at once so
// bad credentials fail here. Errors never show the password.
func OpenPool(ctx context.Context, dsn string, maxConns int) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("source.dsn %s: %w", config.RedactDSN(dsn), err)
	}
	apply(&pc.ConnConfig.Config)
	if maxConns > 0 {
		pc.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(dsn), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(dsn), err)
	}
	return pool, nil
}

// Connect opens one connection with Params (validate, check): pgx.Connect
// with the settings, returning pgx's errors as they are (the caller names
// the redacted DSN).
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	apply(&cc.Config)
	return pgx.ConnectConfig(ctx, cc)
}

// Beginner is what ReadWrite needs: *pgxpool.Pool and *pgx.Conn have it.
type Beginner interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// ReadWrite wraps a read-only session so that Exec runs its statement in a
// READ WRITE transaction of its own (committed at once); queries pass
// through unchanged. Provisioning uses it to create or extend the
// publication.
func ReadWrite(b Beginner) *Writer { return &Writer{b: b} }

// Writer is a session whose Exec writes; see ReadWrite.
type Writer struct{ b Beginner }

// Query runs a read-only query.
func (w *Writer) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return w.b.Query(ctx, sql, args...)
}

// QueryRow runs a read-only query returning one row.
func (w *Writer) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return w.b.QueryRow(ctx, sql, args...)
}

// Exec runs sql in a READ WRITE transaction and commits it.
func (w *Writer) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tx, err := w.b.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadWrite})
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return tag, err
	}
	return tag, tx.Commit(ctx)
}
