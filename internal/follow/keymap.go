package follow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/keymap"
	"github.com/flusso-pg/flusso-pg/internal/state"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// keyMap is the follower's side of the key map (docs/keymap.md): the
// tables it keeps, the open map, and the batch of the transaction being
// resolved. Everything but confirmed is the pipeline goroutine's.
type keyMap struct {
	tables []build.KeyMapTable
	mapped map[change.Table]bool
	dir    string
	opts   keymap.Options
	m      *keymap.Map
	batch  *keymap.Batch
	// closed: the map is closed; a metrics scrape must not read it.
	closed atomic.Bool
	mu     sync.Mutex // closed and m, for the metrics
	// confirmed is the last LSN confirmed to the server: the pre-images of
	// transactions up to it are never read again (Prune).
	confirmed atomic.Uint64
}

// prepareKeyMap decides, before the slot is opened, whether the key map
// can be used as it is. It returns true when it cannot (missing, damaged,
// built for another slot or config, its load never finished) while the
// slot already has progress: the slot must then be recreated, so that the
// map and every document are read again from one fresh snapshot (a
// rebuild of every index, with rebuild lines). It logs why.
func (f *Follower) prepareKeyMap() (resync bool, err error) {
	tables, err := f.plan.KeyMapTables()
	if err != nil || len(tables) == 0 {
		return false, err
	}
	km := &keyMap{tables: tables, mapped: map[change.Table]bool{}, dir: keymap.Dir(f.cfg.State.Dir, f.cfg.Source.Slot)}
	var names []string
	for _, t := range tables {
		km.mapped[t.Table] = true
		km.opts.Tables = append(km.opts.Tables, keymap.Spec{Table: t.Table, Key: t.Key, Join: t.Join})
		names = append(names, t.Table.String())
	}
	km.opts.Logger = f.log.With(zap.String("component", "keymap"))
	km.opts.CacheBytes = f.cfg.Capture.KeyMapCache
	f.km = km
	var id state.Identity
	ok, err := f.store.Load(state.IdentityRecord, &id)
	if err != nil {
		return false, err
	}
	if !ok || f.opts.Resync {
		return false, nil // a new slot: the map is created and loaded with the backfill
	}
	km.opts.Fingerprint = fingerprint(id)
	km.m, err = keymap.Open(km.dir, km.opts)
	if errors.Is(err, keymap.ErrRebuild) {
		f.log.Warn("the key map cannot be trusted, so it is rebuilt from a fresh snapshot: the slot is recreated and every index is backfilled again, in rebuild lines (documents resolved without the map may be stale)",
			zap.String("reason", err.Error()), zap.String("dir", km.dir), zap.Strings("tables", names))
		return true, nil
	}
	if err != nil {
		return false, err
	}
	f.log.Info("key map opened", zap.String("dir", km.dir), zap.Strings("tables", names),
		zap.Int64("entries", km.m.Entries()), zap.Stringer("lsn", km.m.LSN()))
	return false, nil
}

// fingerprint ties a map to one server and one incarnation of the slot.
func fingerprint(id state.Identity) string {
	return fmt.Sprintf("system %s database %s slot %s created at %s", id.SystemID, id.Database, id.Slot, id.ConsistentPoint)
}

// startKeyMap runs once the slot is open: on a new slot the map is created
// (the backfill loads it from the slot's snapshot); otherwise the map that
// prepareKeyMap opened must be there.
func (f *Follower) startKeyMap(start *wal.Start) error {
	km := f.km
	if km == nil {
		return nil
	}
	if !start.Created {
		if km.m == nil {
			return errors.New("the key map is not open and the slot was not created anew: restart flusso-pg (the map is rebuilt with a new slot)")
		}
		km.confirmed.Store(uint64(start.Confirmed))
		f.metrics.WatchKeyMap(km)
		return nil
	}
	if km.m != nil {
		_ = km.m.Close()
	}
	var id state.Identity
	if ok, err := f.store.Load(state.IdentityRecord, &id); err != nil || !ok {
		return fmt.Errorf("the key map needs the slot's identity record: %v", err)
	}
	km.opts.Fingerprint = fingerprint(id)
	m, err := keymap.Create(km.dir, km.opts)
	if err != nil {
		km.m = nil
		return err
	}
	km.mu.Lock()
	km.m = m
	km.mu.Unlock()
	km.confirmed.Store(uint64(start.ConsistentPoint))
	f.metrics.WatchKeyMap(km)
	return nil
}

// loadKeyMap fills a new map from the slot's exported snapshot (the one the
// backfill reads the documents from) and finishes it at the slot's
// consistent point. A failure is permanent: the snapshot cannot be read
// again, and the next start, finding an unfinished map, recreates the slot.
func (f *Follower) loadKeyMap(ctx context.Context, start *wal.Start) error {
	km := f.km
	if km == nil || !start.Created || km.m == nil || km.m.LSN() != 0 {
		return nil
	}
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(start.SnapshotName)); err != nil {
		return fmt.Errorf("key map: import the slot's snapshot: %w", err)
	}
	l, err := km.m.NewLoader()
	if err != nil {
		return err
	}
	for _, t := range km.tables {
		if err := readTable(ctx, tx, t, func(key, join []change.Value) error { return l.Add(t.Table, key, join) }); err != nil {
			_ = l.Close()
			return err
		}
	}
	if err := l.Close(); err != nil {
		return err
	}
	if err := km.m.FinishLoad(start.ConsistentPoint); err != nil {
		return err
	}
	f.log.Info("key map loaded from the slot's snapshot", zap.String("dir", km.dir),
		zap.Int64("entries", km.m.Entries()), zap.Int64("bytes", km.m.Bytes()))
	return nil
}

// readTable reads the key and join columns of every row of a mapped table
// and hands them to add.
func readTable(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, t build.KeyMapTable, add func(key, join []change.Value) error) error {
	cols := append(append([]string(nil), t.Key...), t.Join...)
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = change.QuoteIdentIfNeeded(c) + "::text"
	}
	rows, err := q.Query(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+t.Table.Quoted(), pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return fmt.Errorf("key map: read %s: %w", t.Table, err)
	}
	defer rows.Close()
	for rows.Next() {
		vals := make([]change.Value, len(cols))
		for i, raw := range rows.RawValues() {
			if raw == nil {
				vals[i] = change.Value{Null: true}
			} else {
				vals[i] = change.Value{Text: string(raw)}
			}
		}
		if err := add(vals[:len(t.Key)], vals[len(t.Key):]); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("key map: read %s: %w", t.Table, err)
	}
	return nil
}

// reloadKeyMap reads again, from the tables now, the map's entries of the
// tables whose every reader is among the indexes about to be rebuilt (the
// tables that were out of the publication are: recordReadd records all
// their readers), of those partitioned only when partitioned is set (a
// partition truncated, detached, changed and attached: not in the stream).
// It runs before the rebuild reads the documents, so that the documents are
// at least as new as the map (see keymap.Map.Reload).
func (f *Follower) reloadKeyMap(ctx context.Context, indexes []string, partitioned bool) error {
	km := f.km
	if km == nil || km.m == nil {
		return nil
	}
	for _, t := range km.tables {
		if info, ok := f.plan.Catalog.Table(t.Table); partitioned && (!ok || info == nil || info.Kind != "p") {
			continue
		}
		readers := f.rebuilds.readers[t.Table]
		if len(readers) == 0 || slices.ContainsFunc(readers, func(n string) bool { return !slices.Contains(indexes, n) }) {
			continue
		}
		err := km.m.Reload(t.Table, func(add func(key, join []change.Value) error) error {
			return readTable(ctx, f.pool, t, add)
		})
		if err != nil {
			return err
		}
		f.log.Info("key map entries of a table read again (its changes while out of the publication never reached the map)",
			zap.Stringer("table", t.Table), zap.Int64("entries", km.m.TableEntries(t.Table)))
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// fill gives the rows of mapped tables their old join values from the map
// (as REPLICA IDENTITY FULL would have sent them) and applies them to it,
// in the transaction's order; the transaction's batch is begun at its
// first such row and committed by commitKeyMap.
func (f *Follower) fill(txn *wal.Txn, rows []change.Row) error {
	km := f.km
	if km == nil || km.m == nil {
		return nil
	}
	for i := range rows {
		if !km.mapped[rows[i].Table] {
			continue
		}
		if km.batch == nil {
			b, err := km.m.Begin(txn.EndLSN)
			if err != nil {
				return err
			}
			km.batch = b
		}
		if err := km.batch.Fill(&rows[i]); err != nil {
			return fmt.Errorf("transaction %d (commit %s): key map: %w", txn.Xid, txn.CommitLSN, err)
		}
		sameAsNew(&rows[i])
	}
	return nil
}

// sameAsNew gives an UPDATE's old values that neither the server nor the
// map sent (columns outside the key and the map's join columns) the new
// ones. Resolution reads only the key and OldTupleColumns of an old row,
// which the map filled; a Missing value elsewhere would only make it look
// the row up again by key, one query per batch, for nothing.
func sameAsNew(r *change.Row) {
	if r.Op != change.Update || r.Old == nil {
		return
	}
	for i := range r.Old {
		if r.Old[i].Missing && i < len(r.New) && !r.New[i].Missing {
			r.Old[i] = r.New[i]
		}
	}
}

// commitKeyMap commits the transaction's batch (before any of its lines is
// written by finish), or drops it when the transaction failed.
func (f *Follower) commitKeyMap(ok bool) error {
	km := f.km
	if km == nil || km.batch == nil {
		return nil
	}
	b := km.batch
	km.batch = nil
	if !ok {
		b.Discard()
		return nil
	}
	return b.Commit()
}

// syncKeyMap makes the map durable up to what it holds, before the group's
// end is handed to the confirmer, and forgets the pre-images of what was
// confirmed.
func (f *Follower) syncKeyMap() error {
	km := f.km
	if km == nil || km.m == nil {
		return nil
	}
	if err := km.m.Prune(pglogrepl.LSN(km.confirmed.Load())); err != nil {
		return err
	}
	return km.m.Sync()
}

// closeKeyMap closes the map (what was committed survives).
func (f *Follower) closeKeyMap() {
	f.stopKeyMapSyncer()
	if f.km != nil && f.km.m != nil {
		if f.km.batch != nil {
			f.km.batch.Discard()
		}
		f.km.mu.Lock()
		f.km.closed.Store(true)
		_ = f.km.m.Close()
		f.km.mu.Unlock()
	}
}

// Entries is flusso_keymap_entries (metrics.KeyMapStats).
func (km *keyMap) Entries() int64 {
	km.mu.Lock()
	defer km.mu.Unlock()
	if km.closed.Load() {
		return 0
	}
	return km.m.Entries()
}

// Bytes is flusso_keymap_bytes.
func (km *keyMap) Bytes() int64 {
	km.mu.Lock()
	defer km.mu.Unlock()
	if km.closed.Load() {
		return 0
	}
	return km.m.Bytes()
}

// oldColumns is what capture must find in old rows: OldTupleColumns, with
// a mapped table's key instead of its join columns.
func (f *Follower) oldColumns() map[change.Table][]string {
	if f.km == nil {
		return f.plan.OldTupleColumns()
	}
	return f.plan.OldColumnsWithKeyMap(f.km.tables)
}
