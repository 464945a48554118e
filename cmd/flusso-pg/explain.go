package main

import "github.com/spf13/cobra"

func newExplainCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "explain",
		Short: "Print the SQL flusso-pg runs: the document query per index, the resolution query per table",
		Example: `  flusso-pg explain --config flusso.yaml
  flusso-pg explain --config flusso.yaml | less`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := loadConfig(cmd); err != nil {
				return err
			}
			return notImplemented("explain")
		},
	}
}
