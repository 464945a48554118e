package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flusso-pg/flusso-pg/internal/build"
)

func newExplainCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "explain",
		Short: "Print the SQL flusso-pg runs: the document query per index, the resolution query per table",
		Long: `explain compiles the config against the live catalog and prints, per index,
each computed field's type and the columns it reads, the statement that builds a batch of documents ($1 is a text[] of keys, one
array per key column) and the keyset statement the backfill pages with; then,
per table, how a changed row becomes the root keys to rebuild: read straight
from the row, or the one query run per batch ($n is a text[] per capture
column). Paste a statement into psql with EXPLAIN ANALYZE to see its plan.`,
		Example: `  flusso-pg explain --config flusso.yaml
  flusso-pg explain --config flusso.yaml | less`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			plan, problems, err := compilePlan(cmd, cfg)
			if err != nil {
				return err
			}
			if plan == nil {
				if err := build.Problems(problems).Err(); err != nil {
					return err
				}
				return errors.New("the config does not compile against the database: run flusso-pg validate")
			}
			out := cmd.OutOrStdout()
			for _, ix := range plan.Indexes {
				for _, f := range ix.Fields() {
					fmt.Fprintf(out, "-- %s\n", fieldLine(f))
				}
				fmt.Fprintf(out, "-- index %s (root %s, key %s): document query, $1.. one text[] per key column\n%s;\n\n",
					ix.Name(), ix.Root(), strings.Join(ix.KeyColumns(), ", "), ix.DocumentSQL())
				fmt.Fprintf(out, "-- index %s: backfill scan, keys after ($1..) up to (..), LIMIT $n\n%s;\n\n", ix.Name(), ix.ScanSQL())
			}
			mapped, err := plan.KeyMapTables()
			if err != nil {
				return err
			}
			byTable := map[string]build.KeyMapTable{}
			for _, m := range mapped {
				byTable[m.Table.String()] = m
			}
			for _, t := range plan.Tables() {
				fmt.Fprintf(out, "-- table %s: resolution\n", t)
				if m, ok := byTable[t.String()]; ok {
					fmt.Fprintf(out, "-- old %s of a DELETE or UPDATE: through the key map (key %s; its replica identity sends only the key)\n",
						strings.Join(m.Join, ", "), strings.Join(m.Key, ", "))
				}
				fmt.Fprintf(out, "%s\n", plan.ResolveSQL(t))
			}
			return nil
		},
	}
}
