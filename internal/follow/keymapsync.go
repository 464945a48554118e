package follow

import (
	"sync"

	"github.com/jackc/pglogrepl"
)

// The key map must be durable up to a group's end before the group may be
// confirmed (docs/keymap.md), but not before its lines are written: the
// fsync is off the pipeline's path. A group, once flushed, is handed to the
// syncer, which prunes and syncs the map and then hands the group to the
// confirmer, in order. While one fsync runs, the groups flushed meanwhile
// wait for the next one, which covers them all (every batch was committed
// before its group was handed over). A failed sync is the pipeline's error
// at its next group; nothing after it is confirmed.
type keyMapSyncer struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []pending
	err     error
	stopped bool
	done    chan struct{}
}

// prepareConfirm writes the group's key-map changes to the store (not
// synced), on the loop's goroutine, before the group is handed over. It
// returns the syncer the group's confirmation goes through (nil without a
// key map), or the syncer's error, if an earlier sync failed.
func (f *Follower) prepareConfirm() (*keyMapSyncer, error) {
	if f.km == nil || f.km.m == nil {
		return nil, nil
	}
	// The group's transactions go to the store in one write (not synced).
	if err := f.km.m.FlushGroup(); err != nil {
		return nil, err
	}
	s := f.kmSync
	if s == nil {
		s = &keyMapSyncer{done: make(chan struct{})}
		s.cond = sync.NewCond(&s.mu)
		f.kmSync = s
		go f.runKeyMapSyncer(s)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s, s.err
}

// confirmWhenSynced hands a flushed group to the confirmer once the key
// map is durable past it: through s, the syncer prepareConfirm gave (at
// once when nil). It runs on the goroutine that wrote the group's lines;
// a group handed to a syncer already stopped (the pipeline ended on an
// error) is not confirmed.
func (f *Follower) confirmWhenSynced(s *keyMapSyncer, need, end pglogrepl.LSN) {
	if s == nil {
		f.confirmer.flushed(need, end)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, pending{need: need, end: end})
	s.cond.Signal()
}

func (f *Follower) runKeyMapSyncer(s *keyMapSyncer) {
	defer close(s.done)
	s.mu.Lock()
	for {
		for len(s.queue) == 0 && !s.stopped {
			s.cond.Wait()
		}
		if len(s.queue) == 0 || s.err != nil {
			s.mu.Unlock()
			return
		}
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		err := f.syncKeyMap()
		if err == nil {
			for _, p := range batch {
				f.confirmer.flushed(p.need, p.end)
			}
		}
		s.mu.Lock()
		if err != nil {
			s.err = err
		}
	}
}

// stopKeyMapSyncer syncs and confirms what is queued, then ends the
// syncer: before the stop waits for acknowledgements, and before the map
// is closed.
func (f *Follower) stopKeyMapSyncer() {
	s := f.kmSync
	if s == nil {
		return
	}
	s.mu.Lock()
	s.stopped = true
	s.cond.Signal()
	s.mu.Unlock()
	<-s.done
	f.kmSync = nil
}
