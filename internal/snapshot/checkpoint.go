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
}

// fingerprint identifies what an index's documents look like and how its
// keys are ordered.
func fingerprint(ix *build.Index) string {
	data, _ := json.Marshal(struct {
		Config any
		Key    []string
		Types  []string
	}{ix.Config(), ix.KeyColumns(), ix.KeyTypes()})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:12])
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
