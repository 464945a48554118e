package main

import (
	"errors"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/logging"
)

// Stamped at build time with -ldflags "-X main.version=...".
var (
	version = "dev"
	commit  = "none"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "flusso-pg",
		Short: "Stream complete search documents from Postgres as NDJSON",
		Long: `flusso-pg turns a Postgres database into a live stream of complete search
documents. It reads the WAL through a logical replication slot (pgoutput),
finds the documents each committed change affects, rebuilds them with one
server-side SQL query per batch, and writes one NDJSON line per document to
stdout. Logs go to stderr. The slot's position is confirmed only after the
lines are flushed, so nothing is ever lost.`,
		Example: `  flusso-pg follow   --config flusso.yaml | my-indexer
  flusso-pg backfill --config flusso.yaml > docs.ndjson
  flusso-pg check    --config flusso.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringP("config", "c", "", "config file (YAML); FLUSSO_* environment variables override its keys")
	root.PersistentFlags().String("dsn", "", "Postgres connection string (source.dsn, FLUSSO_SOURCE_DSN)")
	root.PersistentFlags().String("slot", "", "logical replication slot name (source.slot)")
	root.PersistentFlags().String("publication", "", "publication name (source.publication)")
	root.PersistentFlags().String("provision", "", "auto | check | off (source.provision)")
	root.PersistentFlags().String("state-dir", "", "folder for progress and server identity (state.dir)")
	root.PersistentFlags().String("log-level", "", "debug | info | warn | error (log.level)")
	root.PersistentFlags().String("log-format", "", "console | json (log.format)")
	root.AddCommand(
		newFollowCmd(),
		newBackfillCmd(),
		newCheckCmd(),
		newValidateCmd(),
		newExplainCmd(),
		newDropCmd(),
		newVersionCmd(),
	)
	return root
}

// loadConfig reads the config named by --config with environment and flag
// overrides, and builds the stderr logger.
func loadConfig(cmd *cobra.Command) (*config.Config, *zap.Logger, error) {
	file, _ := cmd.Flags().GetString("config")
	cfg, err := config.Load(file, cmd.Flags())
	if err != nil {
		return nil, nil, err
	}
	if cfg.Source.DSN == "" {
		return nil, nil, errors.New("source.dsn is empty: set it in the config, in FLUSSO_SOURCE_DSN, or with --dsn")
	}
	log, err := logging.New(cfg.Log.Level, cfg.Log.Format, nil)
	if err != nil {
		return nil, nil, err
	}
	return cfg, log, nil
}
