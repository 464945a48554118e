package follow

import (
	"context"
	"errors"
	"runtime"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/provision"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// stageStart is the start's name in fault.Health: connecting, compiling the
// plan, provisioning, opening the slot. The command checks the first
// connection before Run (a server that cannot be reached at all is one
// line naming the fix); a server lost after that is waited for like any
// outage.
const stageStart = "start"

// open connects the pool, compiles the plan, provisions the publication,
// opens the output and the slot. What it opened is closed by close, also
// when it fails.
func (f *Follower) open(ctx context.Context) (*wal.Start, error) {
	err := f.retry(ctx, stageStart, func(ctx context.Context) error {
		if f.pool == nil {
			// One connection per backfill worker, one to plan with, one
			// for the slot statistics; while following, one per chunk
			// built at once (f.workers) besides the resolver's (it holds
			// its own while a fan-out is written), the slot statistics'
			// and one for the visibility check or a plan.
			workers := f.cfg.Backfill.Workers
			if workers <= 0 {
				workers = runtime.NumCPU()
			}
			pool, err := pgsession.OpenPool(ctx, f.cfg.Source.DSN, max(workers+2, f.workers+3, 4))
			if err != nil {
				return err
			}
			f.pool = pool
		}
		plan, problems, err := build.Compile(ctx, f.pool, f.cfg)
		if err != nil {
			return err
		}
		if err := build.Problems(problems).Err(); err != nil {
			return err
		}
		f.plan = plan
		for _, ix := range plan.Indexes {
			// Every series exists from the start, so rate() alerts see a 0.
			for _, op := range []string{output.OpUpsert, output.OpDelete} {
				f.metrics.Documents.WithLabelValues(ix.Name(), op)
			}
		}
		_, err = provision.EnsureWith(ctx, pgsession.ReadWrite(f.pool), f.cfg, f.plan, f.store, f.log, f.rebuildBeforeAdd)
		return err
	})
	if err != nil {
		return nil, err
	}
	resync, err := f.prepareKeyMap()
	if err != nil {
		return nil, err
	}
	if f.out, err = f.openSink(ctx); err != nil {
		return nil, err
	}
	f.em = newEmitter(f.out, f.opts.AckFD > 0 || f.opts.AckFile != "")
	f.capture = wal.New(f.captureConfig(resync), f.log)
	f.metrics.WatchCapture(f.capture)
	f.metrics.WatchFailover(f.capture)
	var start *wal.Start
	err = f.retry(ctx, stageStart, func(ctx context.Context) (err error) {
		start, err = f.capture.Open(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := f.startKeyMap(start); err != nil {
		return nil, err
	}
	// Confirmed on acknowledgements: the reader's (--ack-fd) or the
	// broker's (JetStream, whose watermark feeds confirmer.ack).
	f.confirmer = newConfirmer(f.em.acks || f.pub != nil, func(lsn pglogrepl.LSN) {
		f.capture.Confirm(lsn)
		if f.km != nil {
			f.km.confirmed.Store(uint64(lsn))
		}
		f.metrics.ConfirmedLSN.Set(float64(lsn))
	})
	return start, nil
}

// close closes what open opened, in reverse; an output error that is not
// the reader's leaving becomes Run's error when it has none.
func (f *Follower) close(err *error) {
	f.closeKeyMap()
	if f.capture != nil {
		f.capture.Close()
	}
	if f.lw != nil {
		f.lw.close()
	}
	if f.out != nil {
		if cerr := f.out.Close(); *err == nil && cerr != nil && !errors.Is(cerr, output.ErrReaderGone) {
			*err = cerr
		}
	}
	if f.pool != nil {
		f.pool.Close()
	}
}

// readd is capture's Readd: under source.provision: auto a table back in
// the publication is rebuilt (readd.go); otherwise capture stops.
func (f *Follower) readd() func(change.Table, bool) error {
	if f.cfg.Source.Provision != config.ProvisionAuto {
		return nil
	}
	return f.recordReadd
}

// captureConfig is the capture's part of the config; resync: the key map
// asks for a fresh slot (keymap.go).
func (f *Follower) captureConfig(resync bool) wal.Config {
	return wal.Config{
		DSN:            f.cfg.Source.DSN,
		Slot:           f.cfg.Source.Slot,
		Publication:    f.cfg.Source.Publication,
		Tables:         f.plan.CaptureColumns(),
		OldColumns:     f.oldColumns(),
		MemoryBudget:   f.cfg.Capture.MemoryBudget,
		TempDir:        f.cfg.Capture.SpillDir,
		StatusInterval: f.cfg.Capture.StatusInterval,
		Coalesce:       f.cfg.Capture.Coalesce,
		Store:          f.store,
		Readd:          f.readd(),
		Resync:         f.opts.Resync || resync,
		Failover:       f.cfg.Source.Failover,
		PrimaryDSN:     f.cfg.Source.PrimaryDSN,
		Health:         f.health,
	}
}
