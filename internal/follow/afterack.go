package follow

import "github.com/jackc/pglogrepl"

// The records that say an inline rebuild is written (the partitions'
// fingerprints, a rebuilt index's fingerprint, the rebuilds recorded for a
// table back in the publication) may be saved only once the rebuild's
// lines are safe. Written to stdout or a file, they are once flushed. With
// a reader that acknowledges (--ack-fd, --ack-file) or JetStream, only once
// acknowledged: the rebuild's lines carry the lsn of the last group
// written, which may be acknowledged already, so an acknowledgement of that
// lsn proves nothing; a line with a greater lsn comes after them, so an
// acknowledgement of one covers them. Until then the record still says
// "rebuild", and a restart rebuilds again: a repeated rebuild, never a lost
// one. The saves run in order, on the pipeline goroutine (checkCatalog,
// and once more at a clean stop, after the wait for acknowledgements).

// ackedSave is a record save waiting for an acknowledgement past lsn.
type ackedSave struct {
	lsn  pglogrepl.LSN // the newest line lsn written when it was asked for
	save func() error
}

// saveWhenSafe saves at once without acknowledgements, else once a line
// written after every line so far is acknowledged.
func (f *Follower) saveWhenSafe(save func() error) error {
	if !f.confirmer.acks {
		return save()
	}
	f.ackedSaves = append(f.ackedSaves, ackedSave{lsn: f.em.written, save: save})
	return f.runAckedSaves()
}

// runAckedSaves runs, in order, the saves whose lines are acknowledged.
func (f *Follower) runAckedSaves() error {
	acked := f.confirmer.ackedLSN()
	n := 0
	for _, s := range f.ackedSaves {
		if s.lsn != 0 && acked <= s.lsn {
			break
		}
		if err := s.save(); err != nil {
			return err
		}
		n++
	}
	f.ackedSaves = append(f.ackedSaves[:0], f.ackedSaves[n:]...)
	return nil
}
