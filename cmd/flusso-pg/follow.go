package main

import "github.com/spf13/cobra"

func newFollowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "follow",
		Short: "Backfill once, then stream documents for every committed change",
		Long: `follow creates the replication slot on first run, backfills every index inside
the slot's exported snapshot, then streams: for each committed transaction it
rebuilds the affected documents and writes one NDJSON line each to stdout
(or output.path). The slot is confirmed only past lines that are flushed.`,
		Example: `  flusso-pg follow --config flusso.yaml | my-indexer
  flusso-pg follow --config flusso.yaml --listen :9187
  flusso-pg follow --config flusso.yaml --ack-fd 3 3< acks.fifo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := loadConfig(cmd); err != nil {
				return err
			}
			return notImplemented("follow")
		},
	}
	cmd.Flags().String("output", "", `where lines go: "-" for stdout or a file to append to (output.path)`)
	cmd.Flags().String("listen", "", "serve /healthz, /readyz and /metrics on this address, for example :9187")
	cmd.Flags().Int("ack-fd", 0, "read acknowledged LSNs (one per line) from this file descriptor")
	cmd.Flags().String("ack-file", "", "read acknowledged LSNs (one per line) from this file or FIFO")
	cmd.Flags().Bool("resync", false, "drop the slot and progress, and start over with a fresh slot and backfill")
	cmd.Flags().Int("workers", 0, "parallel backfill readers (backfill.workers; default: number of CPUs)")
	cmd.Flags().Int("batch-size", 0, "documents per query (backfill.batch_size)")
	return cmd
}
