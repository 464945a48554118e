package snapshot

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/change"
)

// exactLimit is the estimated row count up to which range boundaries are
// exact quantiles of the keys (one pass over the key: about a second per
// million rows); above it they come from a block sample (TABLESAMPLE
// SYSTEM), which reads a small part of the table whatever its size.
const exactLimit = 200_000

// sampleRows is how many keys per range the block sample aims for.
const sampleRows = 1000

// rangeCount is how many key ranges an index is cut into: a few per worker,
// so a worker that finishes early takes another range rather than waiting,
// and more for big tables (at most ~1M rows a range), so a resume with more
// workers still has ranges to share. A range holds at least four batches.
func rangeCount(estimate int64, workers, batch int) int {
	n := max(workers*4, 8, int(estimate/1_000_000))
	n = min(n, 1024)
	if byBatch := int(estimate / int64(4*batch)); n > byBatch {
		n = byBatch
	}
	return max(n, 1)
}

// estimateRows estimates the root table's rows as the planner does: the
// density of the last ANALYZE or VACUUM (pg_class.reltuples / relpages)
// times the table's pages now. A table never analyzed, or analyzed while
// empty, is counted. A partitioned table sums its partitions' reltuples.
func estimateRows(ctx context.Context, q build.Querier, ix *build.Index) (int64, error) {
	var n float64
	err := q.QueryRow(ctx, `SELECT CASE
	    WHEN c.relkind = 'p' THEN coalesce((SELECT sum(greatest(p.reltuples, 0)) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid WHERE i.inhparent = c.oid), -1)
	    WHEN c.reltuples < 0 OR c.relpages = 0 THEN CASE WHEN pg_relation_size(c.oid) = 0 THEN 0 ELSE -1 END
	    ELSE c.reltuples / c.relpages * greatest(pg_relation_size(c.oid) / current_setting('block_size')::int, 1)
	  END::float8
	  FROM pg_class c WHERE c.oid = $1::regclass`, ix.Root().Quoted()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("index %s: estimate the rows of %s: %w", ix.Name(), ix.Root(), err)
	}
	if n >= 0 {
		return int64(n), nil
	}
	var count int64
	if err := q.QueryRow(ctx, "SELECT count(*) FROM "+ix.Root().Quoted()).Scan(&count); err != nil {
		return 0, fmt.Errorf("index %s: count the rows of %s: %w", ix.Name(), ix.Root(), err)
	}
	return count, nil
}

// planRanges cuts the root's key space into about want ranges that chain:
// (nil, b1], (b1, b2], ..., (bk, nil].
func planRanges(ctx context.Context, q build.Querier, ix *build.Index, estimate int64, want, exact int64) ([]*keyRange, error) {
	table := ix.Root().Quoted()
	cols := make([]string, len(ix.KeyColumns()))
	texts := make([]string, len(cols))
	for i, c := range ix.KeyColumns() {
		cols[i] = change.QuoteIdent(c)
		// Aliased: an output column named like the key would make ORDER BY
		// sort by the text.
		texts[i] = cols[i] + "::text AS k" + strconv.Itoa(i)
	}
	keys := strings.Join(cols, ", ")
	if want <= 1 || estimate < want {
		return []*keyRange{{}}, nil
	}
	var sql string
	var pick func([]build.Key) []build.Key
	if estimate <= exact {
		// Every step-th key in key order: the boundaries are exact quantiles.
		step := (estimate + want - 1) / want
		sql = "SELECT " + strings.Join(texts, ", ") + " FROM (SELECT " + keys + ", row_number() OVER (ORDER BY " + keys + ") AS rn FROM " + table + ") s" +
			" WHERE rn % " + strconv.FormatInt(step, 10) + " = 0 AND rn < " + strconv.FormatInt(step*want, 10) + " ORDER BY rn"
		pick = func(ks []build.Key) []build.Key { return ks }
	} else {
		// A block sample of about sampleRows keys per range, sorted; every
		// len/want-th key is a boundary.
		pct := min(100, 100*float64(sampleRows*want)/float64(estimate))
		sql = "SELECT " + strings.Join(texts, ", ") + " FROM " + table + " TABLESAMPLE SYSTEM (" + strconv.FormatFloat(pct, 'f', 6, 64) + ") ORDER BY " + keys
		pick = func(ks []build.Key) []build.Key {
			var out []build.Key
			for i := int64(1); i < want; i++ {
				out = append(out, ks[int64(len(ks))*i/want])
			}
			return out
		}
	}
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("index %s: plan key ranges of %s: %w", ix.Name(), ix.Root(), err)
	}
	var sample []build.Key
	for rows.Next() {
		raw := rows.RawValues()
		k := make(build.Key, len(raw))
		for i, v := range raw {
			k[i] = string(v)
		}
		sample = append(sample, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("index %s: plan key ranges of %s: %w", ix.Name(), ix.Root(), err)
	}
	if len(sample) == 0 {
		return []*keyRange{{}}, nil
	}
	var bounds []build.Key
	for _, k := range pick(sample) {
		if len(bounds) == 0 || !equalKey(bounds[len(bounds)-1], k) {
			bounds = append(bounds, k)
		}
	}
	out := make([]*keyRange, 0, len(bounds)+1)
	var after build.Key
	for _, b := range bounds {
		out = append(out, &keyRange{After: after, UpTo: b})
		after = b
	}
	return append(out, &keyRange{After: after}), nil
}
