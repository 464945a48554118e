package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/snapshot"
)

func newBackfillCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Write every document once, from one consistent snapshot (no slot)",
		Long: `backfill reads every index from one REPEATABLE READ snapshot shared by all
workers and writes one upsert line per document, tagged with the snapshot's
LSN (pg_current_wal_lsn() read in the transaction that exports the snapshot).
It creates no replication slot and keeps no progress: a backfill that is
stopped starts over when run again. Progress bars go to stderr when it is a
terminal, log lines otherwise.`,
		Example: `  flusso-pg backfill --config flusso.yaml > docs.ndjson
  flusso-pg backfill --config flusso.yaml --index posts --workers 4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			defer log.Sync()
			ignoreSIGPIPE()
			indexes, _ := cmd.Flags().GetStringSlice("index")
			if err := preflight(cmd.Context(), cfg.Source.DSN); err != nil {
				return err
			}
			return runBackfill(cmd.Context(), cfg, indexes, log)
		},
	}
	cmd.Flags().String("output", "", `where lines go: "-" for stdout or a file to append to (output.path)`)
	cmd.Flags().StringSlice("index", nil, "only these indexes (repeat or comma-separate)")
	cmd.Flags().Int("workers", 0, "parallel readers (backfill.workers; default: number of CPUs)")
	cmd.Flags().Int("batch-size", 0, "documents per query (backfill.batch_size)")
	return cmd
}

// runBackfill is the one-shot backfill: no slot, no progress kept.
func runBackfill(ctx context.Context, cfg *config.Config, indexes []string, log *zap.Logger) (err error) {
	workers := cfg.Backfill.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	// One connection per worker, and one to plan with.
	pool, err := pgsession.OpenPool(ctx, cfg.Source.DSN, max(workers+1, 2))
	if err != nil {
		return err
	}
	defer pool.Close()
	plan, problems, err := build.Compile(ctx, pool, cfg)
	if err != nil {
		return err
	}
	if err := build.Problems(problems).Err(); err != nil {
		return err
	}
	out, err := output.Open(cfg.Output.Path)
	if err != nil {
		return err
	}
	if n := out.Trimmed(); n > 0 {
		log.Warn("cut the partial last line an earlier run left in the output", zap.String("file", out.Name()), zap.Int64("bytes", n))
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	bf := snapshot.New(snapshot.Config{
		Workers:   workers,
		BatchSize: cfg.Backfill.BatchSize,
		Progress:  os.Stderr,
		Indexes:   indexes,
	}, plan, pool, out, nil, log)
	if err := bf.Run(ctx, snapshot.Snapshot{}, nil); err != nil {
		if errors.Is(err, context.Canceled) {
			return &exitError{code: 130, msg: "backfill interrupted: the output holds part of the documents; run it again to write them all"}
		}
		return fmt.Errorf("backfill: %w", err)
	}
	return nil
}
