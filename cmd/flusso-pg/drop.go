package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/provision"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

func newDropCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drop",
		Short: "Remove the replication slot, and the publication when flusso-pg created it",
		Long: `drop removes the replication slot (so the server stops retaining WAL for it),
the publication when the state dir records that flusso-pg created it (a
publication it did not create is kept), and the slot's records in the state
dir (server identity, backfill progress, publication). The next follow starts
over with a new slot and a full backfill.

It says what it will do and asks for confirmation on the terminal; pass --yes
to skip the question (required when there is no terminal). A slot in use by
another process (a running follow) is not dropped: stop that process first.`,
		Example: `  flusso-pg drop --config flusso.yaml
  flusso-pg drop --config flusso.yaml --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			defer log.Sync()
			yes, _ := cmd.Flags().GetBool("yes")
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			conn, err := connect(ctx, cfg.Source.DSN)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))

			store := state.New(cfg.State.Dir, cfg.Source.Slot)
			plan, err := provision.PlanDrop(ctx, conn, cfg, store)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if plan.Nothing() {
				msg := fmt.Sprintf("nothing to drop: slot %s does not exist, flusso-pg created no publication %s, and %s holds no records for the slot",
					cfg.Source.Slot, cfg.Source.Publication, cfg.State.Dir)
				if plan.PublicationExists {
					msg += fmt.Sprintf(" (publication %s exists but flusso-pg did not create it: drop it yourself with DROP PUBLICATION %s;)",
						cfg.Source.Publication, change.QuoteIdentIfNeeded(cfg.Source.Publication))
				}
				fmt.Fprintln(out, msg)
				return nil
			}
			if err := plan.Check(); err != nil {
				return err
			}
			fmt.Fprintf(out, "flusso-pg drop, database %s:\n", plan.Database)
			for _, line := range plan.Describe() {
				fmt.Fprintln(out, "  - "+line)
			}
			if !yes {
				in := cmd.InOrStdin()
				if !isTerminal(in) {
					return &exitError{code: 1, msg: "drop: no terminal to confirm on: pass --yes to drop without asking"}
				}
				fmt.Fprint(cmd.ErrOrStderr(), "Drop these? [y/N] ")
				answer, _ := bufio.NewReader(in).ReadString('\n')
				switch strings.ToLower(strings.TrimSpace(answer)) {
				case "y", "yes":
				default:
					return &exitError{code: 1, msg: "drop: not confirmed; nothing was dropped"}
				}
			}
			done, err := provision.Drop(ctx, pgsession.ReadWrite(conn), plan, store, log)
			for _, line := range done {
				fmt.Fprintln(out, line)
			}
			return err
		},
	}
	cmd.Flags().Bool("yes", false, "do not ask for confirmation")
	return cmd
}

// isTerminal reports whether in is an interactive terminal to ask on (a
// variable so the CLI test can answer the question).
var isTerminal = func(in io.Reader) bool {
	f, ok := in.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
