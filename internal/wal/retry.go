package wal

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// This file decides what ends capture and what it rides out. Everything
// goes through fault.Classify, the project's one classification, except the
// sentinels below, which are permanent whatever they wrap: retrying cannot
// bring back a dropped slot. docs/capture.md ("Faults") lists both sides.

// Errors that end capture for good: retrying cannot fix them. Each message
// says what to do; errors.Is tells them apart.
var (
	// ErrSlotMissing: the state dir holds progress for a slot that no longer
	// exists on the server (someone dropped it), so changes since the last
	// confirmed position are gone.
	ErrSlotMissing = errors.New("the replication slot no longer exists, so changes since the last run are lost: run with --resync to start over with a new slot and a full backfill")
	// ErrSlotLost: the server invalidated the slot (wal_status = 'lost',
	// max_slot_wal_keep_size exceeded, or another invalidation).
	ErrSlotLost = errors.New("the replication slot was invalidated by the server (wal_status 'lost': it fell behind max_slot_wal_keep_size, or another invalidation), so changes are lost: run with --resync to start over")
	// ErrSlotUnknown: the slot exists but the state dir has no record of it.
	ErrSlotUnknown = errors.New("the replication slot exists but the state dir has no record of it (another flusso-pg owns it, or the state dir was lost): run with --resync to drop it and start over, or choose another slot name")
	// ErrServerChanged: the state dir belongs to another server (a different
	// system identifier) or another database.
	ErrServerChanged = errors.New("the state dir belongs to another server: point flusso-pg at the server it was following, or run with --resync to start over on this one")
	// ErrPublicationMissing: the publication does not exist (it was dropped).
	ErrPublicationMissing = errors.New("the publication does not exist (it was dropped?): create it again (with source.provision: auto a restart does; otherwise run the CREATE PUBLICATION that `flusso-pg check` prints) and run with --resync, since changes made while it was missing are not in the slot's stream")
	// ErrSlotInUse: another connection is streaming from the slot (DropSlot;
	// Run waits for the slot instead).
	ErrSlotInUse = errors.New("the replication slot is in use by another connection: stop the other flusso-pg first")
	// ErrBadSlotName: the slot name is not [a-z0-9_]{1,63}.
	ErrBadSlotName = errors.New("a replication slot name has 1 to 63 characters, each a lower-case letter, a digit or an underscore")
)

// permanent are the sentinels Classify is not asked about.
var permanent = []error{ErrSlotMissing, ErrSlotLost, ErrSlotUnknown, ErrServerChanged,
	ErrPublicationMissing, ErrSlotInUse, ErrBadSlotName, ErrDecode, ErrColumnMissing, ErrSchemaChanged, ErrPublicationChanged}

// The server ending the stream is a restart on its way: transient.
var (
	// errStreamEnded: the server ended the copy stream (it is shutting down).
	errStreamEnded = fault.MarkTransient(errors.New("the server ended the replication stream"))
	// errServerStopping: the server is shutting down and waits for us to
	// confirm positions we cannot confirm yet (see session.stopping).
	errServerStopping = fault.MarkTransient(errors.New("the server is shutting down and waits for confirmations still pending: disconnecting so it can stop; unconfirmed transactions will be delivered again"))
)

// classify is what capture makes of an error: its own sentinels are
// permanent, the rest is fault.Classify's.
func classify(err error) fault.Class {
	for _, p := range permanent {
		if errors.Is(err, p) {
			return fault.Permanent
		}
	}
	return fault.Classify(err)
}

// slotBusyError: START_REPLICATION found the slot active for another
// connection (SQLSTATE 55006). It wraps the server's error, which
// fault.Classify calls transient.
type slotBusyError struct {
	slot string
	pid  int // the walsender holding the slot; 0 when the message had none
	err  error
}

func (e *slotBusyError) Error() string {
	return fmt.Sprintf("slot %s is in use by another client (server pid %d)", e.slot, e.pid)
}

func (e *slotBusyError) Unwrap() error { return e.err }

var activePIDRE = regexp.MustCompile(`(?i)active for PID (\d+)`)

// classifyServer turns the server's word for a missing publication or slot
// into our sentinel errors, and a busy slot into a slotBusyError.
func classifyServer(slot string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == "42704" && strings.Contains(pgErr.Message, "publication"):
		return fmt.Errorf("%w (%s)", ErrPublicationMissing, pgErr.Message)
	case pgErr.Code == "42704" && strings.Contains(pgErr.Message, "replication slot"):
		return fmt.Errorf("%w (%s)", ErrSlotMissing, pgErr.Message)
	case pgErr.Code == "55000" && strings.Contains(pgErr.Message, "invalidated"):
		return fmt.Errorf("%w (%s)", ErrSlotLost, pgErr.Message)
	case pgErr.Code == "55006":
		busy := &slotBusyError{slot: slot, err: err}
		if m := activePIDRE.FindStringSubmatch(pgErr.Message); m != nil {
			busy.pid, _ = strconv.Atoi(m[1])
		}
		return busy
	}
	return err
}

// stage is capture's name in fault.Health (the log, /readyz, the metrics).
const stage = "capture"

// standbyPoll is how often a capture waiting for a busy slot tries again:
// every one to two seconds, at random, so two standbys do not knock in step.
const standbyPoll = 2 * time.Second

// retrier applies fault.Retry's rules to Run's loop, which never returns
// on success: a transient error waits out the backoff and reports to
// Health; an Auth error likewise until it has lasted fault.DefaultAuthGrace;
// a permanent one ends Run. A slot busy with another client is a wait, not
// a failure: one INFO line and a poll every second or two.
type retrier struct {
	h         *fault.Health
	log       *zap.Logger
	slot      string
	b         fault.Backoff
	poll      fault.Backoff // a constant one: standbyPoll with jitter
	authSince time.Time
	ownPID    int // the walsender of our last session that streamed: a slot still active for it is not another client
	current   int // the walsender of the connection being started
}

func newRetrier(h *fault.Health, log *zap.Logger, slot string) *retrier {
	return &retrier{h: h, log: log, slot: slot,
		b:    fault.Backoff{Min: fault.DefaultMinBackoff, Max: fault.DefaultMaxBackoff},
		poll: fault.Backoff{Min: standbyPoll, Max: standbyPoll}}
}

// failed decides about err: nil means try again (after waiting), an error
// ends Run (ctx's error when ctx ended).
func (r *retrier) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var busy *slotBusyError
	if errors.As(err, &busy) && (busy.pid == 0 || busy.pid != r.ownPID) {
		r.h.Waiting(stage, fmt.Sprintf("slot %s is in use by another client (server pid %d); waiting to take over", r.slot, busy.pid))
		r.b.Reset()
		r.log.Debug("slot busy; polling", zap.Int("server_pid", busy.pid))
		return r.poll.Wait(ctx)
	}
	class := classify(err)
	switch class {
	case fault.Permanent:
		return err
	case fault.Auth:
		if r.authSince.IsZero() {
			r.authSince = time.Now()
		} else if time.Since(r.authSince) > fault.DefaultAuthGrace {
			return err
		}
	default:
		r.authSince = time.Time{}
	}
	r.h.Failed(stage, class, err)
	r.log.Debug("capture failed; retrying after the backoff", zap.String("class", class.String()), zap.Error(err))
	if werr := r.b.Wait(ctx); werr != nil {
		return werr
	}
	return nil
}

// streaming ends the episode: the stream runs again.
func (r *retrier) streaming() {
	r.ownPID = r.current
	r.authSince = time.Time{}
	r.h.Recovered(stage)
}

// received resets the backoff: the connection carried data.
func (r *retrier) received() { r.b.Reset() }
