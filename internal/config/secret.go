package config

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// CheckDSN refuses a URL DSN whose user or password holds an unencoded "@":
// the driver splits the URL at the first "@", takes the rest of the
// password for the host name, and quotes it in its errors. The message
// names no part of the password.
func CheckDSN(dsn string) error {
	lower := strings.ToLower(dsn)
	if !strings.HasPrefix(lower, "postgres://") && !strings.HasPrefix(lower, "postgresql://") {
		return nil
	}
	_, rest, _ := strings.Cut(dsn, "://")
	if q := strings.IndexAny(rest, "?#"); q >= 0 {
		rest = rest[:q]
	}
	if strings.Count(rest, "@") > 1 {
		return fmt.Errorf("source.dsn: the user or password holds an \"@\" that is not percent-encoded: percent-encode it as %%40 (and \"/\" as %%2F, \":\" in the user as %%3A), or give the password in PGPASSWORD or ~/.pgpass")
	}
	return nil
}

// Secrets returns the password of dsn (URL, query-string or key=value
// form, sslpassword included) and the pieces a driver could quote on their
// own (split at "@", ":", "/", "?"), longest first, for Redact.
func Secrets(dsn string) []string {
	var pw []string
	lower := strings.ToLower(dsn)
	if strings.HasPrefix(lower, "postgres://") || strings.HasPrefix(lower, "postgresql://") {
		_, rest, _ := strings.Cut(dsn, "://")
		query := ""
		if q := strings.IndexByte(rest, '?'); q >= 0 {
			rest, query = rest[:q], rest[q+1:]
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, p, ok := strings.Cut(rest[:at], ":"); ok {
				pw = append(pw, p)
				if dec, err := url.PathUnescape(p); err == nil {
					pw = append(pw, dec)
				}
			}
		}
		for _, kv := range strings.Split(query, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if k = strings.ToLower(k); k == "password" || k == "sslpassword" {
				pw = append(pw, v)
				if dec, err := url.QueryUnescape(v); err == nil {
					pw = append(pw, dec)
				}
			}
		}
	} else {
		for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
			v := m[2]
			if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
				v = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(v[1 : len(v)-1])
			}
			pw = append(pw, v)
		}
	}
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if len(s) >= 3 && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, p := range pw {
		add(p)
		for _, piece := range strings.FieldsFunc(p, func(r rune) bool { return strings.ContainsRune("@:/?#", r) }) {
			add(piece)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Redact replaces every secret in text, as is and as JSON or Go quoting
// would escape it, with xxxxx.
func Redact(text string, secrets []string) string {
	for _, s := range secrets {
		text = strings.ReplaceAll(text, s, Redacted)
		if q := strconv.Quote(s); q[1:len(q)-1] != s {
			text = strings.ReplaceAll(text, q[1:len(q)-1], Redacted)
		}
	}
	return text
}
