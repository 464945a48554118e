// Command flusso-pg turns a Postgres database into a live stream of complete
// search documents: it reads the WAL through a logical replication slot,
// rebuilds the documents each committed change affects with one SQL query per
// batch, and writes them as NDJSON lines to stdout. Logs go to stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// FLUSSO_CPUPROFILE=path writes a CPU profile, for `go tool pprof`.
	if path := os.Getenv("FLUSSO_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	err := newRootCmd().ExecuteContext(ctx)
	pprof.StopCPUProfile()
	if err != nil {
		var ex *exitError
		if errors.As(err, &ex) {
			if ex.msg != "" {
				fmt.Fprintln(os.Stderr, "flusso-pg: "+ex.msg)
			}
			os.Exit(ex.code)
		}
		fmt.Fprintln(os.Stderr, "flusso-pg: "+err.Error())
		os.Exit(1)
	}
}

// exitError ends the program with a given code, after printing msg if any.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
