package main

import "github.com/spf13/cobra"

func newValidateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the config against the live catalog (tables, columns, types, keys, replica identity)",
		Long: `validate reads the catalog of the database and checks every index of the
config against it, printing every problem at once. Exit code 1 when any.`,
		Example: `  flusso-pg validate --config flusso.yaml
  flusso-pg validate --config flusso.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := loadConfig(cmd); err != nil {
				return err
			}
			return notImplemented("validate")
		},
	}
	cmd.Flags().Bool("json", false, "print the problems as JSON")
	return cmd
}
