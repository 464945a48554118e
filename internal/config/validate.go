package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// Validate checks what can be checked without a database: names, kinds,
// required keys and clashes. Every problem is reported at once, one line each,
// naming the index and the path of the bad key. Checks against the live
// catalog (tables, columns, types, replica identity) live in internal/build.
func (c *Config) Validate() error {
	return c.validate(nil)
}

// validate is Validate with messages that say where a value came from:
// label turns a key path into "line 12: path" or "path (from FLUSSO_...)".
// Bounds of the scalar keys: beyond them a setting only hurts (one query
// building millions of documents at once, thousands of connections, every
// transaction spilled to disk).
const (
	MaxBatchSize    = 100_000
	MaxWorkers      = 256
	MaxBuildWorkers = 64
	MinMemoryBudget = 64 << 10
)

func (c *Config) validate(label func(path string) string) error {
	v := validator{label: label}
	switch c.Source.Provision {
	case ProvisionAuto, ProvisionCheck, ProvisionOff:
	default:
		v.add("source.provision", "%q is not one of auto, check, off", c.Source.Provision)
	}
	switch c.Capture.KeyMap {
	case KeyMapAuto, KeyMapOff, "":
	default:
		v.add("capture.key_map", "%q is not one of auto, off", c.Capture.KeyMap)
	}
	switch c.Source.Failover {
	case FailoverAuto, FailoverOn, FailoverOff, "":
	default:
		v.add("source.failover", "%q is not one of auto, on, off", c.Source.Failover)
	}
	if !slotName.MatchString(c.Source.Slot) {
		v.add("source.slot", "%q is not a valid slot name: use 1 to 63 lower-case letters, digits and underscores", c.Source.Slot)
	}
	if c.Source.Publication == "" {
		v.add("source.publication", "must not be empty")
	}
	if c.Output.Path == "" {
		v.add("output.path", `must not be empty: use "-" for stdout or a file path`)
	}
	c.Output.validate(&v)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		v.add("log.format", "%q is not one of console, json", c.Log.Format)
	}
	c.validateTuning(&v)
	if len(c.Indexes) == 0 {
		v.add("indexes", "no index is configured: add at least one under indexes:")
	}
	names := map[string]bool{}
	for i := range c.Indexes {
		ix := &c.Indexes[i]
		path := fmt.Sprintf("index %q", ix.Name)
		if ix.Name == "" {
			path = fmt.Sprintf("indexes[%d]", i)
			v.add(path+".name", "missing: every index needs a name, written on every line")
		} else if names[ix.Name] {
			v.add(path+".name", "index name %q is used twice", ix.Name)
		}
		names[ix.Name] = true
		v.table(path+".table", ix.Table)
		v.columnList(path+".key", ix.Key)
		v.columnList(path+".columns", ix.Columns)
		v.renames(path, ix.Columns, ix.Rename)
		v.fields(path, ix.Columns, ix.Rename, ix.Fields, ix.Relations, ix.Aggregates)
		for j := range ix.Relations {
			v.relation(relPath(path, j, ix.Relations[j].Name), &ix.Relations[j])
		}
		for j := range ix.Aggregates {
			v.aggregate(aggPath(path, j, ix.Aggregates[j].Name), &ix.Aggregates[j])
		}
	}
	return v.err()
}

// validateTuning checks the backfill's and capture's numbers and sizes.
func (c *Config) validateTuning(v *validator) {
	if c.Backfill.BatchSize == 0 || c.Backfill.BatchSize > MaxBatchSize {
		v.add("backfill.batch_size", "must be from 1 to %d", MaxBatchSize)
	}
	if c.Capture.BatchSize == 0 || c.Capture.BatchSize > MaxBatchSize {
		v.add("capture.batch_size", "must be from 1 to %d", MaxBatchSize)
	}
	if c.Capture.BuildWorkers > MaxBuildWorkers {
		v.add("capture.build_workers", "must be from 0 (the number of CPUs) to %d", MaxBuildWorkers)
	}
	if c.Backfill.Workers > MaxWorkers {
		v.add("backfill.workers", "must be from 0 (the number of CPUs) to %d", MaxWorkers)
	}
	if c.Capture.MemoryBudget > 0 && c.Capture.MemoryBudget < MinMemoryBudget {
		v.add("capture.memory_budget", "must be at least 64KiB (smaller spills every transaction to disk)")
	}
	if c.Capture.KeyMapCache < MinKeyMapCache {
		v.add("capture.key_map_cache", "must be at least 1MiB")
	}
}

type validator struct {
	errs  []string
	label func(path string) string
}

func (v *validator) add(path, format string, args ...any) {
	if v.label != nil {
		path = v.label(path)
	}
	v.errs = append(v.errs, oneLine(path+": "+fmt.Sprintf(format, args...)))
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(v.errs, "\n"))
}

func relPath(parent string, i int, name string) string {
	if name == "" {
		return fmt.Sprintf("%s.relations[%d]", parent, i)
	}
	return fmt.Sprintf("%s.relations[%s]", parent, name)
}

func fieldPath(parent string, i int, name string) string {
	if name == "" {
		return fmt.Sprintf("%s.fields[%d]", parent, i)
	}
	return fmt.Sprintf("%s.fields[%s]", parent, name)
}

func aggPath(parent string, i int, name string) string {
	if name == "" {
		return fmt.Sprintf("%s.aggregates[%d]", parent, i)
	}
	return fmt.Sprintf("%s.aggregates[%s]", parent, name)
}

func (v *validator) table(path, name string) {
	if name == "" {
		v.add(path, "missing: name the table as schema.table")
		return
	}
	if _, err := change.ParseTable(name); err != nil {
		v.add(path, "%v", err)
	}
}

func (v *validator) columnList(path string, cols []string) {
	seen := map[string]bool{}
	for _, c := range cols {
		if seen[c] {
			v.add(path, "column %q is listed twice", c)
		}
		seen[c] = true
	}
}

func (v *validator) renames(path string, cols []string, rename Pairs) {
	if len(cols) == 0 {
		return // all columns: checked against the catalog
	}
	for _, r := range rename {
		if !slices.Contains(cols, r.From) {
			v.add(path+".rename."+r.From, "column %q is not in columns %v", r.From, cols)
		}
	}
}

// fields reports two things at one level of a document with the same name:
// a column (after rename), a relation and an aggregate. The message names the
// key of the second one.
func (v *validator) fields(path string, cols []string, rename Pairs, fs []Field, rels []Relation, aggs []Aggregate) {
	owner := map[string]string{}
	claim := func(name, what, at string) {
		if name == "" {
			return
		}
		if prev, ok := owner[name]; ok {
			v.add(at, "field %q is defined twice in %s: by %s and by %s; rename one of them", name, path, prev, what)
			return
		}
		owner[name] = what
	}
	for _, c := range cols {
		field, at := c, path+".columns"
		if to, ok := rename.Lookup(c); ok {
			field, at = to, path+".rename."+c
		}
		claim(field, fmt.Sprintf("column %q", c), at)
	}
	for i, f := range fs {
		at := fieldPath(path, i, f.Name)
		if f.Name == "" {
			v.add(at+".name", "missing: every field needs a name, its key in the document")
		}
		if strings.TrimSpace(f.Expr) == "" {
			v.add(at+".expr", "missing: a SQL expression over the table's own row, for example first_name || ' ' || last_name")
		}
		claim(f.Name, fmt.Sprintf("field %q", f.Name), at+".name")
	}
	for i, r := range rels {
		if r.Name == "" {
			v.add(fmt.Sprintf("%s.relations[%d].name", path, i), "missing: every relation needs a name, its field in the document")
		}
		claim(r.Name, fmt.Sprintf("relation %q", r.Name), relPath(path, i, r.Name)+".name")
	}
	for i, a := range aggs {
		if a.Name == "" {
			v.add(fmt.Sprintf("%s.aggregates[%d].name", path, i), "missing: every aggregate needs a name, its field in the document")
		}
		claim(a.Name, fmt.Sprintf("aggregate %q", a.Name), aggPath(path, i, a.Name)+".name")
	}
}

func (v *validator) relation(path string, r *Relation) {
	v.table(path+".table", r.Table)
	v.columnList(path+".columns", r.Columns)
	v.columnList(path+".key", r.Key)
	v.renames(path, r.Columns, r.Rename)
	array := r.Kind == HasMany || r.Kind == ManyToMany
	known := slices.Contains(Kinds, r.Kind)
	switch r.Kind {
	case "":
		v.add(path+".kind", "missing: one of %s", strings.Join(Kinds, ", "))
	case BelongsTo, HasOne, HasMany:
		if r.Through != nil {
			v.add(path+".through", "only many_to_many relations go through a join table; use kind: many_to_many or remove through")
		}
		if len(r.Join) == 0 {
			v.add(path+".join", "missing or empty: map this side's column to the other side's, for example {author_id: id}")
		}
	case ManyToMany:
		if r.Through == nil {
			v.add(path+".through", "missing: many_to_many needs through: {table, join, target_join}")
			break
		}
		if len(r.Join) > 0 {
			v.add(path+".join", "many_to_many joins through its join table: move this to through.join")
		}
		v.table(path+".through.table", r.Through.Table)
		if len(r.Through.Join) == 0 {
			v.add(path+".through.join", "missing or empty: map this side's column to the join table's, for example {id: post_id}")
		}
		if len(r.Through.TargetJoin) == 0 {
			v.add(path+".through.target_join", "missing or empty: map the join table's column to the target's, for example {tag_id: id}")
		}
	default:
		hint := ""
		if s := Suggest(r.Kind, Kinds); s != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", s)
		}
		v.add(path+".kind", "%q is not a relation kind%s; use one of %s", r.Kind, hint, strings.Join(Kinds, ", "))
	}
	if r.Scalar && len(r.Columns) != 1 {
		v.add(path+".scalar", "scalar: true needs exactly one column in columns, have %d", len(r.Columns))
	}
	if r.Scalar && len(r.Fields) > 0 {
		v.add(path+".fields", "scalar: true writes one column's value, not an object: remove scalar or fields")
	}
	if r.Limit > 0 && known && !array {
		v.add(path+".limit", "limit applies to arrays only (has_many, many_to_many), not to %s", r.Kind)
	}
	if r.Limit > 0 && len(r.OrderBy) == 0 {
		v.add(path+".limit", "limit needs order_by, or which rows are kept changes from run to run")
	}
	if len(r.OrderBy) > 0 && known && !array {
		v.add(path+".order_by", "order_by applies to arrays only (has_many, many_to_many), not to %s", r.Kind)
	}
	v.fields(path, r.Columns, r.Rename, r.Fields, r.Relations, r.Aggregates)
	for j := range r.Relations {
		v.relation(relPath(path, j, r.Relations[j].Name), &r.Relations[j])
	}
	for j := range r.Aggregates {
		v.aggregate(aggPath(path, j, r.Aggregates[j].Name), &r.Aggregates[j])
	}
}

func (v *validator) aggregate(path string, a *Aggregate) {
	v.table(path+".table", a.Table)
	if len(a.Join) == 0 {
		v.add(path+".join", "missing or empty: map this side's column to the aggregated table's, for example {id: post_id}")
	}
	switch a.Fn {
	case Count, IDs:
		if a.Column != "" {
			v.add(path+".column", "%s takes no column; remove column: %s", a.Fn, a.Column)
		}
	case Sum, Min, Max, Avg:
		if a.Column == "" {
			v.add(path+".column", "missing: %s needs the column to aggregate, for example column: score", a.Fn)
		}
	case "":
		v.add(path+".fn", "missing: one of %s", strings.Join(Functions, ", "))
	default:
		hint := ""
		if s := Suggest(a.Fn, Functions); s != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", s)
		}
		v.add(path+".fn", "%q is not an aggregate function%s; use one of %s", a.Fn, hint, strings.Join(Functions, ", "))
	}
}
