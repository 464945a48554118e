// Package change holds the vocabulary that capture (internal/wal) hands to
// document building (internal/build): a table name, and a thin changed row
// that carries only the columns some index needs — the key and the join
// columns — in Postgres text format, old and new.
//
// Values stay in the text form pgoutput sends (and Postgres prints). They are
// compared on the server by casting them to the column's type, so a bigint past
// 2^53 or a numeric(30,10) is never rounded through a float.
package change

import (
	"fmt"
	"strings"
)

// Table names a table by schema and name, exactly as the catalog spells them
// (unquoted).
type Table struct {
	Schema string
	Name   string
}

// String gives the table as SQL, each part quoted when it needs to be:
// public.posts, "Media".album.
func (t Table) String() string {
	if t.Schema == "" {
		return QuoteIdentIfNeeded(t.Name)
	}
	return QuoteIdentIfNeeded(t.Schema) + "." + QuoteIdentIfNeeded(t.Name)
}

// Quoted gives the table as SQL with both parts always quoted.
func (t Table) Quoted() string {
	if t.Schema == "" {
		return QuoteIdent(t.Name)
	}
	return QuoteIdent(t.Schema) + "." + QuoteIdent(t.Name)
}

// QuoteIdent quotes an identifier for SQL: "ArtistId", "select", "we""ird".
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// QuoteIdentIfNeeded quotes s only when Postgres would not read it back as
// written (upper case, special characters, a leading digit).
func QuoteIdentIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case (r >= '0' && r <= '9') || r == '$':
			if i == 0 {
				return QuoteIdent(s)
			}
		default:
			return QuoteIdent(s)
		}
	}
	if reserved[s] {
		return QuoteIdent(s)
	}
	return s
}

// QuoteLiteral quotes a string as an SQL literal.
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// reserved holds the SQL key words that cannot be used unquoted as names.
var reserved = map[string]bool{
	"all": true, "analyse": true, "analyze": true, "and": true, "any": true, "array": true, "as": true, "asc": true,
	"asymmetric": true, "both": true, "case": true, "cast": true, "check": true, "collate": true, "column": true,
	"constraint": true, "create": true, "current_catalog": true, "current_date": true, "current_role": true,
	"current_time": true, "current_timestamp": true, "current_user": true, "default": true, "deferrable": true,
	"desc": true, "distinct": true, "do": true, "else": true, "end": true, "except": true, "false": true,
	"fetch": true, "for": true, "foreign": true, "from": true, "grant": true, "group": true, "having": true,
	"in": true, "initially": true, "intersect": true, "into": true, "lateral": true, "leading": true, "limit": true,
	"localtime": true, "localtimestamp": true, "not": true, "null": true, "offset": true, "on": true, "only": true,
	"or": true, "order": true, "placing": true, "primary": true, "references": true, "returning": true,
	"select": true, "session_user": true, "some": true, "symmetric": true, "system_user": true, "table": true,
	"then": true, "to": true, "trailing": true, "true": true, "union": true, "unique": true, "user": true,
	"using": true, "variadic": true, "when": true, "where": true, "window": true, "with": true,
}

// ParseTable reads a table name as the config writes it: schema.table, with
// double quotes around a part that has upper-case letters or other special
// characters ("Media".album). Unquoted parts are folded to lower case, as
// Postgres does. A name without a schema has Schema "" (resolved later on the
// connection's search_path).
func ParseTable(s string) (Table, error) {
	parts, err := splitQualified(s)
	if err != nil {
		return Table{}, fmt.Errorf("table name %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return Table{Name: parts[0]}, nil
	case 2:
		return Table{Schema: parts[0], Name: parts[1]}, nil
	default:
		return Table{}, fmt.Errorf("table name %q: write it as schema.table (quote a part that contains a dot)", s)
	}
}

func splitQualified(s string) ([]string, error) {
	var parts []string
	i := 0
	for {
		if i >= len(s) {
			return nil, fmt.Errorf("a name part is empty")
		}
		var part string
		if s[i] == '"' {
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(s) {
					return nil, fmt.Errorf("a double quote is not closed")
				}
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			part = b.String()
			if part == "" {
				return nil, fmt.Errorf("a quoted name part is empty")
			}
			i = j + 1
		} else {
			j := i
			for j < len(s) && s[j] != '.' {
				if s[j] == '"' || s[j] == ' ' {
					return nil, fmt.Errorf("unexpected %q: quote the whole part, as in \"My Table\"", s[j])
				}
				j++
			}
			part = strings.ToLower(s[i:j])
			if part == "" {
				return nil, fmt.Errorf("a name part is empty")
			}
			i = j
		}
		parts = append(parts, part)
		if i == len(s) {
			return parts, nil
		}
		if s[i] != '.' {
			return nil, fmt.Errorf("expected a dot after %q", part)
		}
		i++
	}
}

// Op is what happened to a row.
type Op byte

// The operations pgoutput reports.
const (
	Insert   Op = 'I'
	Update   Op = 'U'
	Delete   Op = 'D'
	Truncate Op = 'T'
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// Value is one column value in Postgres text format.
type Value struct {
	Text string
	Null bool
	// Missing marks a value the server did not send: an unchanged TOAST
	// value ('u') with no old tuple to take it from. It is never a NULL.
	Missing bool
}

// Row is one changed row of Table, thin: Cols names the columns carried (the
// table's key columns first, then the join columns indexes need), and Old and
// New hold their values in the same order.
//
//   - Insert: New only.
//   - Update: New, and Old when the server sent an old tuple (REPLICA
//     IDENTITY FULL, or a key change under DEFAULT / USING INDEX).
//   - Delete: Old only (whatever the replica identity gives: the key, or the
//     whole row under FULL; columns it does not give are Missing).
//   - Truncate: no values; the whole table was emptied.
type Row struct {
	Table Table
	Op    Op
	Cols  []string
	Old   []Value
	New   []Value
}

// Col returns the index of column name in r.Cols, or -1.
func (r *Row) Col(name string) int {
	for i, c := range r.Cols {
		if c == name {
			return i
		}
	}
	return -1
}
