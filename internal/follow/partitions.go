package follow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/state"
	"github.com/flusso-pg/flusso-pg/internal/wal"
)

// Partition maintenance is not in the logical stream when the publication
// publishes through the partition root: pgoutput skips a TRUNCATE of a leaf
// (it sends the published root's truncates only), and ATTACH, DETACH and
// DROP of a partition write no change at all. So flusso-pg looks instead:
// every index that reads a partitioned table has a fingerprint, each leaf
// of those tables with its relfilenode (a TRUNCATE gives a leaf a new one;
// an attach, a detach or a drop changes the set of leaves) and each
// partition with the xmin of its pg_inherits row (a detach and an attach
// again of the same table between two looks give it a new one). The loop reads
// it every few seconds, and before building a group that writes a
// partitioned table (lookBeforeBuild), and when it changed rebuilds the
// index inline. The
// fingerprint an index was last rebuilt with is kept in the state dir, so a
// change while flusso-pg was stopped, or a rebuild cut short by a crash, is
// rebuilt at the next start. (A VACUUM FULL or CLUSTER of a leaf changes its
// relfilenode too, and a VACUUM FREEZE of pg_inherits shows its rows' xmin
// as frozen: one rebuild more, never a wrong document.)

// partitionsSQL gives, per partitioned table of $1 (table names as SQL),
// its partitions: each leaf with its relfilenode, each partition (leaf or
// not) with the xmin of its pg_inherits row, which an ATTACH writes anew
// (so a partition detached, changed and attached again between two looks
// is not the same partition); a table that is not partitioned (or does not
// exist) gives no row.
const partitionsSQL = `SELECT r.t, coalesce(string_agg(c.oid::text || ':' || CASE WHEN p.isleaf THEN c.relfilenode::text ELSE '' END || ':' || coalesce(i.xmin::text, ''), ',' ORDER BY c.oid) FILTER (WHERE p.level > 0), '')
FROM unnest($1::text[]) AS r(t)
JOIN pg_catalog.pg_class root ON root.oid = to_regclass(r.t) AND root.relkind = 'p'
CROSS JOIN LATERAL pg_catalog.pg_partition_tree(root.oid) p
LEFT JOIN pg_catalog.pg_class c ON c.oid = p.relid
LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid = p.relid
GROUP BY r.t`

// readPartitions gives, per index, the fingerprint of the partitions of the
// partitioned tables it reads ("" when it reads none).
func (f *Follower) readPartitions(ctx context.Context) (map[string]string, error) {
	return f.partitionsOf(ctx, f.pool)
}

// partitionsOf is readPartitions on q.
func (f *Follower) partitionsOf(ctx context.Context, q build.Querier) (map[string]string, error) {
	var names []string
	for _, t := range f.plan.Tables() {
		names = append(names, t.String())
	}
	rows, err := q.Query(ctx, partitionsSQL, names)
	if err != nil {
		return nil, fmt.Errorf("read the partitions of the tables the indexes read: %w", err)
	}
	leaves := map[string]string{}
	for rows.Next() {
		var t, l string
		if err := rows.Scan(&t, &l); err != nil {
			rows.Close()
			return nil, err
		}
		leaves[t] = l
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the partitions of the tables the indexes read: %w", err)
	}
	f.partitioned = map[string]bool{}
	for t := range leaves {
		f.partitioned[t] = true
	}
	out := map[string]string{}
	for _, ix := range f.plan.Indexes {
		var b strings.Builder
		for _, t := range ix.Tables() {
			if l, ok := leaves[t.String()]; ok {
				fmt.Fprintf(&b, "%s=%s;", t, l)
			}
		}
		out[ix.Name()] = b.String()
	}
	return out, nil
}

// loadPartitions reads, before any backfill, the fingerprints the indexes
// were last rebuilt with; an index without one takes the current one (its
// backfill is about to read these partitions).
func (f *Follower) loadPartitions(ctx context.Context) error {
	return f.retry(ctx, stageStart, func(ctx context.Context) error {
		known := map[string]string{}
		if _, err := f.store.Load(state.PartitionsRecord, &known); err != nil {
			return err
		}
		now, err := f.readPartitions(ctx)
		if err != nil {
			return err
		}
		missing := false
		for name, fp := range now {
			if _, ok := known[name]; !ok {
				known[name] = fp
				missing = true
			}
		}
		f.parts = known
		if missing {
			return f.store.Save(state.PartitionsRecord, known)
		}
		return nil
	})
}

// partitionEvery is how often the loop reads the partitions: as often as
// the publication watcher looks.
func (f *Follower) partitionEvery() time.Duration {
	return min(max(5*f.cfg.Capture.StatusInterval, time.Second), 10*time.Second)
}

// checkPartitions rebuilds inline every index whose partitions changed,
// between two groups: rebuild_start, every document, rebuild_done, at the
// LSN of the last group written (the stream goes on after it; documents of
// later commits are built after the rebuild, from a newer state). The new
// fingerprint is saved once the rebuild is flushed.
func (f *Follower) checkPartitions(ctx context.Context) error {
	return f.retry(ctx, stageRebuild, func(ctx context.Context) error { return f.comparePartitions(ctx, f.pool) })
}

// comparePartitions is one look of checkPartitions, without its retry,
// reading the partitions through q.
func (f *Follower) comparePartitions(ctx context.Context, q build.Querier) error {
	now, err := f.partitionsOf(ctx, q)
	if err != nil {
		return err
	}
	var changed []*build.Index
	grown := false // only new leaves whose rows are in the stream: nothing to rebuild
	for _, ix := range f.plan.Indexes {
		old, ok := f.parts[ix.Name()]
		if !ok || old == now[ix.Name()] {
			continue
		}
		if old == partsUnsure {
			changed = append(changed, ix)
			continue
		}
		streamed, err := onlyStreamedLeavesAdded(ctx, f, old, now[ix.Name()])
		if err != nil {
			return err
		}
		if streamed {
			f.parts[ix.Name()] = now[ix.Name()]
			grown = true
			continue
		}
		changed = append(changed, ix)
	}
	if len(changed) == 0 {
		if grown {
			return f.saveParts()
		}
		return nil
	}
	f.em.reset()
	names := make([]string, len(changed))
	for i, ix := range changed {
		names[i] = ix.Name()
	}
	if err := f.reloadKeyMap(ctx, names, true); err != nil {
		return err
	}
	for _, ix := range changed {
		f.log.Info("a partition of a table the index reads was truncated, attached, detached or dropped (not in the logical stream): writing every document again",
			zap.String("index", ix.Name()), zap.Stringer("lsn", f.inlineLSN()))
		if err := f.rebuildReplanned(ctx, ix, f.inlineLSN(), now[ix.Name()]); err != nil {
			return err
		}
	}
	if _, err := f.em.flush(); err != nil {
		return err
	}
	for _, ix := range changed {
		if f.parts[ix.Name()] != partsUnsure {
			f.parts[ix.Name()] = now[ix.Name()]
		}
	}
	return f.saveParts()
}

// lookBeforeBuild looks at the partitions again when the group changes a
// partitioned table, after its transactions are visible (the look is the
// group's first read, through its gate q: behind the visibility check) and
// before any of its documents is built. A leaf made, written and detached (or dropped,
// or truncated) between two periodic looks is in neither fingerprint, yet
// the rows the stream carried from it may be in the documents. Looking
// here closes that: either this look sees the leaf, so its fingerprint
// holds it and the detach that follows is seen by a later look, or the
// leaf is gone already, and the documents built next (from a newer
// snapshot) do not read it. A group that changes no partitioned table
// (or a plan without one) costs nothing; one that does costs one catalog
// query. Spilled transactions are not read twice: they look anyway.
func (f *Follower) lookBeforeBuild(ctx context.Context, q build.Querier, txns []*wal.Txn) error {
	if len(f.partitioned) == 0 {
		return nil
	}
	touches := false
	for _, t := range txns {
		if t.Spilled() {
			touches = true
			break
		}
		errTouches := errors.New("touches")
		err := t.Each(1<<30, func(rows []change.Row) error {
			for i := range rows {
				if f.partitioned[rows[i].Table.String()] {
					return errTouches
				}
			}
			return nil
		})
		if err == errTouches {
			touches = true
			break
		}
		if err != nil {
			return err
		}
	}
	if !touches {
		return nil
	}
	return f.comparePartitions(ctx, q)
}

// inlineLSN is the "lsn" of an inline rebuild's lines: the last group's
// commit, or the newest line written when a group in hand has written
// lines already (a column dropped under it), so "lsn" never decreases.
func (f *Follower) inlineLSN() pglogrepl.LSN {
	return max(f.lineLSN, f.em.written)
}

// onlyStreamedLeavesAdded reports whether now differs from old (two
// fingerprints of readPartitions) only by new leaves that were never
// truncated (their relfilenode is still their oid) and hold no row older
// than their pg_inherits row: the usual CREATE TABLE ... PARTITION OF of a
// time-partitioned table, whose rows, written by later transactions, are
// in the stream. Rebuilding for it would rewrite every document each time
// a partition is made. A new leaf already gone again, or emptied by a
// TRUNCATE (neither is in the stream), may have had rows the stream
// carried; a table attached with rows written before the ATTACH (or in
// its transaction) has rows the stream never carried: those rebuild. (A
// leaf created, written and truncated in one transaction keeps its
// relfilenode: not told apart.) One row is read per new leaf, only when
// the leaves changed.
func onlyStreamedLeavesAdded(ctx context.Context, f *Follower, old, now string) (bool, error) {
	before, after := leafNodes(old), leafNodes(now)
	for oid, node := range before {
		if after[oid] != node {
			return false, nil // truncated, detached, dropped or rewritten
		}
	}
	for oid, node := range after {
		if _, ok := before[oid]; ok {
			continue
		}
		rel, inherits, _ := strings.Cut(node, ":")
		if rel != "" && rel != oid {
			return false, nil // a leaf truncated (or rewritten) since it was made
		}
		if inherits == "" || inherits == "0" || inherits == "1" || inherits == "2" {
			return false, nil // no pg_inherits row, or frozen already: its age tells nothing
		}
		// (Not to_regclass of the oid as text: an all-digit name is taken
		// as an oid, existing or not.)
		var name *string
		if err := f.pool.QueryRow(ctx, "SELECT (SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = $1::oid)", oid).Scan(&name); err != nil {
			return false, err
		}
		if name == nil {
			return false, nil // gone again: its rows may be in the documents
		}
		// A row not newer than the partition's pg_inherits row was written
		// before it was attached, or in the same transaction (a frozen xmin
		// is the oldest of all): not in the stream.
		var older bool
		if err := f.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM ONLY "+*name+" WHERE age(xmin) >= age($1::text::xid))", inherits).Scan(&older); err != nil {
			if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42P01" {
				return false, nil // dropped since to_regclass found it: gone again
			}
			return false, err
		}
		if older {
			return false, nil // attached with rows the stream never carried
		}
	}
	return true, nil
}

// leafNodes reads a fingerprint ("table=oid:node:xmin,...;...") as oid →
// "node:xmin".
func leafNodes(fp string) map[string]string {
	m := map[string]string{}
	for _, part := range strings.Split(fp, ";") {
		_, leaves, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		for _, l := range strings.Split(leaves, ",") {
			if oid, node, ok := strings.Cut(l, ":"); ok {
				m[oid] = node
			}
		}
	}
	return m
}
