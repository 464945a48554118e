package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Probe a running follow's /healthz (or /readyz): exit 0 when it answers 200",
		Long: `health asks a running "follow --listen ADDR" for /healthz (with --ready,
/readyz) and prints its answer. Exit code 0 when it answers 200, 1 otherwise
(not running, failing, or not ready yet). It reads no config: it is the probe
for images without curl, such as the distroless one (docs/deployment.md).`,
		Example: `  flusso-pg health --addr 127.0.0.1:9187
  flusso-pg health --addr 127.0.0.1:9187 --ready`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr, _ := cmd.Flags().GetString("addr")
			ready, _ := cmd.Flags().GetBool("ready")
			timeout, _ := cmd.Flags().GetDuration("timeout")
			path := "/healthz"
			if ready {
				path = "/readyz"
			}
			if strings.HasPrefix(addr, ":") {
				addr = "127.0.0.1" + addr
			}
			client := &http.Client{Timeout: timeout}
			resp, err := client.Get("http://" + addr + path)
			if err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("health: no answer from %s%s (%v): is follow running with --listen %s?", addr, path, err, addr)}
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			text := strings.TrimSpace(string(body))
			if resp.StatusCode != http.StatusOK {
				return &exitError{code: 1, msg: fmt.Sprintf("health: %s%s answers %d: %s", addr, path, resp.StatusCode, text)}
			}
			fmt.Fprintln(cmd.OutOrStdout(), text)
			return nil
		},
	}
	cmd.Flags().String("addr", "127.0.0.1:9187", "the address follow serves with --listen")
	cmd.Flags().Bool("ready", false, "probe /readyz (backfill done, stream read) instead of /healthz")
	cmd.Flags().Duration("timeout", 3*time.Second, "how long to wait for the answer")
	return cmd
}
