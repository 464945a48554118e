// Package fault decides, in one place, whether an error is worth retrying.
//
// A daemon that follows a database must outlive the database's bad moments: a
// restart, a crash, a failover, a killed connection, a pooler that drops its
// clients. Those are transient: the unit of work in hand (a group of
// transactions, a backfill chunk, a rebuild scan, the replication session) is
// run again after a backoff, and nothing is lost because nothing past the work
// in hand was confirmed. Everything else is permanent: a config or DDL
// problem, a lost or foreign slot, a different server, a reader that went
// away. Retrying those would hide them; the daemon stops and says why.
//
// Credentials and privileges sit in between (class Auth): right after a
// restart or failover a server can refuse a role for a moment (pg_hba reload,
// a password rotated by the operator a second before), so Retry treats them as
// transient for a short grace period and as permanent after it.
//
// Health tracks the episodes: one WARN when a stage starts failing, one INFO
// with the outage's length when it recovers, not one line per attempt. The
// metrics and /readyz read it.
package fault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Class is what Classify decides about an error.
type Class int

const (
	// Permanent errors stop the daemon with their cause.
	Permanent Class = iota
	// Transient errors re-run the unit of work after a backoff.
	Transient
	// Auth errors (bad credentials, missing privileges) are retried for a
	// grace period, then treated as permanent.
	Auth
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case Auth:
		return "auth"
	}
	return "permanent"
}

type marked struct {
	err   error
	class Class
}

func (m *marked) Error() string { return m.err.Error() }
func (m *marked) Unwrap() error { return m.err }

// MarkPermanent makes Classify return Permanent for err (and anything that
// wraps it), whatever err wraps: an EPIPE on stdout, say, or a decode error.
func MarkPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, class: Permanent}
}

// MarkTransient makes Classify return Transient for err.
func MarkTransient(err error) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, class: Transient}
}

// transientMessages are server messages that mean "try again in a moment",
// whatever SQLSTATE carries them (some arrive before the startup message is
// answered, as plain text).
var transientMessages = []string{
	"the database system is starting up",
	"the database system is shutting down",
	"the database system is in recovery mode",
	"the database system is not yet accepting connections",
	"the database system is not accepting connections",
	"terminating connection due to administrator command",
	"terminating connection due to unexpected postmaster exit",
	"server closed the connection unexpectedly",
	"conn closed",
}

// Classify says whether err is transient, an auth problem, or permanent. The
// first mark (MarkPermanent, MarkTransient) found on the chain wins; then
// context cancellation is permanent (the caller is stopping); then the
// server's SQLSTATE; then the network.
func Classify(err error) Class {
	if err == nil {
		return Permanent
	}
	var m *marked
	if errors.As(err, &m) {
		return m.class
	}
	if errors.Is(err, context.Canceled) {
		return Permanent
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifyCode(pgErr.Code, pgErr.Message)
	}
	// Certificate problems are configuration, not a restart.
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
		return Permanent
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, net.ErrClosed) {
		return Transient
	}
	for _, errno := range []syscall.Errno{syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT, syscall.EHOSTDOWN, syscall.ENETDOWN} {
		if errors.Is(err, errno) {
			return Transient
		}
	}
	// Any failure of a network operation (dial, read, write: an EPIPE on a
	// socket too) or name lookup; an EPIPE on stdout is an *os.PathError and
	// does not match.
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &opErr) || errors.As(err, &dnsErr) {
		return Transient
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return Transient
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Transient
	}
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return Transient
	}
	msg := err.Error()
	for _, s := range transientMessages {
		if strings.Contains(msg, s) {
			return Transient
		}
	}
	if strings.Contains(msg, "tls: ") && strings.Contains(msg, "handshake") {
		return Transient
	}
	return Permanent
}

func classifyCode(code, message string) Class {
	switch {
	case strings.HasPrefix(code, "08"): // connection exception
		return Transient
	case code == "57P01", // admin_shutdown
		code == "57P02", // crash_shutdown
		code == "57P03", // cannot_connect_now: starting up, shutting down, in recovery
		code == "57P05", // idle_session_timeout (PG 14+)
		code == "57014", // query_canceled: an operator's pg_cancel_backend (our own sessions set statement_timeout = 0)
		code == "53300", // too_many_connections
		code == "53200", // out_of_memory
		code == "53100", // disk_full
		code == "55006", // object_in_use: a replication slot still active for a connection that is going away
		code == "58000", // system_error (I/O error on the server)
		code == "58030", // io_error
		code == "40001", // serialization_failure
		code == "40P01": // deadlock_detected
		return Transient
	case code == "28P01", // invalid_password
		code == "28000", // invalid_authorization_specification (pg_hba)
		code == "42501": // insufficient_privilege
		return Auth
	}
	for _, s := range transientMessages {
		if strings.Contains(message, s) {
			return Transient
		}
	}
	return Permanent
}
