package wal

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/change"
	"github.com/flusso-pg/flusso-pg/internal/state"
)

// A capture in a process of its own, so a test can SIGKILL it: the test
// binary runs again with captureProcessEnv set, and TestMain runs
// captureProcessMain instead of the tests.
const captureProcessEnv = "FLUSSO_WAL_CAPTURE_PROCESS"

func stateIn(dir, slot string) *state.Store { return state.New(dir, slot) }

// captureProcessMain follows public.t(id) of the slot named by the
// environment, printing "txn <end lsn>" for each transaction and
// confirming it at once.
func captureProcessMain() int {
	env := strings.Split(os.Getenv(captureProcessEnv), "\n") // dsn, slot, state dir
	log, _ := zap.NewDevelopment()
	c := New(Config{DSN: env[0], Slot: env[1], Publication: "pub",
		Tables:         map[change.Table][]string{{Schema: "public", Name: "t"}: {"id"}},
		StatusInterval: 100 * time.Millisecond, Store: state.New(env[2], env[1])}, log)
	if _, err := c.Open(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	c.ReleaseSnapshot()
	out := make(chan []*Txn, 4)
	go func() {
		for batch := range out {
			for _, t := range batch {
				fmt.Printf("txn %s\n", t.EndLSN)
				c.Confirm(t.EndLSN)
				t.Release()
			}
		}
	}()
	if err := c.Run(context.Background(), out); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	return 0
}

type captureProcess struct {
	cmd   *exec.Cmd
	lines chan string
	mu    sync.Mutex
	end   pglogrepl.LSN
}

// startCaptureProcess runs a capture of f's slot and state dir in a child
// process.
func startCaptureProcess(t *testing.T, f *fixture) *captureProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), captureProcessEnv+"="+f.cfg.DSN+"\n"+f.cfg.Slot+"\n"+f.cfg.Store.Dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &captureProcess{cmd: cmd, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if lsn, ok := strings.CutPrefix(line, "txn "); ok {
				if l, err := pglogrepl.ParseLSN(lsn); err == nil {
					p.mu.Lock()
					p.end = l
					p.mu.Unlock()
				}
			}
			p.lines <- line
		}
		close(p.lines)
	}()
	t.Cleanup(func() { p.kill(t) })
	return p
}

// waitLine waits for a line starting with prefix.
func (p *captureProcess) waitLine(t *testing.T, prefix string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("the capture process ended before printing %q", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return
			}
		case <-timeout:
			t.Fatalf("the capture process printed no %q within 20s", prefix)
		}
	}
}

func (p *captureProcess) lastEnd() pglogrepl.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.end
}

// kill SIGKILLs the process (once) and reaps it.
func (p *captureProcess) kill(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
}
