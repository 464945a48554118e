package main

import "github.com/spf13/cobra"

func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Report whether the database is ready: settings, privileges, publication, replica identity, slot",
		Long: `check inspects the server and the role flusso-pg connects as, and prints a
verdict for every requirement with the SQL or GRANT that fixes each problem.
Exit code 0 when ready, 1 when not.`,
		Example: `  flusso-pg check --config flusso.yaml
  flusso-pg check --config flusso.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := loadConfig(cmd); err != nil {
				return err
			}
			return notImplemented("check")
		},
	}
	cmd.Flags().Bool("json", false, "print the report as JSON")
	return cmd
}
