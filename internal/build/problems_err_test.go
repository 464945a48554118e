package build

import (
	"errors"
	"strings"
	"testing"
)

func TestProblemsErr(t *testing.T) {
	if err := (Problems{{Severity: SeverityWarning, Message: "w"}}).Err(); err != nil {
		t.Fatalf("warnings only: %v, want nil", err)
	}
	err := Problems{
		{Severity: SeverityError, Path: "indexes[0].columns", Message: "column x does not exist", Fix: "ALTER TABLE t ADD x int;"},
		{Severity: SeverityInfo, Message: "i"},
		{Severity: SeverityError, Path: "indexes[0].where", Message: "bad where"},
	}.Err()
	if !errors.Is(err, ErrConfigMismatch) {
		t.Fatalf("Err = %v, want ErrConfigMismatch", err)
	}
	want := "the config does not match the database (2 problem(s); `flusso-pg validate` lists every verdict):\n  indexes[0].columns: column x does not exist\n    fix: ALTER TABLE t ADD x int;\n  indexes[0].where: bad where"
	if err.Error() != want {
		t.Fatalf("Err =\n%s\nwant\n%s", err, want)
	}
	if strings.Contains(err.Error(), "\n  : i") {
		t.Fatal("information is listed")
	}
}
