package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// recordVersion is the layout of the backfill record; another version is
// started over.
const recordVersion = 1

// record is the backfill progress kept in the state dir as
// <slot>.backfill.json: per index, its key ranges and how far each got.
type record struct {
	Version int                       `json:"version"`
	Indexes map[string]*indexProgress `json:"indexes"`
}

// indexProgress is one index's backfill.
type indexProgress struct {
	// Fingerprint identifies the index's config, key columns and key
	// types: progress made under another fingerprint is thrown away.
	Fingerprint string        `json:"fingerprint"`
	Done        bool          `json:"done"`
	Rows        int64         `json:"rows"` // documents written and flushed
	LSN         pglogrepl.LSN `json:"lsn"`  // the position written on its lines: of the snapshot it began in
	StartedAt   time.Time     `json:"started_at,omitzero"`
	FinishedAt  time.Time     `json:"finished_at,omitzero"`
	Ranges      []*keyRange   `json:"ranges,omitempty"` // dropped once done
	// RebuildStarted records that the index's rebuild_start line is written
	// (rebuild.go): a resume continues the rebuild without a second one.
	RebuildStarted bool `json:"rebuild_started,omitempty"`
}

// keyRange is a slice of an index's root keys: key > After (nil: from the
// first) and key <= UpTo (nil: to the last), with the last key whose line
// is written and flushed.
type keyRange struct {
	After build.Key `json:"after"`
	UpTo  build.Key `json:"up_to"`
	Last  build.Key `json:"last"`
	Done  bool      `json:"done"`
	Rows  int64     `json:"rows"`
}

// resumeAfter is where a read of the range starts: after its last flushed
// key, or after its lower bound.
func (r *keyRange) resumeAfter() build.Key {
	if r.Last != nil {
		return r.Last
	}
	return r.After
}

// checkpoints holds the record in memory. Workers advance it as they write
// lines (pending positions); save writes a copy taken before the output was
// flushed, so the saved record never runs ahead of the flushed lines.
type checkpoints struct {
	mu    sync.Mutex
	store *state.Store // nil: nothing is kept
	rec   *record
	plan  map[*build.Index]*indexProgress
	dirty bool

	// In ack mode (acks true) the saved record follows the reader's
	// acknowledgements instead of the flushes: see wrote and ack.
	acks     bool
	order    sync.Mutex // a batch's write and its token, in output order
	tokens   []token    // records after each marked batch, oldest first, not yet acknowledged
	acked    []byte     // the newest acknowledged record, nil once saved
	finished bool       // the backfill ended: final is the record of all its lines
	final    []byte
	maxLSN   pglogrepl.LSN // the greatest LSN written on a backfill line
	saveMu   sync.Mutex    // one save at a time (the checkpoint loop and late acks)
}

// token is the record as it stood right after a marked batch was written.
type token struct {
	lsn pglogrepl.LSN
	rec []byte
}

// fingerprint identifies what an index's documents look like and how its
// keys are ordered.
func fingerprint(ix *build.Index) string {
	data, _ := json.Marshal(struct {
		Config  any
		Key     []string
		Types   []string
		Columns []string `json:",omitempty"` // columns left to the default, as the catalog gave them
	}{ix.Config(), ix.KeyColumns(), ix.KeyTypes(), ix.DefaultColumns()})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:12])
}

// Rebuilt records that every document of ix was written again under its
// current plan (an inline rebuild of follow after the columns of a default
// column list changed): a done backfill of ix takes the new fingerprint, so
// the next start does not backfill it again.
func Rebuilt(store *state.Store, ix *build.Index) error {
	var rec record
	ok, err := store.Load(state.BackfillRecord, &rec)
	if err != nil || !ok || rec.Version != recordVersion {
		return err
	}
	ip := rec.Indexes[ix.Name()]
	if ip == nil || !ip.Done {
		return nil
	}
	ip.Fingerprint = fingerprint(ix)
	return store.Save(state.BackfillRecord, &rec)
}

// loadCheckpoints reads the record of store and reconciles it with plan:
// fresh discards it; an index whose fingerprint changed starts over; an
// index no longer in the config is forgotten.
func loadCheckpoints(store *state.Store, fresh bool, plan *build.Plan, log *zap.Logger) (*checkpoints, error) {
	c := &checkpoints{store: store, rec: &record{Version: recordVersion, Indexes: map[string]*indexProgress{}}, plan: map[*build.Index]*indexProgress{}}
	if store != nil && fresh {
		if err := store.Remove(state.BackfillRecord); err != nil {
			return nil, err
		}
		log.Info("new slot: any earlier backfill progress is discarded")
	} else if store != nil {
		var rec record
		ok, err := store.Load(state.BackfillRecord, &rec)
		if err != nil {
			return nil, err
		}
		switch {
		case !ok:
		case rec.Version != recordVersion || rec.Indexes == nil:
			log.Warn("backfill progress of another version: starting over", zap.Int("version", rec.Version))
		default:
			c.rec = &rec
		}
	}
	names := map[string]bool{}
	for _, ix := range plan.Indexes {
		names[ix.Name()] = true
		fp := fingerprint(ix)
		ip := c.rec.Indexes[ix.Name()]
		if ip != nil && ip.Fingerprint != fp {
			log.Warn("the index's config changed since its backfill began: backfilling it again", zap.String("index", ix.Name()))
			ip = nil
		}
		if ip == nil {
			ip = &indexProgress{Fingerprint: fp}
			c.rec.Indexes[ix.Name()] = ip
			c.dirty = true
		} else if ip.Done {
			ip.Ranges = nil
		} else if !validRanges(ip.Ranges, len(ix.KeyColumns())) {
			log.Warn("damaged backfill ranges: backfilling the index again", zap.String("index", ix.Name()))
			*ip = indexProgress{Fingerprint: fp}
		} else if ip.Ranges != nil {
			log.Info("resuming the backfill from its checkpoints", zap.String("index", ix.Name()), zap.Int64("documents_done", ip.Rows))
		}
		c.plan[ix] = ip
	}
	for name := range c.rec.Indexes {
		if !names[name] {
			log.Info("index no longer in the config: its backfill progress is dropped", zap.String("index", name))
			delete(c.rec.Indexes, name)
			c.dirty = true
		}
	}
	return c, nil
}

// validRanges checks that recorded ranges chain (each starts where the last
// ended, the first from nil, the last to nil) and hold keys of n values.
func validRanges(rs []*keyRange, n int) bool {
	if rs == nil {
		return true
	}
	for i, r := range rs {
		if r == nil || (i == 0) != (r.After == nil) || (i == len(rs)-1) != (r.UpTo == nil) {
			return false
		}
		if i > 0 && !equalKey(rs[i-1].UpTo, r.After) {
			return false
		}
		for _, k := range []build.Key{r.After, r.UpTo, r.Last} {
			if k != nil && len(k) != n {
				return false
			}
		}
	}
	return len(rs) > 0
}

func equalKey(a, b build.Key) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (c *checkpoints) index(ix *build.Index) *indexProgress { return c.plan[ix] }

// started notes the snapshot position of the pass that begins the index;
// a resumed index keeps the position it began at, so every backfill line of
// an index carries one LSN (on the first follow, the slot's consistent
// point) and no stream line that follows carries a lower one.
func (c *checkpoints) started(ip *indexProgress, lsn pglogrepl.LSN) pglogrepl.LSN {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ip.LSN == 0 || ip.Rows == 0 {
		ip.LSN = lsn
	}
	if ip.StartedAt.IsZero() {
		ip.StartedAt = time.Now().UTC()
	}
	c.dirty = true
	return ip.LSN
}

// advance records that the lines of a batch up to last are written (not yet
// flushed: the next checkpoint flushes them before saving).
func (c *checkpoints) advance(ip *indexProgress, r *keyRange, last build.Key, n int64, done bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if last != nil {
		r.Last = last
	}
	r.Rows += n
	ip.Rows += n
	r.Done = r.Done || done
	c.dirty = true
}

// rangeDone marks the index done when all its ranges are; it reports
// whether it did.
func (c *checkpoints) rangeDone(ip *indexProgress) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range ip.Ranges {
		if !r.Done {
			return false
		}
	}
	c.finishLocked(ip)
	return true
}

func (c *checkpoints) finishIndex(ip *indexProgress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishLocked(ip)
}

func (c *checkpoints) finishLocked(ip *indexProgress) {
	if !ip.Done {
		ip.Done = true
		ip.FinishedAt = time.Now().UTC()
		c.dirty = true
	}
}

// pending returns the record as it is now, encoded, or nil when nothing
// changed since the last save.
func (c *checkpoints) pending() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.store == nil || !c.dirty {
		return nil
	}
	c.dirty = false
	return c.encodeLocked()
}

// encodeLocked encodes the record as it is now.
func (c *checkpoints) encodeLocked() []byte {
	out := &record{Version: c.rec.Version, Indexes: make(map[string]*indexProgress, len(c.rec.Indexes))}
	for name, ip := range c.rec.Indexes {
		cp := *ip
		if cp.Done {
			cp.Ranges = nil
		}
		out.Indexes[name] = &cp
	}
	data, err := json.Marshal(out)
	if err != nil {
		panic("snapshot: encode the backfill record: " + err.Error())
	}
	return data
}

// save writes a record taken by pending (after the lines it covers were
// flushed).
func (c *checkpoints) save(data []byte) error {
	if data == nil {
		return nil
	}
	return c.store.Save(state.BackfillRecord, json.RawMessage(data))
}

// In ack mode a saved record must not run ahead of the lines the reader has
// acknowledged. Every backfill line of an index carries the same LSN, so an
// acknowledgement alone cannot say how far the reader got. Instead, the last
// line of every batch is marked "ack":true and the reader writes back one
// LSN per marked line, in order, once it and the lines before it are stored
// (docs/follow.md; docs/examples/ack_reader.py does so). Each batch leaves a
// token, the record as it stood right after the batch, and each
// acknowledgement takes the oldest token. A reader that acknowledges less
// often only makes the record lag, so lines are sent again after a restart;
// after the backfill, an acknowledgement past every backfill LSN (of a
// stream line) covers every token.

// wrote writes a batch's lines (n of them, buf) and records the range's
// progress as one step: in ack mode the batch's last line is marked and its
// token is taken before any other batch is written. It reports whether the
// index is done (every range read).
func (c *checkpoints) wrote(w Output, buf []byte, lsn pglogrepl.LSN, ip *indexProgress, r *keyRange, last build.Key, n int64, done bool) (bool, error) {
	if !c.acks || c.store == nil {
		if n > 0 {
			if err := w.Write(buf); err != nil {
				return false, err
			}
		}
		c.advance(ip, r, last, n, done)
		return done && c.rangeDone(ip), nil
	}
	c.order.Lock()
	defer c.order.Unlock()
	if n > 0 {
		// Every line ends with "}\n": add the field before the closing brace.
		buf = append(buf[:len(buf)-2], `,"ack":true}`+"\n"...)
		if err := w.Write(buf); err != nil {
			return false, err
		}
	}
	c.advance(ip, r, last, n, done)
	finished := done && c.rangeDone(ip)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > 0 {
		c.tokens = append(c.tokens, token{lsn: lsn, rec: c.encodeLocked()})
		c.maxLSN = max(c.maxLSN, lsn)
	} else if len(c.tokens) == 0 && c.acked == nil {
		// No line to mark (the range ended on a full batch), and everything
		// written before is acknowledged: the record may say so at once.
		c.acked = c.encodeLocked()
	}
	return finished, nil
}

// ack takes an LSN the reader wrote back.
func (c *checkpoints) ack(lsn pglogrepl.LSN) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.acks {
		return
	}
	if c.finished && lsn > c.maxLSN {
		c.tokens = nil
		if c.final != nil {
			c.acked, c.final = c.final, nil
		}
		return
	}
	if len(c.tokens) > 0 && lsn >= c.tokens[0].lsn {
		c.acked = c.tokens[0].rec
		c.tokens[0] = token{}
		c.tokens = c.tokens[1:]
		if len(c.tokens) == 0 && c.finished && c.final != nil {
			c.acked, c.final = c.final, nil
		}
	}
}

// finish notes that the backfill wrote all its lines: once they are all
// acknowledged, the record is the final one.
func (c *checkpoints) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.acks {
		return
	}
	c.finished = true
	c.final = c.encodeLocked()
	if len(c.tokens) == 0 {
		c.acked, c.final = c.final, nil
	}
}

// checkpoint makes every written line durable (or hands it to the reader),
// then saves how far each range got: in ack mode, as far as the reader
// acknowledged; otherwise as far as the flush covers (positions noted before
// the Sync are covered by it).
func (c *checkpoints) checkpoint(w Output) error {
	if !c.acks || c.store == nil {
		pending := c.pending()
		if err := w.Sync(); err != nil {
			return err
		}
		return c.save(pending)
	}
	if err := w.Sync(); err != nil {
		return err
	}
	return c.saveAcked()
}

// saveAcked saves the newest acknowledged record, if there is a new one.
func (c *checkpoints) saveAcked() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	data := c.acked
	c.acked = nil
	c.mu.Unlock()
	return c.save(data)
}

// Ack takes an LSN the reader of the output wrote back (--ack-fd,
// --ack-file), in ack mode (Config.Acks): the backfill's saved progress
// follows these, not the flushes. It may be called at any time, also before
// Run and after it returned; after Run it saves what it acknowledges.
func (b *Backfill) Ack(lsn pglogrepl.LSN) error {
	c := b.acked.Load()
	if c == nil {
		return nil
	}
	c.ack(lsn)
	c.mu.Lock()
	finished := c.finished
	c.mu.Unlock()
	if !finished {
		return nil // the checkpoint loop saves it
	}
	return c.saveAcked()
}
