package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// Conn runs queries and statements: *pgx.Conn and *pgxpool.Pool satisfy it.
type Conn interface {
	build.Querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Ensure makes the publication ready before the slot is created (a slot
// created before its publication cannot decode it), as source.provision says:
//
//   - auto: create the publication for exactly the tables the indexes read
//     when it is missing, add the tables it lacks, then check again. It never
//     drops or narrows anything, never changes a publication's options, and
//     never adds a table without a replica identity (that would make
//     Postgres refuse UPDATE and DELETE on it). When it creates the
//     publication it records so in the state store, for `drop`.
//   - check: change nothing; refuse to start with the report's failures.
//   - off: assume all is well; check nothing.
//
// It returns the report of the final check (nil with off), and an error
// wrapping ErrNotReady, listing every failure with its fix, when the
// database is not ready. The slot's own verdicts (invalidated, another
// plugin) are left to capture, which owns the slot and --resync. plan may be nil.
func Ensure(ctx context.Context, conn Conn, cfg *config.Config, plan *build.Plan, store *state.Store, log *zap.Logger) (*Report, error) {
	return EnsureWith(ctx, conn, cfg, plan, store, log, nil)
}

// EnsureWith is Ensure with beforeAdd, when not nil, called with the
// indexes that read the tables auto is about to add to the publication (or
// create it with), before it does: a follow resuming a slot records there
// that those indexes are rebuilt, since their changes made while the
// tables were out never reached the slot's stream. An error of beforeAdd
// adds nothing.
func EnsureWith(ctx context.Context, conn Conn, cfg *config.Config, plan *build.Plan, store *state.Store, log *zap.Logger, beforeAdd func(indexes []string) error) (*Report, error) {
	log = log.With(zap.String("component", "provision"))
	mode := cfg.Source.Provision
	if mode == config.ProvisionOff {
		log.Info("provision is off: not checking the publication, privileges or settings")
		return nil, nil
	}
	in, err := inspect(ctx, conn, cfg, plan)
	if err != nil {
		return nil, err
	}
	if mode != config.ProvisionAuto {
		return in.r, in.r.err(CheckSlot)
	}
	apply := func() ([]string, error) {
		if in.standby { // ha.go: the publication is made on the primary
			return in.ensureOnStandby(ctx, conn, plan, store, log)
		}
		in.beforeAdd = beforeAdd
		return in.apply(ctx, conn, store, log)
	}
	actions, err := apply()
	if raced(err) {
		// Another flusso-pg (another slot on the same publication) created
		// it or added the table a moment ago: look again and go on from
		// there.
		if in, err = inspect(ctx, conn, cfg, plan); err != nil {
			return nil, err
		}
		actions, err = apply()
	}
	if err != nil {
		return in.r, err
	}
	if len(actions) > 0 {
		// Check again: the report must say what the database is now.
		if in, err = inspect(ctx, conn, cfg, plan); err != nil {
			return nil, err
		}
		in.r.Actions = actions
	}
	for _, w := range in.r.Warnings() {
		log.Warn(w.line(), zap.String("check", w.Check), zap.String("fix", w.Fix))
	}
	return in.r, in.r.err(CheckSlot)
}

// raced reports whether err is a publication created, or a table added to
// it, by someone else between the look and the statement: a unique
// violation on the publication's name (23505) or an object that already
// exists (42710).
func raced(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42710")
}

// apply creates or extends the publication with the tables flusso-pg may
// add, and returns the statements it ran.
func (in *inspection) apply(ctx context.Context, conn Conn, store *state.Store, log *zap.Logger) ([]string, error) {
	if in.pub != nil && in.pub.AllTables {
		return nil, nil
	}
	var add []*table
	for _, t := range in.missing() {
		if in.addable(t) {
			add = append(add, t)
		}
	}
	if len(add) == 0 {
		return nil, nil
	}
	if in.beforeAdd != nil {
		var readers []string
		for _, t := range add {
			for _, ix := range t.Indexes {
				if !slices.Contains(readers, ix) {
					readers = append(readers, ix)
				}
			}
		}
		if err := in.beforeAdd(readers); err != nil {
			return nil, err
		}
	}
	name := in.cfg.Source.Publication
	var rec state.Publication
	had, err := store.Load(state.PublicationRecord, &rec)
	if err != nil {
		return nil, err
	}
	if in.pub == nil {
		viaRoot := slices.ContainsFunc(add, func(t *table) bool { return t.Kind == "p" })
		sql := createSQL(name, add, viaRoot)
		if _, err := conn.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("create publication %s: %w (to do it by hand: %s)", name, err, sql)
		}
		log.Info("created the publication", zap.String("publication", name), zap.String("tables", tableList(add)))
		// Recorded right after the statement: if the record cannot be
		// written, `drop` keeps the publication, which is the safe side.
		if err := store.Save(state.PublicationRecord, state.Publication{Name: name, Created: true, At: time.Now().UTC()}); err != nil {
			return []string{sql}, fmt.Errorf("created publication %s but could not record it (flusso-pg drop will keep it): %w", name, err)
		}
		return []string{sql}, nil
	}
	sql := addSQL(name, add)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return nil, fmt.Errorf("add tables to publication %s: %w (to do it by hand: %s)", name, err, sql)
	}
	log.Info("added tables to the publication", zap.String("publication", name), zap.String("tables", tableList(add)))
	if !had || rec.Name != name {
		if err := store.Save(state.PublicationRecord, state.Publication{Name: name, Created: false, At: time.Now().UTC()}); err != nil {
			return []string{sql}, fmt.Errorf("record publication %s: %w", name, err)
		}
	}
	return []string{sql}, nil
}
