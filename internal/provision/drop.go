package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/keymap"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// ErrSlotActive is returned by Drop when another process streams from the slot.
var ErrSlotActive = errors.New("the replication slot is in use")

// DropPlan is what `flusso-pg drop` would remove, read before asking.
type DropPlan struct {
	Database    string
	Slot        *SlotInfo // nil when there is no such slot
	Publication string
	// PublicationExists: the publication is there. PublicationCreated: the
	// state store records that flusso-pg created it, so drop removes it.
	PublicationExists  bool
	PublicationCreated bool
	// Records are the slot's records present in the state dir.
	Records []string

	slotName string
}

// PlanDrop reads what there is to drop for cfg's slot and publication.
func PlanDrop(ctx context.Context, q Conn, cfg *config.Config, store *state.Store) (*DropPlan, error) {
	p := &DropPlan{Publication: cfg.Source.Publication, slotName: cfg.Source.Slot}
	var version int
	if err := q.QueryRow(ctx, `SELECT current_database(), current_setting('server_version_num')::int / 10000,
  EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`, p.Publication).Scan(&p.Database, &version, &p.PublicationExists); err != nil {
		return nil, fmt.Errorf("read the database: %w", err)
	}
	var err error
	if p.Slot, err = ReadSlot(ctx, q, cfg.Source.Slot, version); err != nil {
		return nil, fmt.Errorf("read slot %s: %w", cfg.Source.Slot, err)
	}
	var rec state.Publication
	ok, err := store.Load(state.PublicationRecord, &rec)
	if err != nil {
		return nil, err
	}
	p.PublicationCreated = ok && rec.Created && rec.Name == p.Publication
	for _, r := range []string{state.IdentityRecord, state.BackfillRecord, state.PublicationRecord} {
		if _, err := os.Stat(filepath.Join(store.Dir, store.Slot+"."+r+".json")); err == nil {
			p.Records = append(p.Records, r)
		}
	}
	if _, err := os.Stat(keymap.Dir(store.Dir, store.Slot)); err == nil {
		p.Records = append(p.Records, "keymap")
	}
	return p, nil
}

// Nothing reports whether there is nothing to drop: no slot, no publication
// flusso-pg created, no state records.
func (p *DropPlan) Nothing() bool {
	return p.Slot == nil && !(p.PublicationExists && p.PublicationCreated) && len(p.Records) == 0
}

// Check returns an error when the plan cannot be carried out: the slot is
// in use (ErrSlotActive), or it belongs to another database or plugin.
func (p *DropPlan) Check() error {
	s := p.Slot
	switch {
	case s == nil:
		return nil
	case s.Active:
		return fmt.Errorf("%w: slot %s is streaming to process %d (a running flusso-pg follow?): stop that process first, or end it with SELECT pg_terminate_backend(%d); then run drop again",
			ErrSlotActive, s.Name, s.ActivePID, s.ActivePID)
	case s.Type != "logical" || s.Plugin != "pgoutput":
		return fmt.Errorf("slot %s is a %s slot with plugin %q, not a pgoutput slot flusso-pg created: not dropping it (drop it yourself with SELECT pg_drop_replication_slot(%s);)",
			s.Name, s.Type, s.Plugin, change.QuoteLiteral(s.Name))
	case s.Database != p.Database:
		return fmt.Errorf("slot %s belongs to database %s, not %s: not dropping it (connect to %s to drop it)", s.Name, s.Database, p.Database, s.Database)
	}
	return nil
}

// Describe lists what Drop will do and keep, one line each, for the
// confirmation prompt.
func (p *DropPlan) Describe() []string {
	var out []string
	if p.Slot != nil {
		out = append(out, fmt.Sprintf("drop replication slot %s (retains %s of WAL); the next follow starts over with a full backfill", p.Slot.Name, bytes(p.Slot.Retained)))
	} else {
		out = append(out, fmt.Sprintf("slot %s does not exist", p.slotName))
	}
	switch {
	case p.PublicationExists && p.PublicationCreated:
		out = append(out, fmt.Sprintf("drop publication %s (flusso-pg created it)", p.Publication))
	case p.PublicationExists:
		out = append(out, fmt.Sprintf("keep publication %s: flusso-pg did not create it (drop it yourself with DROP PUBLICATION %s;)", p.Publication, change.QuoteIdentIfNeeded(p.Publication)))
	}
	if len(p.Records) > 0 {
		out = append(out, fmt.Sprintf("remove the slot's state records (%s)", strings.Join(p.Records, ", ")))
	}
	return out
}

// Drop removes the slot, the publication when flusso-pg created it, and
// the slot's state records (identity, backfill progress, publication, the
// key map). It
// returns what it did, one line each.
func Drop(ctx context.Context, q Conn, p *DropPlan, store *state.Store, log *zap.Logger) ([]string, error) {
	log = log.With(zap.String("component", "provision"))
	if err := p.Check(); err != nil {
		return nil, err
	}
	var done []string
	if p.Slot != nil {
		if _, err := q.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, p.Slot.Name); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use: it became active meanwhile
				return done, fmt.Errorf("%w: %s: stop the process streaming from it first", ErrSlotActive, pgErr.Message)
			}
			if !(errors.As(err, &pgErr) && pgErr.Code == "42704") { // undefined_object: already gone
				return done, fmt.Errorf("drop slot %s: %w", p.Slot.Name, err)
			}
		}
		log.Info("dropped the replication slot", zap.String("slot", p.Slot.Name))
		done = append(done, "dropped replication slot "+p.Slot.Name)
	}
	if p.PublicationExists && p.PublicationCreated {
		if _, err := q.Exec(ctx, "DROP PUBLICATION IF EXISTS "+change.QuoteIdent(p.Publication)); err != nil {
			return done, fmt.Errorf("drop publication %s: %w (the slot is dropped; run drop again, or DROP PUBLICATION %s; as its owner)", p.Publication, err, change.QuoteIdentIfNeeded(p.Publication))
		}
		log.Info("dropped the publication", zap.String("publication", p.Publication))
		done = append(done, "dropped publication "+p.Publication)
	} else if p.PublicationExists {
		done = append(done, fmt.Sprintf("kept publication %s: flusso-pg did not create it", p.Publication))
	}
	for _, r := range []string{state.IdentityRecord, state.BackfillRecord, state.PublicationRecord} {
		if err := store.Remove(r); err != nil {
			return done, fmt.Errorf("remove state record %s: %w", r, err)
		}
	}
	if err := os.RemoveAll(keymap.Dir(store.Dir, store.Slot)); err != nil {
		return done, fmt.Errorf("remove the key map: %w", err)
	}
	if len(p.Records) > 0 {
		done = append(done, fmt.Sprintf("removed the state records of slot %s from %s", p.slotName, store.Dir))
	}
	return done, nil
}
