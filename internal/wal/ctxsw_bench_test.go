package wal

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ctxSwitches sums voluntary and involuntary context switches of every thread of pid.
func ctxSwitches(pid int) (vol, invol int64) {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/status")
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "voluntary_ctxt_switches:":
					vol += n
				case "nonvoluntary_ctxt_switches:":
					invol += n
				}
			}
		}
	}
	return
}
