package snapshot

import (
	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/output"
)

// A backfill of an index, in follow, is a rebuild (SPEC, Output): its
// documents are bracketed by a rebuild_start and a rebuild_done line, both
// with the backfill's LSN, and at rebuild_done the reader drops every
// document of the index the backfill did not write (one the config no
// longer selects, a row deleted while the slot was dropped for --resync).
//
// The start is written before any document line of the index and recorded
// in the checkpoint, so a resumed backfill continues its rebuild without a
// second rebuild_start; a start written but not yet recorded when the
// process died comes again, before all the index's documents again. The
// done is written after the index's last document line. Progress recorded
// before rebuild lines existed (documents written, no start recorded) gets
// neither: a late rebuild_start would make rebuild_done drop documents
// written before it.

// rebuildStart writes ip's rebuild_start line unless its rebuild began in
// an earlier run.
func (b *Backfill) rebuildStart(ix *build.Index, ip *indexProgress) error {
	if !b.cfg.Rebuild || b.ckpt.rebuildStarted(ip) || ip.Rows > 0 {
		return nil
	}
	if err := b.w.Write(output.AppendRebuildStart(nil, ix.Name(), ip.LSN)); err != nil {
		return fault.MarkPermanent(err)
	}
	b.ckpt.markRebuild(ip)
	return nil
}

// rebuildDone writes the rebuild_done line of an index whose backfill just
// completed, when its rebuild_start was written.
func (b *Backfill) rebuildDone(ix *build.Index, ip *indexProgress) error {
	if !b.cfg.Rebuild || !b.ckpt.rebuildStarted(ip) {
		return nil
	}
	if err := b.ckpt.wroteLine(b.w, output.AppendRebuildDone(nil, ix.Name(), ip.LSN), ip.LSN); err != nil {
		return fault.MarkPermanent(err)
	}
	return nil
}

// wroteLine writes one line that ends a part of the backfill. In ack mode it
// is marked "ack":true and leaves a token, as a batch does (wrote): the
// record that says the index is done is saved only once the reader has
// acknowledged this line too, so a reader that dies between the last batch
// and the rebuild_done gets both again.
func (c *checkpoints) wroteLine(w Output, line []byte, lsn pglogrepl.LSN) error {
	if !c.acks || c.store == nil {
		return w.Write(line)
	}
	c.order.Lock()
	defer c.order.Unlock()
	if err := w.Write(output.AppendAckMark(line)); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens = append(c.tokens, token{lsn: lsn, rec: c.encodeLocked()})
	c.maxLSN = max(c.maxLSN, lsn)
	return nil
}

func (c *checkpoints) rebuildStarted(ip *indexProgress) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ip.RebuildStarted
}

func (c *checkpoints) markRebuild(ip *indexProgress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ip.RebuildStarted = true
	c.dirty = true
}
