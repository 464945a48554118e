package jetstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// Stage is the name the publisher's outages carry in fault.Health (/readyz).
const Stage = "jetstream"

// Header names carried by every message, besides Nats-Msg-Id.
const (
	HeaderIndex = "Flusso-Index"
	HeaderOp    = "Flusso-Op"
	HeaderID    = "Flusso-Id" // percent-encoded like the Msg-Id (control characters, %, :, !)
	HeaderLSN   = "Flusso-Lsn"
)

// ErrClosed is returned by Write after the publisher stopped.
var ErrClosed = errors.New("the jetstream publisher is stopped")

// Hooks are called as messages are acknowledged (for metrics). Each may be nil.
type Hooks struct {
	// OnAck is called for every acknowledged message, with the time from
	// its first publish to its acknowledgement.
	OnAck func(latency time.Duration)
	// OnWatermark is called with every new watermark (in increasing order).
	OnWatermark func(pglogrepl.LSN)
}

// Publisher publishes lines asynchronously, a bounded window of them in
// flight, in order, and keeps the watermark: the newest LSN all of whose
// lines the stream has stored. Write, Sync and Flush are called by one
// writer; Run, started once, handles the acknowledgements and the recovery
// after a fault, until its context ends.
type Publisher struct {
	cfg        Config
	log        *zap.Logger
	health     *fault.Health
	hooks      Hooks
	nc         *nats.Conn
	js         jetstream.JetStream
	maxPayload int64

	recoveries atomic.Int64

	mu         sync.Mutex
	cond       *sync.Cond
	queue      []*entry // not yet stored, in publish order
	last       uint64   // the stream sequence the last message sent is expected to get
	recovering bool     // send nothing: Run re-publishes the queue in order
	cause      error    // what started the recovery (nil: a duplicate)
	tail       *entry   // the newest stored entry
	watermark  pglogrepl.LSN
	closed     bool
	written    uint64 // entries ever queued
	stored     uint64 // entries ever stored (popped): the first `stored` of them
}

type entry struct {
	msg    *nats.Msg
	lsn    pglogrepl.LSN
	end    bool   // the last line of a batch: its LSN is complete once stored
	n      uint64 // 1 for the first entry ever queued
	seq    uint64 // the stream sequence it was last sent expecting to get; 0: not sent pipelined
	fut    jetstream.PubAckFuture
	sent   time.Time
	stored bool
}

// Open connects to the servers (waiting with backoff while none answers)
// and makes sure the stream exists and captures every index's subject:
// created with cfg.Replicas when missing, checked when present.
func Open(ctx context.Context, cfg Config, log *zap.Logger, health *fault.Health, hooks Hooks) (*Publisher, error) {
	cfg.defaults()
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	p := &Publisher{cfg: cfg, log: log.With(zap.String("component", "jetstream")), health: health, hooks: hooks}
	p.cond = sync.NewCond(&p.mu)
	opts, err := p.options()
	if err != nil {
		return nil, err
	}
	err = fault.Retry(ctx, health, Stage, func(ctx context.Context) error {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err != nil {
			return classifyConnect(cfg.URL, err)
		}
		p.nc = nc
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.js, err = jetstream.New(p.nc, jetstream.WithPublishAsyncMaxPending(2*cfg.MaxInFlight+16),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		p.nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	err = fault.Retry(ctx, health, Stage, func(ctx context.Context) error {
		last, err := p.ensureStream(ctx)
		p.last = last
		return err
	})
	if err != nil {
		p.nc.Close()
		return nil, err
	}
	p.maxPayload = p.nc.MaxPayload()
	return p, nil
}

func (p *Publisher) options() ([]nats.Option, error) {
	c := p.cfg
	opts := []nats.Option{
		nats.Name("flusso-pg"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				p.log.Info("disconnected from NATS; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			p.log.Info("reconnected to NATS", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
	}
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("output.jetstream.nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	return opts, nil
}

// classifyConnect marks what retrying cannot fix (credentials, a missing
// file, a bad URL) as permanent, and servers that do not answer as transient.
func classifyConnect(url string, err error) error {
	err = fmt.Errorf("connect to NATS at %s: %w", url, err)
	switch {
	case errors.Is(err, nats.ErrAuthorization), bytes.Contains([]byte(err.Error()), []byte("Authorization Violation")),
		bytes.Contains([]byte(err.Error()), []byte("authorization violation")):
		return fault.MarkPermanent(fmt.Errorf("%w: check output.jetstream.creds, nkey, user/password or token", err))
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrTimeout):
		return fault.MarkTransient(err)
	}
	return err // fault.Classify decides: network errors are transient, the rest permanent
}

// classifyAPI marks JetStream API errors: the system being busy or between
// leaders is transient; a refusal (bad config, no JetStream) is permanent.
func classifyAPI(err error) error {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		if api.Code == 503 || api.ErrorCode == 10008 { // JetStream temporarily unavailable
			return fault.MarkTransient(err)
		}
		return fault.MarkPermanent(err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		return fault.MarkTransient(err)
	}
	return err
}

// subjects are the index subjects, without duplicates.
func (p *Publisher) subjects() []string {
	var out []string
	seen := map[string]bool{}
	for _, ix := range p.cfg.Indexes {
		s := p.cfg.SubjectFor(ix)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// ensureStream creates or checks the stream and returns its last sequence.
func (p *Publisher) ensureStream(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	subjects := p.subjects()
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = p.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        p.cfg.Stream,
			Description: "documents published by flusso-pg",
			Subjects:    subjects,
			Replicas:    p.cfg.Replicas,
			Storage:     jetstream.FileStorage,
		})
		if err != nil {
			err = classifyAPI(err)
			if fault.Classify(err) == fault.Permanent {
				return 0, fmt.Errorf("create stream %s (subjects %v, replicas %d): %w: a replicated stream needs a cluster of at least that many JetStream servers (output.jetstream.replicas)",
					p.cfg.Stream, subjects, p.cfg.Replicas, err)
			}
			return 0, fmt.Errorf("create stream %s: %w", p.cfg.Stream, err)
		}
		p.log.Info("created the stream", zap.String("stream", p.cfg.Stream), zap.Strings("subjects", subjects), zap.Int("replicas", p.cfg.Replicas))
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up stream %s: %w", p.cfg.Stream, classifyAPI(err))
	}
	info := s.CachedInfo()
	for _, subj := range subjects {
		covered := false
		for _, f := range info.Config.Subjects {
			if subjectMatches(f, subj) {
				covered = true
				break
			}
		}
		if !covered {
			return 0, fault.MarkPermanent(fmt.Errorf("stream %s does not capture subject %s (it captures %v): add it (nats stream edit %s --subjects ...), or set output.jetstream.subject/stream to match",
				p.cfg.Stream, subj, info.Config.Subjects, p.cfg.Stream))
		}
	}
	if info.Config.Replicas != p.cfg.Replicas {
		p.log.Warn("the stream exists with another replication factor than output.jetstream.replicas; keeping the stream's",
			zap.String("stream", p.cfg.Stream), zap.Int("stream_replicas", info.Config.Replicas), zap.Int("replicas", p.cfg.Replicas))
	}
	return info.State.LastSeq, nil
}

// lastSeq asks the stream for its last sequence.
func (p *Publisher) lastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("look up stream %s: %w", p.cfg.Stream, classifyAPI(err))
	}
	return s.CachedInfo().State.LastSeq, nil
}

// Write publishes whole NDJSON lines (each ending in a newline), blocking
// while the window of unacknowledged messages is full. It is safe for
// concurrent use (the backfill's workers); lines of concurrent calls may
// interleave. A line over the
// server's max_payload is a permanent error naming the index and document.
func (p *Publisher) Write(lines []byte) error {
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		if i < 0 {
			i = len(lines)
		}
		line := lines[:i]
		lines = lines[min(i+1, len(lines)):]
		if len(line) == 0 {
			continue
		}
		if err := p.publish(line); err != nil {
			return err
		}
	}
	return nil
}

func (p *Publisher) publish(line []byte) error {
	h, err := parseHead(line)
	if err != nil {
		return fault.MarkPermanent(fmt.Errorf("publish to jetstream: %w", err))
	}
	msg := nats.NewMsg(p.cfg.SubjectFor(h.index))
	msg.Data = bytes.Clone(line)
	msg.Header.Set(jetstream.MsgIDHeader, h.msgID())
	msg.Header.Set(HeaderIndex, h.index)
	msg.Header.Set(HeaderOp, h.op)
	if h.hasID {
		msg.Header.Set(HeaderID, escape(h.id))
	}
	msg.Header.Set(HeaderLSN, h.lsn.String())
	msg.Header.Set(jetstream.ExpectedLastSeqHeader, "18446744073709551615") // the widest value: sized now, set at send
	if size := int64(len(msg.Data) + headerSize(msg.Header)); p.maxPayload > 0 && size > p.maxPayload {
		what := fmt.Sprintf("the %s line", h.op)
		if h.hasID {
			what = fmt.Sprintf("document %q", h.id)
		}
		return fault.MarkPermanent(fmt.Errorf("index %q, %s (lsn %s): the message is %d bytes, more than the NATS server's max_payload of %d: raise max_payload in the server config (at most 64MB; clients reconnect to see it), or make the document smaller (columns:, a relation's limit:)",
			h.index, what, h.lsn, size, p.maxPayload))
	}
	e := &entry{msg: msg, lsn: h.lsn}

	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.queue) >= p.cfg.MaxInFlight && !p.closed {
		p.cond.Wait()
	}
	if p.closed {
		return ErrClosed
	}
	// Every line of the newest stored LSN is stored: a newer line proves it.
	if len(p.queue) == 0 && p.tail != nil && p.tail.lsn < e.lsn {
		p.advance(p.tail.lsn)
	}
	p.written++
	e.n = p.written
	p.queue = append(p.queue, e)
	if !p.recovering {
		p.send(e)
	}
	p.cond.Broadcast()
	return nil
}

func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// send publishes e asynchronously, expecting the stream's last sequence to
// be the one its predecessor gets. Called with p.mu held.
func (p *Publisher) send(e *entry) {
	e.msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(p.last, 10))
	if e.sent.IsZero() {
		e.sent = time.Now()
	}
	fut, err := p.js.PublishMsgAsync(e.msg)
	if err != nil {
		e.fut = nil
		p.recovering, p.cause = true, err
		return
	}
	e.fut = fut
	p.last++
	e.seq = p.last
}

// Sync marks the end of a batch: once the last line written is stored, its
// LSN is complete. It does not wait (Flush does).
func (p *Publisher) Sync() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if n := len(p.queue); n > 0 {
		p.queue[n-1].end = true
	} else if p.tail != nil {
		p.advance(p.tail.lsn)
	}
	return nil
}

// Flush marks the end of a batch and waits until the stream has stored every
// line written before the call (lines written meanwhile, by other writers,
// are not waited for).
func (p *Publisher) Flush(ctx context.Context) error {
	if err := p.Sync(); err != nil {
		return err
	}
	p.mu.Lock()
	target := p.written
	p.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.stored < target && !p.closed && ctx.Err() == nil {
		p.cond.Wait()
	}
	if p.stored < target {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrClosed
	}
	return nil
}

// Watermark is the newest LSN all of whose lines are stored.
func (p *Publisher) Watermark() pglogrepl.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.watermark
}

// Pending is the number of messages written and not yet stored.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// Recoveries counts the times publishing fell back to one message at a
// time (after a failure, a gap or a duplicate).
func (p *Publisher) Recoveries() int64 { return p.recoveries.Load() }

// advance moves the watermark. Called with p.mu held.
func (p *Publisher) advance(lsn pglogrepl.LSN) {
	if lsn <= p.watermark {
		return
	}
	p.watermark = lsn
	if p.hooks.OnWatermark != nil {
		p.hooks.OnWatermark(lsn)
	}
}

// popStored removes the stored entries at the head of the queue. Called
// with p.mu held.
func (p *Publisher) popStored() {
	n := 0
	for n < len(p.queue) && p.queue[n].stored {
		e := p.queue[n]
		n++
		if p.hooks.OnAck != nil {
			p.hooks.OnAck(time.Since(e.sent))
		}
		if e.end || (n < len(p.queue) && p.queue[n].lsn > e.lsn) {
			p.advance(e.lsn)
		}
		p.tail = e
		p.stored = e.n
	}
	if n > 0 {
		clear(p.queue[:n])
		p.queue = p.queue[n:]
		p.cond.Broadcast()
	}
}

// Run handles acknowledgements in publish order until ctx ends (then it
// returns nil, and Write returns ErrClosed). After a failed or lost publish
// it re-publishes the queue in order (see the package comment); a broker
// that is down is waited for, never given up on.
func (p *Publisher) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.closed = true
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	for {
		p.mu.Lock()
		for !p.closed && !p.recovering && len(p.queue) == 0 {
			p.cond.Wait()
		}
		if p.closed {
			p.mu.Unlock()
			return nil
		}
		if p.recovering {
			p.mu.Unlock()
			if err := p.recover(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		}
		e := p.queue[0]
		fut := e.fut
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case ack := <-fut.Ok():
			p.mu.Lock()
			e.stored = true
			p.popStored()
			if ack.Duplicate {
				// Stored long ago (a replay): the stream did not grow, so the
				// sequences the later messages expect are wrong; learn the
				// stream's last sequence again.
				p.recovering, p.cause = true, nil
			}
			p.mu.Unlock()
		case err := <-fut.Err():
			p.mu.Lock()
			e.fut = nil
			p.recovering, p.cause = true, err
			p.mu.Unlock()
		}
	}
}

// recover waits for every message in flight to be acknowledged or to fail,
// then publishes the unstored ones again, in order, one at a time (each
// expecting the stream's actual last sequence), until the queue is empty;
// then pipelining resumes.
func (p *Publisher) recover(ctx context.Context) error {
	p.recoveries.Add(1)
	if err := p.settleInflight(ctx); err != nil {
		return err
	}
	p.findStored(ctx)
	p.reissueAfterGap()
	return p.republish(ctx)
}

// settleInflight reports the failure that started the recovery and waits
// until every message in flight is acknowledged (stored) or has failed.
func (p *Publisher) settleInflight(ctx context.Context) error {
	p.mu.Lock()
	cause := p.cause
	inflight := make([]*entry, 0, len(p.queue))
	for _, e := range p.queue {
		if e.fut != nil && !e.stored {
			inflight = append(inflight, e)
		}
	}
	p.mu.Unlock()
	if cause != nil {
		p.health.Failed(Stage, fault.Transient, fmt.Errorf("publish to stream %s: %w", p.cfg.Stream, cause))
	}
	for _, e := range inflight {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.fut.Ok():
			p.mu.Lock()
			e.stored = true
			p.mu.Unlock()
		case <-e.fut.Err():
			p.mu.Lock()
			e.fut = nil
			p.mu.Unlock()
		}
	}
	return nil
}

// republish publishes the queue's unstored messages one at a time, each
// expecting the stream's last sequence as last learned (asked again after
// a refusal), with backoff while the broker is away; then pipelining
// resumes from the stream's last sequence.
func (p *Publisher) republish(ctx context.Context) error {
	var b fault.Backoff
	known := false
	var last uint64
	for {
		if !known {
			l, err := p.lastSeq(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if fault.Classify(err) == fault.Permanent {
					return err
				}
				p.health.Failed(Stage, fault.Transient, err)
				if err := b.Wait(ctx); err != nil {
					return err
				}
				continue
			}
			last, known = l, true
		}
		p.mu.Lock()
		p.popStored()
		if len(p.queue) == 0 || p.closed {
			p.last = last
			p.recovering, p.cause = false, nil
			p.mu.Unlock()
			p.health.Recovered(Stage)
			return nil
		}
		e := p.queue[0]
		e.fut = nil
		e.msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(last, 10))
		p.mu.Unlock()

		pctx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
		ack, err := p.js.PublishMsg(pctx, e.msg)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			known = false
			if wrongLastSeq(err) {
				continue // another writer, or a sequence learned too early: ask again
			}
			p.health.Failed(Stage, fault.Transient, fmt.Errorf("publish to stream %s: %w", p.cfg.Stream, err))
			if err := b.Wait(ctx); err != nil {
				return err
			}
			continue
		}
		b.Reset()
		if !ack.Duplicate {
			last = ack.Sequence
		}
		p.mu.Lock()
		e.stored = true
		p.mu.Unlock()
	}
}

// findStored looks up, for each message that failed but has a stored
// message after it, whether the stream holds it at the sequence it was sent
// for anyway (its acknowledgement was lost: a reconnect fails the pending
// acknowledgements of messages the server then stores). Those are stored, in
// order; only the others make a gap.
func (p *Publisher) findStored(ctx context.Context) {
	p.mu.Lock()
	var check []*entry
	laterStored := false
	for i := len(p.queue) - 1; i >= 0; i-- {
		e := p.queue[i]
		if e.stored {
			laterStored = true
		} else if laterStored && e.seq > 0 {
			check = append(check, e)
		}
	}
	p.mu.Unlock()
	if len(check) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return // then the later ones are published again: safe
	}
	for _, e := range check {
		m, err := s.GetMsg(ctx, e.seq)
		if err != nil {
			continue
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != "" && id == e.msg.Header.Get(jetstream.MsgIDHeader) {
			p.mu.Lock()
			e.stored = true
			p.mu.Unlock()
		}
	}
}

// reissueAfterGap handles messages stored after one that was not: possible
// only when the stream's sequence moved by something this publisher did not
// send (another publisher, a message of a killed flusso-pg stored late) or
// when an acknowledgement was lost. Such a message may sit in the stream
// before an older line it should follow, so it is published again after
// it, under a new Msg-Id (the old one would be dropped as a duplicate): the
// last copy in the stream is then in order, and the fold is right.
func (p *Publisher) reissueAfterGap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	gap := false
	n := 0
	for _, e := range p.queue {
		if !e.stored {
			gap = true
			continue
		}
		if gap {
			e.stored, e.fut = false, nil
			id := e.msg.Header.Get(jetstream.MsgIDHeader)
			if i := strings.LastIndexByte(id, '~'); i >= 0 {
				id = id[:i]
			}
			e.msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s~%d", id, time.Now().UnixNano()))
			n++
		}
	}
	if n > 0 {
		p.log.Warn("messages were stored after one that was not: publishing them again after it, under new ids (another publisher on the stream?)",
			zap.String("stream", p.cfg.Stream), zap.Int("messages", n))
	}
}

func wrongLastSeq(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Close closes the connection; call it after Run has returned. Messages not
// yet stored are not waited for (their LSNs were not confirmed).
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	if p.nc != nil {
		p.nc.Close()
	}
	return nil
}
