package follow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/fault"
	"github.com/flusso-pg/flusso-pg/internal/snapshot"
)

// A node whose columns are left to the default writes every column of its
// table, as the catalog had them when the plan was compiled. A column added
// (or an unused one dropped) while following changes what the document
// query gives, and the WAL never says so for the rows it does not touch. So
// the loop reads, every few seconds, the columns of the tables the indexes
// read; when they changed it compiles the plan again and rebuilds inline
// every index whose document query is now another: every document in the
// new shape. A change that leaves the queries as they were (a column of a
// table whose columns are listed, or a table's column nobody reads) costs
// no rebuild. A change the new plan refuses (a needed column dropped or
// retyped) keeps the plan: capture stops on it, naming the column and the
// fix (wal's relation checks). The backfill's fingerprint of an index
// covers its default columns too, so a column added while flusso-pg was
// stopped (or a rebuild cut short) backfills the index again at the next
// start: never two shapes in one index.

// columnsSQL gives one string for the columns of the tables $1 (names as
// SQL): any column added, dropped, renamed or retyped changes it.
const columnsSQL = `SELECT coalesce(string_agg(a.attrelid::text || '.' || a.attnum || ':' || a.attname || ':' || a.atttypid || ':' || a.atttypmod, ',' ORDER BY a.attrelid, a.attnum), '')
FROM unnest($1::text[]) AS r(t) JOIN pg_catalog.pg_attribute a ON a.attrelid = to_regclass(r.t)
WHERE a.attnum > 0 AND NOT a.attisdropped`

// checkSchema compiles the plan again when the tables' columns changed,
// and rebuilds the indexes whose document query changed with it. The first
// call (at the start of the stream) always compiles: the backfill may have
// run on columns that changed since the plan was compiled.
func (f *Follower) checkSchema(ctx context.Context) error {
	return f.retry(ctx, stageRebuild, func(ctx context.Context) error {
		var names []string
		for _, t := range f.plan.Tables() {
			names = append(names, t.String())
		}
		var cols string
		if err := f.pool.QueryRow(ctx, columnsSQL, names).Scan(&cols); err != nil {
			return fmt.Errorf("read the columns of the tables the indexes read: %w", err)
		}
		if f.columnsRead && cols == f.columns {
			return nil
		}
		plan, problems, err := build.Compile(ctx, f.pool, f.cfg)
		if err != nil {
			return err
		}
		if err := build.Problems(problems).Err(); err != nil {
			// Capture stops on a needed column gone or retyped; until
			// then the plan in hand stays.
			f.log.Warn("the tables' columns changed and the config no longer compiles against them", zap.Error(err))
			f.columns, f.columnsRead = cols, true
			return nil
		}
		old := map[string]string{}
		for _, ix := range f.plan.Indexes {
			old[ix.Name()] = ix.DocumentSQL()
		}
		var changed []*build.Index
		for _, ix := range plan.Indexes {
			if old[ix.Name()] != ix.DocumentSQL() {
				changed = append(changed, ix)
			}
		}
		if len(changed) == 0 {
			f.plan = plan
			f.columns, f.columnsRead = cols, true
			return nil
		}
		f.em.reset()
		for _, ix := range changed {
			f.log.Info("the columns of a table the index reads with its default column list changed: writing every document again in the new shape",
				zap.String("index", ix.Name()), zap.Stringer("lsn", f.inlineLSN()))
			if err := f.rebuild(ctx, ix, f.inlineLSN()); err != nil {
				if undefinedColumn(err) {
					// A column of the new plan dropped meanwhile (added
					// and dropped in quick succession): compile again.
					f.columnsRead = false
					return fault.MarkTransient(err)
				}
				return err
			}
		}
		if _, err := f.em.flush(); err != nil {
			return err
		}
		// The plan changes once its rebuilds are written: a rebuild cut
		// short is run again, from a new compile.
		f.plan = plan
		f.columns, f.columnsRead = cols, true
		return f.saveWhenSafe(func() error {
			for _, ix := range changed {
				if err := snapshot.Rebuilt(f.store, ix); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// checkCatalog rebuilds what the WAL cannot vouch for: indexes whose
// default columns or whose partitions changed, and those reading a table
// back in the publication.
func (f *Follower) checkCatalog(ctx context.Context) error {
	if err := f.runAckedSaves(); err != nil {
		return err
	}
	if err := f.runRebuilds(ctx); err != nil {
		return err
	}
	if err := f.checkSchema(ctx); err != nil {
		return err
	}
	return f.checkPartitions(ctx)
}

// replanned looks at a group's error: a column the document query names
// that is gone (an unused column of a default column list, dropped before
// the next look at the catalog) compiles the plan again, and the group runs
// again with it (the error is made transient). Any other error is as it was.
//
// The columns are always read again (a look at them may have raced with
// the drop); a compile that gives the same plan makes the error transient
// too, a few times: the catalog and the query may still disagree for a
// moment; a column that stays missing is permanent.
func (f *Follower) replanned(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if !undefinedColumn(err) || !errors.As(err, &pgErr) {
		return err
	}
	before := f.plan
	f.columnsRead = false
	if cerr := f.checkSchema(ctx); cerr != nil {
		return err
	}
	if f.plan == before {
		if time.Since(f.replansSince) > 2*time.Minute {
			f.replans, f.replansSince = 0, time.Now()
		}
		if f.replans++; f.replans > 5 {
			return err
		}
		return fault.MarkTransient(err)
	}
	f.log.Info("the plan was compiled again after a column was dropped: writing the group again", zap.String("error", pgErr.Message))
	return fault.MarkTransient(err)
}

// rebuildReplanned is rebuild for the inline rebuilds outside checkSchema
// (partitions, tables back in the publication): a column of the plan in
// hand gone (an unused one of a default column list, dropped before the
// next look at the catalog) compiles the plan again first (checkSchema
// rebuilds what changed shape), and the error is made transient so the
// caller runs again with the new plan.
func (f *Follower) rebuildReplanned(ctx context.Context, ix *build.Index, lsn pglogrepl.LSN, want string) error {
	err := f.rebuildFrom(ctx, ix, lsn, want)
	if !undefinedColumn(err) {
		return err
	}
	f.columnsRead = false
	if cerr := f.checkSchema(ctx); cerr != nil {
		return cerr
	}
	return fault.MarkTransient(err)
}

// undefinedColumn: err is Postgres' undefined_column.
func undefinedColumn(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42703"
}
