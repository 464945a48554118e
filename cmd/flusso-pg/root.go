package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"

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
		Version:       version,
	}
	root.SetVersionTemplate(versionLine() + "\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringP("config", "c", "", "config file (YAML); default: $FLUSSO_CONFIG, else ./flusso.yaml when present; FLUSSO_* environment variables override its keys")
	root.PersistentFlags().String("dsn", "", "Postgres connection string (source.dsn); visible to other local users in ps: prefer FLUSSO_SOURCE_DSN for a password")
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
		newHealthCmd(),
	)
	// A wrong argument is a usage error (exit 2), like an unknown flag.
	for _, c := range root.Commands() {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
	}
	return root
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() + " (see flusso-pg --help)" }
func (e usageError) Unwrap() error { return e.err }

// isUsage reports whether err is a usage error: a bad flag or argument, or an
// unknown command (cobra returns that one as a plain error).
func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command ")
}

// configFile is the config to read: --config, else $FLUSSO_CONFIG, else
// ./flusso.yaml when it exists, else none.
func configFile(cmd *cobra.Command) string {
	if file, _ := cmd.Flags().GetString("config"); file != "" {
		return file
	}
	if file := os.Getenv(config.ConfigEnv); file != "" {
		return file
	}
	if st, err := os.Stat(defaultConfig); err == nil && st.Mode().IsRegular() {
		return defaultConfig
	}
	return ""
}

// defaultConfig is read when neither --config nor FLUSSO_CONFIG names a file.
const defaultConfig = "flusso.yaml"

// loadConfig reads the config (see configFile) with environment and flag
// overrides, and builds the stderr logger. A FLUSSO_* variable flusso-pg
// does not read is warned about (in the error, when the config fails: the
// misspelling may be why).
func loadConfig(cmd *cobra.Command) (*config.Config, *zap.Logger, error) {
	unknown := config.UnknownEnv(os.Environ())
	fail := func(err error) (*config.Config, *zap.Logger, error) {
		if len(unknown) == 0 {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w\n%s", err, strings.Join(unknown, "\n"))
	}
	file := configFile(cmd)
	if flagFile, _ := cmd.Flags().GetString("config"); flagFile == "" && file != "" && file == os.Getenv(config.ConfigEnv) {
		if _, err := os.Stat(file); err != nil {
			return fail(fmt.Errorf("%s names a config file that cannot be read (%w)", config.ConfigEnv, err))
		}
	}
	cfg, err := config.Load(file, cmd.Flags())
	if err != nil {
		if file == "" && len(strings.Split(err.Error(), "\n")) == 1 && strings.Contains(err.Error(), "no index is configured") {
			return fail(errors.New("no config file: give --config FILE, set " + config.ConfigEnv + ", or run where ./" + defaultConfig + " is"))
		}
		return fail(err)
	}
	if cfg.Source.DSN == "" {
		return fail(errors.New("source.dsn is empty: set it in the config, in FLUSSO_SOURCE_DSN, or with --dsn"))
	}
	if err := config.CheckDSN(cfg.Source.DSN); err != nil {
		return fail(err)
	}
	s := config.Secrets(cfg.Source.DSN)
	secrets.Store(&s)
	log, err := logging.New(cfg.Log.Level, cfg.Log.Format, logging.Redacting(os.Stderr, redact))
	if err != nil {
		return fail(err)
	}
	for _, w := range unknown {
		log.Warn(w)
	}
	return cfg, log, nil
}

// versionLine is what --version and the version command print.
func versionLine() string {
	if commit == version || commit == "none" {
		return fmt.Sprintf("flusso-pg %s (%s)", version, runtime.Version())
	}
	return fmt.Sprintf("flusso-pg %s (commit %s, %s)", version, commit, runtime.Version())
}

// secrets are the DSN's password and its pieces, once the config is read:
// whatever flusso-pg prints (logs, errors, check and validate output) goes
// through redact, so no driver message can quote them.
var secrets atomic.Pointer[[]string]

func redact(text string) string {
	if s := secrets.Load(); s != nil {
		return config.Redact(text, *s)
	}
	return text
}
