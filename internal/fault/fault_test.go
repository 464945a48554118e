package fault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// realDialError dials a loopback port nobody listens on.
func realDialError(t *testing.T) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	return err
}

func TestClassify(t *testing.T) {
	pg := func(code, msg string) error { return &pgconn.PgError{Code: code, Message: msg} }
	cases := []struct {
		name string
		err  error
		want Class
	}{
		{"admin shutdown", pg("57P01", "terminating connection due to administrator command"), Transient},
		{"crash shutdown", pg("57P02", "terminating connection because of crash of another server process"), Transient},
		{"starting up", pg("57P03", "the database system is starting up"), Transient},
		{"too many connections", pg("53300", "sorry, too many clients already"), Transient},
		{"connection exception", pg("08006", "connection failure"), Transient},
		{"slot active", pg("55006", `replication slot "s" is active for PID 20544`), Transient},
		{"wrapped server error", fmt.Errorf("build documents: %w", pg("57P01", "x")), Transient},
		{"bad password", pg("28P01", `password authentication failed for user "u"`), Auth},
		{"pg_hba", pg("28000", "no pg_hba.conf entry"), Auth},
		{"privilege", pg("42501", "permission denied for table users"), Auth},
		{"syntax", pg("42601", "syntax error at or near"), Permanent},
		{"missing column", pg("42703", "column t0.x does not exist"), Permanent},
		{"in recovery, other code", pg("XX000", "the database system is in recovery mode"), Transient},
		{"eof", io.EOF, Transient},
		{"unexpected eof", fmt.Errorf("scan documents: %w", io.ErrUnexpectedEOF), Transient},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, Transient},
		{"bare econnreset", syscall.ECONNRESET, Transient},
		{"dial refused", realDialError(t), Transient},
		{"deadline", os.ErrDeadlineExceeded, Transient},
		{"dns", &net.DNSError{Err: "no such host", Name: "db"}, Transient},
		{"epipe on stdout", &os.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.EPIPE}, Permanent},
		{"epipe on a socket", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, Transient},
		{"unknown CA", x509.UnknownAuthorityError{}, Permanent},
		{"tls handshake after restart", errors.New("tls: handshake failure: remote error"), Transient},
		{"canceled", context.Canceled, Permanent},
		{"canceled wrapping eof", fmt.Errorf("%w: %w", context.Canceled, io.EOF), Permanent},
		{"marked permanent", MarkPermanent(io.EOF), Permanent},
		{"marked transient", MarkTransient(errors.New("x")), Transient},
		{"wrapped mark", fmt.Errorf("outer: %w", MarkPermanent(syscall.ECONNRESET)), Permanent},
		{"plain error", errors.New("the config does not match"), Permanent},
		{"nil", nil, Permanent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.err); got != c.want {
				t.Fatalf("Classify(%v) = %s, want %s", c.err, got, c.want)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	prevHi := time.Duration(0)
	for i := 0; i < 10; i++ {
		d := b.Next()
		hi := min(100*time.Millisecond<<i, time.Second)
		if d < hi/2 || d > hi {
			t.Fatalf("wait %d = %s, want within [%s, %s]", i, d, hi/2, hi)
		}
		prevHi = hi
	}
	if prevHi != time.Second {
		t.Fatalf("the backoff did not reach its maximum")
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset the wait is %s, want at most Min", d)
	}
}

func TestRetryEpisodeLogsOnce(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := NewHealth(zap.New(core))
	retries := 0
	h.OnRetry = func(stage string, c Class) { retries++ }
	var changes []bool
	h.OnChange = func(d bool) { changes = append(changes, d) }
	n := 0
	err := Retry(context.Background(), h, "build", func(context.Context) error {
		n++
		if n < 4 {
			return io.EOF
		}
		if d, why := h.Degraded(); !d || why == "" {
			t.Errorf("degraded during the outage = %v %q", d, why)
		}
		return nil
	})
	if err != nil || n != 4 || retries != 3 {
		t.Fatalf("Retry = %v after %d runs, %d retries counted", err, n, retries)
	}
	if d, _ := h.Degraded(); d {
		t.Fatal("still degraded after recovery")
	}
	if logs.FilterLevelExact(zap.WarnLevel).Len() != 1 || logs.FilterMessage("build recovered").Len() != 1 {
		t.Fatalf("want one WARN and one recovery line, got %v", logs.All())
	}
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("OnChange calls = %v, want [true false]", changes)
	}
}

func TestRetryStopsOnPermanentAndAfterAuthGrace(t *testing.T) {
	perm := errors.New("no such column")
	n := 0
	err := Retry(context.Background(), nil, "build", func(context.Context) error { n++; return perm })
	if !errors.Is(err, perm) || n != 1 {
		t.Fatalf("permanent: %v after %d runs", err, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n = 0
	err = Retry(ctx, nil, "capture", func(context.Context) error { n++; return io.EOF })
	if !errors.Is(err, io.EOF) || n < 2 {
		t.Fatalf("transient until ctx ends: %v after %d runs", err, n)
	}
}

func TestWaitingIsNotReady(t *testing.T) {
	h := NewHealth(nil)
	h.Waiting("capture", "slot s is in use by another client (server pid 1); waiting to take over")
	d, why := h.Degraded()
	if !d || why == "" {
		t.Fatalf("waiting: degraded = %v %q", d, why)
	}
	h.Recovered("capture")
	if d, _ := h.Degraded(); d {
		t.Fatal("still degraded")
	}
	var nilH *Health
	nilH.Failed("x", Transient, io.EOF)
	nilH.Recovered("x")
}
