package main

import "github.com/spf13/cobra"

func newDropCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drop",
		Short: "Remove the replication slot, and the publication when flusso-pg created it",
		Example: `  flusso-pg drop --config flusso.yaml
  flusso-pg drop --config flusso.yaml --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := loadConfig(cmd); err != nil {
				return err
			}
			return notImplemented("drop")
		},
	}
	cmd.Flags().Bool("yes", false, "do not ask for confirmation")
	return cmd
}
