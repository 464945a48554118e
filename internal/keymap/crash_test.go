package keymap

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

const childEnv = "FLUSSO_KEYMAP_CRASH_CHILD" // dir:seed

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(crashChild(v))
	}
	os.Exit(m.Run())
}

// crashChild writes random transactions into a new map as fast as it can,
// syncing every few and printing each LSN it synced, until it is killed.
func crashChild(arg string) int {
	dir, s, _ := strings.Cut(arg, ":")
	seed, _ := strconv.ParseUint(s, 10, 64)
	m, err := Create(dir, crashOptions(seed))
	if err == nil {
		err = m.FinishLoad(100)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	g := newGen(seed, state{}, 100)
	for i := 1; ; i++ {
		lsn, rows := g.txn()
		b, err := m.Begin(pglogrepl.LSN(lsn))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		for j := range rows {
			if _, _, err := b.Row(&rows[j]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
		if err := b.Commit(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if i%5 == 0 {
			if err := m.flushSync(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			fmt.Fprintf(os.Stdout, "synced %d\n", lsn)
		}
	}
}

// crashOptions: odd seeds write most transactions in chunks.
func crashOptions(seed uint64) Options {
	o := testOptions(nil)
	if seed%2 == 1 {
		o.chunkBytes = 60
	}
	return o
}

// TestSIGKILL kills a process that writes the map, at a random moment, and
// checks the map it leaves: at or past the last LSN it synced, exactly at a
// transaction's end, holding exactly what the transactions up to there make.
func TestSIGKILL(t *testing.T) {
	rounds := 4
	if testing.Short() {
		rounds = 1
	}
	for round := range rounds {
		seed := uint64(time.Now().UnixNano()) + uint64(round) // both parities
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "km")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d", childEnv, dir, seed))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill at a random moment after the child has synced a few times,
			// while it goes on writing (it is never blocked on its output).
			kill := 20 + int(seed%200)
			lines := make(chan uint64, 1<<16)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					v, err := strconv.ParseUint(strings.TrimPrefix(sc.Text(), "synced "), 10, 64)
					if err != nil {
						v = 0 // reported below
					}
					lines <- v
				}
			}()
			var synced uint64
			for n := 0; n < kill; n++ {
				v, ok := <-lines
				if !ok || v == 0 {
					t.Fatalf("the child stopped or wrote garbage after %d syncs", n)
				}
				synced = v
			}
			time.Sleep(time.Duration(seed%20) * time.Millisecond)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			for v := range lines {
				synced = max(synced, v)
			}
			_ = cmd.Wait()
			if synced == 0 {
				t.Fatal("the child synced nothing before it was killed")
			}
			m, err := Open(dir, crashOptions(seed))
			if err != nil {
				t.Fatalf("open after SIGKILL (seed %d): %v", seed, err)
			}
			defer m.Close()
			got := uint64(m.LSN())
			if got < synced {
				t.Fatalf("seed %d: after SIGKILL the map is at %d, below the synced %d", seed, got, synced)
			}
			g := newGen(seed, state{}, 100)
			for g.lsn < got {
				g.txn()
			}
			if g.lsn != got {
				t.Fatalf("seed %d: after SIGKILL the map is at %d, inside a transaction (ends %d)", seed, got, g.lsn)
			}
			// A transaction cut after a chunk with its truncate was written
			// leaves that table incomplete until it is sent again.
			skip := map[change.Table]bool{}
			for tid := range m.lostClear {
				skip[m.specs[tid].Table] = true
			}
			checkStateExcept(t, m, g.cur, skip, fmt.Sprintf("seed %d after SIGKILL at %d (synced %d)", seed, got, synced))
			t.Logf("seed %d: killed after %d syncs, last synced %d, map at %d, rolled back %v", seed, kill, synced, got, m.rolledBack)
		})
	}
}
