package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/keymap"
)

func newValidateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the config against the live catalog (tables, columns, types, keys, replica identity)",
		Long: `validate reads the catalog of the database and checks every index of the
config against it, printing every problem at once: missing schemas, tables and
columns (with the nearest name), tables without a key, joins between
incompatible types, sum/avg over non-numeric columns, order_by on missing
columns, where clauses the server rejects, computed fields the server rejects
or that read other rows or tables (a volatile one is a warning; each field's
type and the columns it reads are printed), and tables whose replica identity
cannot say which document a DELETE or a moving UPDATE touched (with the
ALTER TABLE to run). Nullable belongs_to joins are reported as information.
Exit code 1 when any problem is an error.`,
		Example: `  flusso-pg validate --config flusso.yaml
  flusso-pg validate --config flusso.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			asJSON, _ := cmd.Flags().GetBool("json")
			plan, problems, err := compilePlan(cmd, cfg)
			if err != nil {
				return err
			}
			keyMapSize(cfg, problems)
			out := cmd.OutOrStdout()
			if asJSON {
				if problems == nil {
					problems = []build.Problem{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				fields := []build.FieldFacts{}
				if plan != nil {
					for _, ix := range plan.Indexes {
						fields = append(fields, ix.Fields()...)
					}
				}
				if err := enc.Encode(map[string]any{"ok": !build.HasError(problems), "problems": problems, "fields": fields}); err != nil {
					return err
				}
			} else {
				if err := build.WriteProblems(out, problems); err != nil {
					return err
				}
				if plan != nil {
					for _, ix := range plan.Indexes {
						for _, f := range ix.Fields() {
							fmt.Fprintln(out, fieldLine(f))
						}
					}
				}
				if !build.HasError(problems) {
					fmt.Fprintf(out, "ok: %d index(es) match the database\n", len(cfg.Indexes))
				}
			}
			if build.HasError(problems) {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().Bool("json", false, "print the problems as JSON")
	return cmd
}

// keyMapSize adds to each key_map line what the map in the state dir
// takes, or that the first follow builds it.
func keyMapSize(cfg *config.Config, problems []build.Problem) {
	dir := keymap.Dir(cfg.State.Dir, cfg.Source.Slot)
	size, ok := keymap.DiskBytes(dir)
	for i := range problems {
		if problems[i].Code != "key_map" {
			continue
		}
		if ok {
			problems[i].Message += fmt.Sprintf(" (the map in %s takes %.1f MiB on disk; flusso_keymap_entries counts its rows)", dir, float64(size)/(1<<20))
		} else {
			problems[i].Message += fmt.Sprintf(" (no map in %s yet: follow builds it from the slot's snapshot with the backfill)", dir)
		}
	}
}

// fieldLine says what the server resolved of a computed field: its type and
// the columns of its table it reads.
func fieldLine(f build.FieldFacts) string {
	if f.Unknown != "" {
		return fmt.Sprintf("field %s = %s: type and columns not derived (%s)", f.Path, f.Expr, f.Unknown)
	}
	reads := "no column"
	if len(f.Columns) > 0 {
		reads = strings.Join(f.Columns, ", ")
	}
	return fmt.Sprintf("field %s = %s: %s, reads %s", f.Path, f.Expr, f.Type, reads)
}

// compilePlan connects to the source and compiles the config against its catalog.
func compilePlan(cmd *cobra.Command, cfg *config.Config) (*build.Plan, []build.Problem, error) {
	ctx := cmd.Context()
	conn, err := connect(ctx, cfg.Source.DSN)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(ctx)
	return build.Compile(ctx, conn, cfg)
}
