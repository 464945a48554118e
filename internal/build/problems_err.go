package build

import (
	"errors"
	"fmt"
	"strings"
)

// ErrConfigMismatch is wrapped by Problems.Err: the config does not match
// the database.
var ErrConfigMismatch = errors.New("the config does not match the database")

// Problems are the verdicts of Compile.
type Problems []Problem

// Err is the one error follow, backfill and explain stop with when the
// config does not match the database: every problem of error severity, one
// per line with its path and fix, or nil when there is none. Warnings and
// information are left to validate and check.
func (ps Problems) Err() error {
	var b strings.Builder
	n := 0
	for _, p := range ps {
		if p.Severity != SeverityError {
			continue
		}
		n++
		b.WriteString("\n  " + p.Path + ": " + p.Message)
		if p.Fix != "" {
			b.WriteString("\n    fix: " + p.Fix)
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%w (%d problem(s); `flusso-pg validate` lists every verdict):%s", ErrConfigMismatch, n, b.String())
}
