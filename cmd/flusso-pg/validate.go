package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
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
