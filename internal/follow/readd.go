package follow

import (
	"context"
	"slices"
	"sync"

	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// A table someone removed from the publication (ALTER PUBLICATION ... DROP
// TABLE) is added back by capture's publication watcher under
// source.provision: auto; its changes made meanwhile never arrived, so the
// indexes that read it are rebuilt inline. The rebuild is recorded in the
// state dir before the table is added back and forgotten once written, so a
// crash in between rebuilds at the next start.

// rebuilds are the indexes waiting for an inline rebuild, shared by the
// publication watcher (which adds) and the loop (which rebuilds).
type rebuilds struct {
	mu      sync.Mutex
	names   []string // sorted
	waiting []string // recorded, not yet back in the publication
	// done: rebuilt, kept in the record until acknowledged (afterack.go),
	// with the number of the rebuild (a later one must be acknowledged too)
	done    map[string]int64
	runs    int64
	readers map[change.Table][]string // per table, the indexes that read it
}

// recordReadd records that the indexes reading t are to be rebuilt, once
// t is back in the publication (the rebuild must read what the stream no
// longer carries): the wal.Config.Readd of follow.
func (f *Follower) recordReadd(t change.Table, added bool) error {
	r := &f.rebuilds
	r.mu.Lock()
	defer r.mu.Unlock()
	if added {
		r.waiting = slices.DeleteFunc(r.waiting, func(n string) bool { return slices.Contains(r.readers[t], n) })
		return nil
	}
	r.waiting = append(r.waiting, r.readers[t]...)
	for _, n := range r.readers[t] {
		delete(r.done, n)
	}
	for _, name := range r.readers[t] {
		if !slices.Contains(r.names, name) {
			r.names = append(r.names, name)
		}
	}
	slices.Sort(r.names)
	return f.store.Save(state.RebuildsRecord, r.names)
}

// rebuildBeforeAdd is provision's hook at start: tables about to be added
// to the publication for a slot that already streams were out of it (their
// changes meanwhile never arrived), so the indexes that read them are
// recorded for an inline rebuild before the tables go back in. A new slot
// backfills everything anyway.
func (f *Follower) rebuildBeforeAdd(indexes []string) error {
	if ok, err := f.store.Load(state.IdentityRecord, &state.Identity{}); err != nil || !ok {
		return err
	}
	var names []string
	if _, err := f.store.Load(state.RebuildsRecord, &names); err != nil {
		return err
	}
	for _, n := range indexes {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	f.log.Info("tables the indexes read are not in the publication: adding them back, then rebuilding the indexes (their changes meanwhile never arrived)",
		zap.Strings("indexes", indexes))
	return f.store.Save(state.RebuildsRecord, names)
}

// loadRebuilds reads the rebuilds recorded and not yet written, and notes
// which indexes read which table.
func (f *Follower) loadRebuilds() error {
	r := &f.rebuilds
	r.readers = map[change.Table][]string{}
	for _, ix := range f.plan.Indexes {
		for _, t := range ix.Tables() {
			r.readers[t] = append(r.readers[t], ix.Name())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := f.store.Load(state.RebuildsRecord, &r.names)
	return err
}

// runRebuilds rebuilds inline the indexes recorded, then forgets them once
// the rebuild is safe (saveWhenSafe).
func (f *Follower) runRebuilds(ctx context.Context) error {
	r := &f.rebuilds
	r.mu.Lock()
	names := slices.DeleteFunc(slices.Clone(r.names), func(n string) bool {
		_, done := r.done[n]
		return done || slices.Contains(r.waiting, n)
	})
	r.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	err := f.retry(ctx, stageRebuild, func(ctx context.Context) error {
		f.em.reset()
		if err := f.reloadKeyMap(ctx, names, false); err != nil {
			return err
		}
		for _, ix := range f.plan.Indexes {
			if !slices.Contains(names, ix.Name()) {
				continue
			}
			f.log.Info("a table the index reads is back in the publication (its changes meanwhile never arrived): writing every document again",
				zap.String("index", ix.Name()), zap.Stringer("lsn", f.inlineLSN()))
			if err := f.rebuildReplanned(ctx, ix, f.inlineLSN(), f.parts[ix.Name()]); err != nil {
				return err
			}
		}
		_, err := f.em.flush()
		return err
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.runs++
	run := r.runs
	if r.done == nil {
		r.done = map[string]int64{}
	}
	for _, n := range names {
		r.done[n] = run
	}
	r.mu.Unlock()
	return f.saveWhenSafe(func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		// Forget those this rebuild wrote, unless recorded again since.
		r.names = slices.DeleteFunc(r.names, func(n string) bool {
			if r.done[n] != run {
				return false
			}
			delete(r.done, n)
			return true
		})
		return f.store.Save(state.RebuildsRecord, r.names)
	})
}
