package main

import "github.com/spf13/cobra"

func newBackfillCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Write every document once, from one consistent snapshot (no slot)",
		Long: `backfill reads every index from one REPEATABLE READ snapshot shared by all
workers and writes one upsert line per document, tagged with the snapshot's
LSN. It creates no replication slot.`,
		Example: `  flusso-pg backfill --config flusso.yaml > docs.ndjson
  flusso-pg backfill --config flusso.yaml --index posts --workers 4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := loadConfig(cmd); err != nil {
				return err
			}
			return notImplemented("backfill")
		},
	}
	cmd.Flags().String("output", "", `where lines go: "-" for stdout or a file to append to (output.path)`)
	cmd.Flags().StringSlice("index", nil, "only these indexes (repeat or comma-separate)")
	cmd.Flags().Int("workers", 0, "parallel readers (backfill.workers; default: number of CPUs)")
	cmd.Flags().Int("batch-size", 0, "documents per query (backfill.batch_size)")
	return cmd
}
