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
	"time"

	"github.com/flusso-pg/flusso-pg/internal/logging"
)

// stopTimeout bounds a graceful stop: the work in hand is given this long
// after SIGINT, SIGTERM or SIGHUP, then abandoned (nothing more confirmed);
// a process still running a second later (a write blocked on a reader that
// stopped reading) exits 1 at once.
const stopTimeout = 10 * time.Second

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchSignals(cancel, stopTimeout+time.Second)
	// FLUSSO_CPUPROFILE=path writes a CPU profile, for `go tool pprof`.
	if path := os.Getenv("FLUSSO_CPUPROFILE"); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "flusso-pg: FLUSSO_CPUPROFILE: %v (give a path that does not exist yet)\n", err)
			os.Exit(2)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	os.Exit(execute(ctx, os.Args[1:]))
}

// watchSignals cancels the work on the first SIGINT, SIGTERM or SIGHUP (a
// graceful stop); a second one, or a stop still unfinished after grace,
// ends the process with exit code 1 without confirming anything more.
func watchSignals(cancel func(), grace time.Duration) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		cancel()
		t := time.NewTimer(grace)
		select {
		case again := <-sigs:
			fmt.Fprintf(os.Stderr, "flusso-pg: %s again: stopping now, confirming nothing more; the unconfirmed transactions are delivered again on restart\n", again)
		case <-t.C:
			fmt.Fprintf(os.Stderr, "flusso-pg: the stop after %s did not finish within %s (is the reader of the output still reading?): exiting now, confirming nothing more; the unconfirmed transactions are delivered again on restart\n", sig, grace)
		}
		pprof.StopCPUProfile()
		os.Exit(1)
	}()
}

// execute runs the command line and returns the exit code: 0 done, 1
// failure, 2 usage.
func execute(ctx context.Context, args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(logging.Redacting(os.Stdout, redact))
	root.SetErr(logging.Redacting(os.Stderr, redact))
	err := root.ExecuteContext(ctx)
	pprof.StopCPUProfile()
	if err == nil {
		return 0
	}
	var ex *exitError
	if errors.As(err, &ex) {
		if ex.msg != "" {
			fmt.Fprintln(os.Stderr, "flusso-pg: "+redact(ex.msg))
		}
		return ex.code
	}
	fmt.Fprintln(os.Stderr, "flusso-pg: "+redact(err.Error()))
	if isUsage(err) {
		return 2
	}
	return 1
}

// exitError ends the program with a given code, after printing msg if any.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
