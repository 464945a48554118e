package follow

import (
	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// group is the work of one or more committed transactions, coalesced while
// flusso-pg is behind: the root keys they affect (each with the commit LSN of
// the newest transaction that touched it) and the truncations they carry.
// A group that outgrows the spill bound is written in chunks as it is
// resolved (resolve.go); the counts below say how it went.
type group struct {
	keys   map[*build.Index]map[string]*entry // by build.Key.ID
	events []event
	nkeys  int
	last   *wal.Txn
	txns   int
	q      *gate     // what the group reads through: its first read waits for visibility
	b      *builders // build its chunks and write them in order (parallel.go)

	written   int  // keys of the chunks already written
	chunks    int  // chunks written (with keys)
	held      int  // the most keys the group held at once
	announced bool // the fan-out's start was logged
}

type entry struct {
	ix  *build.Index
	key build.Key
	lsn pglogrepl.LSN
}

type eventKind int

const (
	truncateEvent eventKind = iota // the root table was truncated: a truncate line
	rebuildEvent                   // another table was truncated: every document again
)

type event struct {
	kind eventKind
	ix   *build.Index
	lsn  pglogrepl.LSN
}

func newGroup(q *gate) *group {
	return &group{keys: map[*build.Index]map[string]*entry{}, q: q}
}

// addKey records that the transaction committed at lsn affects k.
func (g *group) addKey(ix *build.Index, k build.Key, lsn pglogrepl.LSN) {
	m := g.keys[ix]
	if m == nil {
		m = map[string]*entry{}
		g.keys[ix] = m
	}
	id := k.ID()
	if e, ok := m[id]; ok {
		e.lsn = lsn // commit order: the newest transaction wins
		return
	}
	m[id] = &entry{ix: ix, key: k, lsn: lsn}
	g.nkeys++
}

// documents counts the keys the group resolved: written and in hand.
func (g *group) documents() int { return g.written + g.nkeys }

// clear empties the group of its keys and events (keeping last, txns and
// the counts), once they are written.
func (g *group) clear() {
	if g.nkeys > 0 {
		g.chunks++
		g.written += g.nkeys
		g.held = max(g.held, g.nkeys)
	}
	g.keys = map[*build.Index]map[string]*entry{}
	g.events = nil
	g.nkeys = 0
}
