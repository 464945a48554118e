package provision

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/flusso-pg/flusso-pg/internal/build"
)

// Status is the verdict of one finding.
type Status string

// Statuses. Only Fail makes a report not ready.
const (
	OK   Status = "ok"   // the requirement is met
	Warn Status = "warn" // works, but needs attention (or flusso-pg will fix it itself)
	Fail Status = "fail" // flusso-pg cannot run until it is fixed
	Info Status = "info" // for the record
)

// Checks: the Check field of a finding. Problems merged from internal/build
// keep their own code (replica_identity, missing_column, ...) as Check.
const (
	CheckConnection      = "connection"
	CheckCatalog         = "catalog"
	CheckServerVersion   = "server_version"
	CheckWalLevel        = "wal_level"
	CheckReplicationSlot = "max_replication_slots"
	CheckWalSenders      = "max_wal_senders"
	CheckReplicationRole = "replication_role"
	CheckTable           = "table"
	CheckSchemaUsage     = "schema_usage"
	CheckSelect          = "select"
	CheckCreate          = "create_on_database"
	CheckOwnership       = "ownership"
	CheckPublication     = "publication"
	CheckCoverage        = "publication_table"
	CheckPublish         = "publish"
	CheckRowFilter       = "row_filter"
	CheckColumnList      = "column_list"
	CheckPartitionRoot   = "publish_via_partition_root"
	CheckReplicaIdentity = "replica_identity"
	CheckSlot            = "slot"
	CheckWalKeep         = "max_slot_wal_keep_size"
)

// Finding is one verdict: what was checked, for which index, table and
// column, what was found, and the SQL or GRANT that fixes it.
type Finding struct {
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Index   string `json:"index,omitempty"` // comma-separated when several indexes read the table
	Table   string `json:"table,omitempty"`
	Column  string `json:"column,omitempty"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Report is everything check found, in the order it was checked.
type Report struct {
	Server      string    `json:"server"`      // server_version, as the server prints it
	Version     int       `json:"version"`     // major version
	Database    string    `json:"database"`    // current_database()
	Role        string    `json:"role"`        // current_user
	Publication string    `json:"publication"` // source.publication
	Slot        string    `json:"slot"`        // source.slot
	Provision   string    `json:"provision"`   // auto | check | off
	Ready       bool      `json:"ready"`       // no finding is Fail
	Findings    []Finding `json:"findings"`    // every verdict
	Actions     []string  `json:"actions"`     // SQL that provisioning ran
}

// ErrNotReady is returned (wrapped, with the failures and their fixes) when
// the database is not ready for flusso-pg.
var ErrNotReady = errors.New("the database is not ready for flusso-pg")

// Add appends a finding (a Fail makes the report not ready).
func (r *Report) Add(f Finding) { r.add(f) }

func (r *Report) add(f Finding) {
	r.Findings = append(r.Findings, f)
	if f.Status == Fail {
		r.Ready = false
	}
}

// Failures returns the findings whose status is Fail.
func (r *Report) Failures() []Finding { return r.filter(Fail) }

// Warnings returns the findings whose status is Warn.
func (r *Report) Warnings() []Finding { return r.filter(Warn) }

func (r *Report) filter(s Status) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Status == s {
			out = append(out, f)
		}
	}
	return out
}

// Find returns the findings of one check, optionally for one table ("" for any).
func (r *Report) Find(check, table string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check && (table == "" || f.Table == table) {
			out = append(out, f)
		}
	}
	return out
}

// AddProblems merges the verdicts of internal/build (replica identity,
// missing columns, join types, ...) into the report: an error is Fail, a
// warning Warn, the rest Info. missing_table and missing_schema are left
// out, as is not_a_table: the table check reports them already; so is a
// replica_identity problem whose fix a failure of this package already gives
// for the same table.
func (r *Report) AddProblems(problems []build.Problem) {
	for _, p := range problems {
		if p.Code == "missing_table" || p.Code == "missing_schema" || p.Code == "not_a_table" {
			continue
		}
		s := Info
		switch p.Severity {
		case build.SeverityError:
			s = Fail
		case build.SeverityWarning:
			s = Warn
		}
		// The same fix for the same table: this package's verdict says it already.
		if p.Code == CheckReplicaIdentity && slices.ContainsFunc(r.Findings, func(f Finding) bool {
			return f.Check == CheckReplicaIdentity && f.Table == p.Table && f.Fix == p.Fix && f.Status == Fail
		}) {
			continue
		}
		msg := p.Message
		// build's path starts with the index (`index "posts".relations[tags]`),
		// which the finding's Index says already.
		path := strings.TrimPrefix(strings.TrimPrefix(p.Path, fmt.Sprintf("index %q", p.Index)), ".")
		if path != "" {
			msg = path + ": " + msg
		}
		r.add(Finding{Check: p.Code, Status: s, Index: p.Index, Table: p.Table, Column: p.Column, Message: msg, Fix: p.Fix})
	}
}

// Err returns nil when the report is ready, or an error wrapping
// ErrNotReady that lists every failure with its fix.
func (r *Report) Err() error { return r.err() }

// err is Err leaving out the findings of the checks in skip.
func (r *Report) err(skip ...string) error {
	var fails []Finding
	for _, f := range r.Failures() {
		if !slices.Contains(skip, f.Check) {
			fails = append(fails, f)
		}
	}
	if len(fails) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem(s) to fix first (run `flusso-pg check` for the whole report):", len(fails))
	for _, f := range fails {
		b.WriteString("\n  - ")
		b.WriteString(f.line())
		if f.Fix != "" {
			b.WriteString("\n    fix: ")
			b.WriteString(indentFix(f.Fix, "         "))
		}
	}
	return fmt.Errorf("%w (provision: %s): %s", ErrNotReady, r.Provision, b.String())
}

func (f Finding) line() string {
	if f.Index != "" {
		return "index " + f.Index + ": " + f.Message
	}
	return f.Message
}

func indentFix(fix, indent string) string {
	return strings.ReplaceAll(fix, "\n", "\n"+indent)
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	out := *r
	if out.Findings == nil {
		out.Findings = []Finding{}
	}
	if out.Actions == nil {
		out.Actions = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&out)
}

// WriteText writes the report for a terminal: one line per finding, the fix
// under it, and a summary line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	if r.Server == "" {
		// Not connected: no server, database or role to name.
		fmt.Fprintf(&b, "flusso-pg check: not connected; publication %s, slot %s, provision %s\n\n", r.Publication, r.Slot, r.Provision)
	} else {
		fmt.Fprintf(&b, "flusso-pg check: database %s on PostgreSQL %s, role %s, publication %s, slot %s, provision %s\n\n",
			r.Database, r.Server, r.Role, r.Publication, r.Slot, r.Provision)
	}
	width := 0
	for _, f := range r.Findings {
		width = max(width, len(f.Check))
	}
	for _, f := range r.Findings {
		label := map[Status]string{OK: "ok", Warn: "WARN", Fail: "FAIL", Info: "info"}[f.Status]
		fmt.Fprintf(&b, "  %-4s  %-*s  %s\n", label, width, f.Check, f.line())
		if f.Fix != "" {
			pad := strings.Repeat(" ", 10+width)
			fmt.Fprintf(&b, "%sfix: %s\n", pad, indentFix(f.Fix, pad+"     "))
		}
	}
	for _, a := range r.Actions {
		fmt.Fprintf(&b, "\n  ran: %s", a)
	}
	if len(r.Actions) > 0 {
		b.WriteString("\n")
	}
	fails, warns := len(r.Failures()), len(r.Warnings())
	if fails == 0 {
		fmt.Fprintf(&b, "\nready (%d warning(s))\n", warns)
	} else {
		fmt.Fprintf(&b, "\nnot ready: %d problem(s) to fix, %d warning(s)\n", fails, warns)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
