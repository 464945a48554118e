package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/flusso-pg/flusso-pg/internal/follow"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

func newFollowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "follow",
		Short: "Backfill once, then stream documents for every committed change",
		Long: `follow creates the replication slot on first run, backfills every index inside
the slot's exported snapshot, then streams: for each committed transaction it
rebuilds the affected documents and writes one NDJSON line each to stdout
(or output.path). The slot is confirmed only past lines that are flushed, or,
with --ack-fd / --ack-file, past the LSNs the reader writes back.

SIGINT, SIGTERM or SIGHUP finishes the transaction in hand, flushes, confirms
and exits 0; a stop that cannot finish within 10 s (the reader stopped
reading) exits 1 a second later, confirming nothing more, and a second signal
does so at once. A reader that goes away (broken pipe) ends it with exit code
1. With --ack-file, either side may open the FIFO first. See docs/cli.md.`,
		Example: `  flusso-pg follow --config flusso.yaml | my-indexer
  flusso-pg follow --config flusso.yaml --listen :9187
  flusso-pg follow --config flusso.yaml --ack-file /run/flusso/acks.fifo | my-indexer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			defer log.Sync()
			ignoreSIGPIPE()
			listen, _ := cmd.Flags().GetString("listen")
			ackFD, _ := cmd.Flags().GetInt("ack-fd")
			ackFile, _ := cmd.Flags().GetString("ack-file")
			resync, _ := cmd.Flags().GetBool("resync")
			// Before anything is created on the server: an unwritable state
			// dir would otherwise leave an orphan slot retaining WAL.
			if err := state.New(cfg.State.Dir, cfg.Source.Slot).CheckWritable(); err != nil {
				return err
			}
			if err := prepareSpillDir(cfg.Capture.SpillDir); err != nil {
				return err
			}
			if err := preflight(cmd.Context(), cfg.Source.DSN); err != nil {
				return err
			}
			f := follow.New(cfg, follow.Options{Listen: listen, AckFD: ackFD, AckFile: ackFile, Resync: resync, StopTimeout: stopTimeout}, log)
			return f.Run(cmd.Context())
		},
	}
	cmd.Flags().String("output", "", `where lines go: "-" for stdout or a file to append to (output.path)`)
	cmd.Flags().String("listen", "", "serve /healthz, /readyz and /metrics on this address, for example :9187")
	cmd.Flags().Int("ack-fd", 0, "read acknowledged LSNs (one per line) from this file descriptor")
	cmd.Flags().String("ack-file", "", "read acknowledged LSNs (one per line) from this file or FIFO")
	cmd.Flags().Bool("resync", false, "drop the slot and progress, and start over with a fresh slot and backfill")
	cmd.Flags().Int("workers", 0, "parallel backfill readers (backfill.workers; default: number of CPUs)")
	cmd.Flags().Int("batch-size", 0, "documents per query (backfill.batch_size)")
	cmd.MarkFlagsMutuallyExclusive("ack-fd", "ack-file")
	return cmd
}

// ignoreSIGPIPE makes a write to a closed stdout return EPIPE instead of
// killing the process, so flusso-pg can say why it stops.
func ignoreSIGPIPE() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

// prepareSpillDir creates the folder large transactions spill to. (Files a
// killed process left there are not removed: another config may share the
// folder; they are named flusso-txn-*.spill.)
func prepareSpillDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("capture.spill_dir %s cannot be created (%w): fix its permissions or set capture.spill_dir", dir, err)
	}
	return nil
}
