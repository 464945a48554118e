package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flusso-pg/flusso-pg/internal/build"
	"github.com/flusso-pg/flusso-pg/internal/pgsession"
	"github.com/flusso-pg/flusso-pg/internal/provision"
)

func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Report whether the database is ready: settings, privileges, publication, replica identity, slot",
		Long: `check inspects the server and the role flusso-pg connects as, and prints a
verdict for every requirement with the SQL or GRANT that fixes each problem:
server version and wal_level; room for one more slot and WAL sender; the
REPLICATION attribute; SELECT on every table the indexes read; CREATE on the
database and ownership of the tables (to create or extend the publication);
the publication's coverage, options, row filters and column lists; replica
identities; the slot's state and the WAL it retains; and every verdict of
validate; and, given --standby DSN (repeatable), whether each standby keeps
a synced copy of the slot for a failover. It changes nothing. With provision: auto, what follow will create
or add itself is a warning, not a failure.
Exit code 0 when ready, 1 when not.`,
		Example: `  flusso-pg check --config flusso.yaml
  flusso-pg check --config flusso.yaml --json
  flusso-pg check --config flusso.yaml --standby postgres://flusso@replica1:5432/app`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			defer log.Sync()
			asJSON, _ := cmd.Flags().GetBool("json")
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			var report *provision.Report
			conn, err := pgsession.Connect(ctx, cfg.Source.DSN)
			if err != nil {
				// Still a report, so --json readers get one.
				f := describeConnect(cfg.Source.DSN, err)
				report = &provision.Report{Publication: cfg.Source.Publication, Slot: cfg.Source.Slot, Provision: cfg.Source.Provision}
				report.Add(provision.Finding{Check: provision.CheckConnection, Status: provision.Fail,
					Message: fmt.Sprintf("cannot connect to %s: %s", f.dsn, f.cause), Fix: f.fix})
			} else {
				defer conn.Close(context.WithoutCancel(ctx))
				plan, problems, compileErr := build.Compile(ctx, conn, cfg)
				report, err = provision.Inspect(ctx, conn, cfg, plan)
				if err != nil {
					return err
				}
				if compileErr != nil {
					report.Add(provision.Finding{Check: provision.CheckCatalog, Status: provision.Fail,
						Message: fmt.Sprintf("could not read the catalog for the indexes: %v", compileErr)})
				}
				keyMapSize(cfg, problems)
				report.AddProblems(problems)
				standbys, _ := cmd.Flags().GetStringArray("standby")
				for _, dsn := range standbys {
					provision.InspectStandby(ctx, report, conn, cfg, dsn)
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				err = report.WriteJSON(out)
			} else {
				err = report.WriteText(out)
			}
			if err != nil {
				return err
			}
			if !report.Ready {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().Bool("json", false, "print the report as JSON")
	cmd.Flags().StringArray("standby", nil, "a standby that is to take over with the slot (PostgreSQL 17+): check it synchronizes the failover slot (repeatable)")
	return cmd
}
