package follow

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// Partition maintenance is not in the logical stream when the publication
// publishes through the partition root: pgoutput skips a TRUNCATE of a leaf
// (it sends the published root's truncates only), and ATTACH, DETACH and
// DROP of a partition write no change at all. So flusso-pg looks instead:
// every index that reads a partitioned table has a fingerprint, each leaf
// of those tables with its relfilenode (a TRUNCATE gives a leaf a new one;
// an attach, a detach or a drop changes the set of leaves). The loop reads
// it every few seconds and when it changed rebuilds the index inline. The
// fingerprint an index was last rebuilt with is kept in the state dir, so a
// change while flusso-pg was stopped, or a rebuild cut short by a crash, is
// rebuilt at the next start. (A VACUUM FULL or CLUSTER of a leaf changes its
// relfilenode too: one rebuild more, never a wrong document.)

// partitionsSQL gives, per partitioned table of $1 (table names as SQL),
// its leaves with their relfilenodes; a table that is not partitioned (or
// does not exist) gives no row.
const partitionsSQL = `SELECT r.t, coalesce(string_agg(c.oid::text || ':' || c.relfilenode::text, ',' ORDER BY c.oid) FILTER (WHERE p.isleaf), '')
FROM unnest($1::text[]) AS r(t)
JOIN pg_catalog.pg_class root ON root.oid = to_regclass(r.t) AND root.relkind = 'p'
CROSS JOIN LATERAL pg_catalog.pg_partition_tree(root.oid) p
LEFT JOIN pg_catalog.pg_class c ON c.oid = p.relid
GROUP BY r.t`

// readPartitions gives, per index, the fingerprint of the partitions of the
// partitioned tables it reads ("" when it reads none).
func (f *Follower) readPartitions(ctx context.Context) (map[string]string, error) {
	var names []string
	for _, t := range f.plan.Tables() {
		names = append(names, t.String())
	}
	rows, err := f.pool.Query(ctx, partitionsSQL, names)
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
	return f.retry(ctx, stageRebuild, func(ctx context.Context) error {
		now, err := f.readPartitions(ctx)
		if err != nil {
			return err
		}
		var changed []*build.Index
		grown := false // only new leaves without rows: nothing to rebuild
		for _, ix := range f.plan.Indexes {
			old, ok := f.parts[ix.Name()]
			if !ok || old == now[ix.Name()] {
				continue
			}
			empty, err := onlyEmptyLeavesAdded(ctx, f, old, now[ix.Name()])
			if err != nil {
				return err
			}
			if empty {
				f.parts[ix.Name()] = now[ix.Name()]
				grown = true
				continue
			}
			changed = append(changed, ix)
		}
		if len(changed) == 0 {
			if grown {
				return f.store.Save(state.PartitionsRecord, f.parts)
			}
			return nil
		}
		f.em.reset()
		for _, ix := range changed {
			f.log.Info("a partition of a table the index reads was truncated, attached, detached or dropped (not in the logical stream): writing every document again",
				zap.String("index", ix.Name()), zap.Stringer("lsn", f.inlineLSN()))
			if err := f.rebuild(ctx, ix, f.inlineLSN()); err != nil {
				return err
			}
		}
		if _, err := f.em.flush(); err != nil {
			return err
		}
		for _, ix := range changed {
			f.parts[ix.Name()] = now[ix.Name()]
		}
		return f.store.Save(state.PartitionsRecord, f.parts)
	})
}

// inlineLSN is the "lsn" of an inline rebuild's lines: the last group's
// commit, or the newest line written when a group in hand has written
// lines already (a column dropped under it), so "lsn" never decreases.
func (f *Follower) inlineLSN() pglogrepl.LSN {
	return max(f.lineLSN, f.em.written)
}

// onlyEmptyLeavesAdded reports whether now differs from old (two
// fingerprints of readPartitions) only by new leaves that hold no row: the
// usual CREATE TABLE ... PARTITION OF of a time-partitioned table, whose
// rows, once written, are in the stream. Rebuilding for it would rewrite
// every document each time a partition is made. One row is read per new
// leaf, only when the leaves changed.
func onlyEmptyLeavesAdded(ctx context.Context, f *Follower, old, now string) (bool, error) {
	before, after := leafNodes(old), leafNodes(now)
	for oid, node := range before {
		if after[oid] != node {
			return false, nil // truncated, detached, dropped or rewritten
		}
	}
	for oid := range after {
		if _, ok := before[oid]; ok {
			continue
		}
		var name *string
		if err := f.pool.QueryRow(ctx, "SELECT to_regclass($1::oid::regclass::text)::text", oid).Scan(&name); err != nil {
			return false, err
		}
		if name == nil {
			continue // gone again: nothing of it is in the documents
		}
		var rows bool
		if err := f.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM ONLY "+*name+")").Scan(&rows); err != nil {
			return false, err
		}
		if rows {
			return false, nil // attached with rows
		}
	}
	return true, nil
}

// leafNodes reads a fingerprint ("table=oid:node,...;...") as oid → node.
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
