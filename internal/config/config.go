package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Config is the whole configuration of flusso-pg, as read from YAML, the
// environment and flags. The rest of the program receives this typed struct;
// only cmd/ and this package know about viper.
type Config struct {
	Source   Source
	Output   Output
	State    State
	Log      Log
	Backfill Backfill
	Capture  Capture
	Indexes  []Index

	// File is the path of the config file it was read from ("" when none).
	File string
}

// Source is the database and the replication objects flusso-pg uses.
type Source struct {
	DSN         string
	Slot        string
	Publication string
	Provision   string // auto | check | off
	// Failover is whether the slot is a failover slot (PostgreSQL 17+),
	// synchronized to standbys so it survives a promotion: auto | on | off.
	Failover string
	// PrimaryDSN, when DSN points at a hot standby, is the primary, where
	// the publication is created (a standby is read-only). "" when unused.
	PrimaryDSN string
}

// Failover modes (source.failover).
const (
	FailoverAuto = "auto" // on where the server supports it (PostgreSQL 17+, not a standby)
	FailoverOn   = "on"   // required: refuse to start where it cannot be had
	FailoverOff  = "off"  // a slot of the primary only
)

// Provision modes.
const (
	ProvisionAuto  = "auto"
	ProvisionCheck = "check"
	ProvisionOff   = "off"
)

// Output is where NDJSON lines go.
type Output struct {
	Path      string // "-" is stdout; a file path is opened for append
	Kind      string // stdout | file | jetstream; from Path when not given
	JetStream JetStream
}

// State is where progress and the server's identity are kept.
type State struct {
	Dir string // already resolved against the config file's folder
}

// Log configures the stderr logger.
type Log struct {
	Level  string // debug | info | warn | error
	Format string // console | json
}

// Backfill tunes the initial and one-shot snapshot reads.
type Backfill struct {
	Workers   int // parallel readers; 0 means the number of CPUs
	BatchSize int // documents per query
}

// Capture tunes the WAL reader.
type Capture struct {
	// MemoryBudget bounds the bytes a transaction's buffered changes may take
	// in memory before they spill to a temporary file.
	MemoryBudget int64
	// StatusInterval is the period of standby status updates.
	StatusInterval time.Duration
	// Coalesce is how long the reader of a busy replication stream lets
	// data pile up after draining the socket; 0 turns it off.
	Coalesce time.Duration
	// BatchSize is the number of documents built by one query while following.
	BatchSize int
	// BuildWorkers is how many chunks of a group (BatchSize keys each) are
	// built at once while following, each on its own connection; 0 in the
	// file means the number of CPUs, resolved by Load (at most
	// MaxBuildWorkers).
	BuildWorkers int
	// SpillDir is where transactions larger than MemoryBudget spill; by
	// default the spill folder of the state dir (not /tmp, which a read-only
	// root file system forbids).
	SpillDir string
	// KeyMap is auto (a table whose replica identity does not send the old
	// columns the plan needs resolves them through the key map in state.dir,
	// docs/keymap.md) or off (such a table needs REPLICA IDENTITY FULL).
	KeyMap string
	// KeyMapCache is the key map's block cache in bytes: with its two
	// memtables (8 MiB each) it bounds the map's memory, whatever the
	// tables' size.
	KeyMapCache int64
}

// Key map modes (capture.key_map).
const (
	KeyMapAuto = "auto"
	KeyMapOff  = "off"
)

// KeyMapOn reports whether the key map may be used (capture.key_map: auto).
func (c *Capture) KeyMapOn() bool { return c.KeyMap != KeyMapOff }

// Index is one search index: one document per row of Table.
type Index struct {
	Name       string
	Table      string
	Key        []string
	Columns    []string
	Where      string
	Rename     Pairs
	Fields     []Field
	Relations  []Relation
	Aggregates []Aggregate
}

// Field is a computed field: a SQL expression over its table's own row
// (first_name || ' ' || last_name, doc->'address'->>'city', xmin::text),
// written into the object after the columns, in config order.
type Field struct {
	Name string
	Expr string
}

// Relation kinds.
const (
	BelongsTo  = "belongs_to"
	HasOne     = "has_one"
	HasMany    = "has_many"
	ManyToMany = "many_to_many"
)

// Kinds lists the relation kinds in the order the docs give them.
var Kinds = []string{BelongsTo, HasOne, HasMany, ManyToMany}

// Relation nests rows of another table into a document.
type Relation struct {
	Name       string
	Table      string
	Kind       string
	Join       Pairs // this side's column -> the other side's column
	Through    *Through
	Key        []string
	Columns    []string
	OrderBy    []OrderBy
	Where      string
	Limit      int
	Scalar     bool
	Rename     Pairs
	Fields     []Field
	Relations  []Relation
	Aggregates []Aggregate
}

// Through is the join table of a many_to_many relation.
type Through struct {
	Table      string
	Join       Pairs // this side -> through table
	TargetJoin Pairs // through table -> target
}

// Aggregate functions.
const (
	Count = "count"
	Sum   = "sum"
	Min   = "min"
	Max   = "max"
	Avg   = "avg"
	IDs   = "ids"
)

// Functions lists the aggregate functions.
var Functions = []string{Count, Sum, Min, Max, Avg, IDs}

// Aggregate is one value computed over related rows.
type Aggregate struct {
	Name   string
	Table  string
	Join   Pairs
	Fn     string
	Column string
	Where  string
}

// Pair is one entry of a YAML map whose order and case matter (join, rename).
type Pair struct{ From, To string }

// Pairs keeps a YAML map's entries in the order they were written.
type Pairs []Pair

// Lookup returns the value for from.
func (p Pairs) Lookup(from string) (string, bool) {
	for _, e := range p {
		if e.From == from {
			return e.To, true
		}
	}
	return "", false
}

// Froms returns the left-hand sides.
func (p Pairs) Froms() []string {
	out := make([]string, len(p))
	for i, e := range p {
		out[i] = e.From
	}
	return out
}

// Tos returns the right-hand sides.
func (p Pairs) Tos() []string {
	out := make([]string, len(p))
	for i, e := range p {
		out[i] = e.To
	}
	return out
}

// OrderBy is one `column [asc|desc]` term.
type OrderBy struct {
	Column string
	Desc   bool
}

func (o OrderBy) String() string {
	if o.Desc {
		return o.Column + " desc"
	}
	return o.Column
}

// Defaults.
const (
	DefaultSlot           = "flusso"
	DefaultPublication    = "flusso"
	DefaultStateDir       = ".flusso-state"
	DefaultBatchSize      = 500
	DefaultMemoryBudget   = 8 << 20
	DefaultKeyMapCache    = 32 << 20
	MinKeyMapCache        = 1 << 20
	DefaultStatusInterval = 10 * time.Second
	DefaultCoalesce       = time.Millisecond
)

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Redacted is what RedactDSN writes in place of a password.
const Redacted = "xxxxx"

var (
	// password=secret, password = 'sec ret', sslpassword=..., in key=value DSNs.
	kvPassword = regexp.MustCompile(`(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']\S*|)`)
	// password=secret in a URL's query string.
	queryPassword = regexp.MustCompile(`(?i)([?&](?:ssl)?password=)[^&#]*`)
)

// RedactDSN returns dsn with every password replaced by "xxxxx", for logs and
// errors: the user-info password of a postgres:// URL, password= and
// sslpassword= in its query string, and password= in a key=value DSN. A URL
// too malformed to parse loses everything between "://" and the last "@".
func RedactDSN(dsn string) string {
	lower := strings.ToLower(dsn)
	if !strings.HasPrefix(lower, "postgres://") && !strings.HasPrefix(lower, "postgresql://") {
		return kvPassword.ReplaceAllString(dsn, "${1}"+Redacted)
	}
	if u, err := url.Parse(dsn); err == nil && u.Opaque == "" && !strings.Contains(u.Path, "@") {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Redacted)
		}
		if u.RawQuery != "" {
			u.RawQuery = queryPassword.ReplaceAllString("?"+u.RawQuery, "${1}"+Redacted)[1:]
		}
		return u.String()
	}
	// Not a URL Go can parse (several hosts, a password with a bare "@" or
	// "/"): drop the whole user info, up to the last "@".
	scheme, rest, _ := strings.Cut(dsn, "://")
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		// Keep the user (up to the first ":" or "@"), when there is a password.
		if end := strings.IndexAny(rest, ":@"); end >= 0 && rest[end] == ':' && end < at {
			rest = rest[:end] + ":" + Redacted + rest[at:]
		} else {
			rest = Redacted + rest[at:]
		}
	}
	return scheme + "://" + queryPassword.ReplaceAllString(rest, "${1}"+Redacted)
}

// resolveStateDir makes a relative state dir relative to the config file's folder.
func resolveStateDir(dir, file string) string {
	if dir == "" {
		dir = DefaultStateDir
	}
	if filepath.IsAbs(dir) || file == "" {
		return dir
	}
	return filepath.Join(filepath.Dir(file), dir)
}

// IndexByName returns the index called name.
func (c *Config) IndexByName(name string) (*Index, bool) {
	for i := range c.Indexes {
		if c.Indexes[i].Name == name {
			return &c.Indexes[i], true
		}
	}
	return nil, false
}

// Select keeps only the named indexes; an unknown name is an error.
func (c *Config) Select(names []string) error {
	if len(names) == 0 {
		return nil
	}
	var kept []Index
	for _, n := range names {
		ix, ok := c.IndexByName(n)
		if !ok {
			return fmt.Errorf("--index %s: no such index in the config (have: %s)", n, strings.Join(c.indexNames(), ", "))
		}
		kept = append(kept, *ix)
	}
	c.Indexes = kept
	return nil
}

func (c *Config) indexNames() []string {
	out := make([]string, len(c.Indexes))
	for i, ix := range c.Indexes {
		out[i] = ix.Name
	}
	return out
}
