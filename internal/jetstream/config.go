package jetstream

import (
	"fmt"
	"strings"
	"time"
)

// Config is where and how to publish (output.jetstream in the config file).
type Config struct {
	URL      string // one or more servers, comma-separated: nats://a:4222,nats://b:4222
	Subject  string // "flusso.{index}" when empty
	Stream   string // the stream's name; "FLUSSO" when empty
	Replicas int    // replication factor of a stream created by flusso-pg; 0 is 1
	// Credentials, the way NATS clients take them: a .creds file (JWT and
	// nkey seed), an nkey seed file, a user and password, or a token.
	Creds, NKey, User, Password, Token string
	CA                                 string // PEM file of the CA that signed the servers' certificates
	// MaxInFlight bounds the messages published and not yet acknowledged; 0 is 1024.
	MaxInFlight int
	// Indexes are the index names: the stream must capture each one's subject.
	Indexes []string
	// AckTimeout is how long an acknowledgement is awaited before the
	// message is published again; 0 is 5 s.
	AckTimeout time.Duration
}

// Defaults.
const (
	DefaultSubject     = "flusso.{index}"
	DefaultStream      = "FLUSSO"
	DefaultMaxInFlight = 1024
)

func (c *Config) defaults() {
	if c.Subject == "" {
		c.Subject = DefaultSubject
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
}

// SubjectFor is the subject an index's lines are published on.
func (c *Config) SubjectFor(index string) string {
	s := c.Subject
	if s == "" {
		s = DefaultSubject
	}
	return strings.ReplaceAll(s, "{index}", index)
}

// Check reports what is wrong with the config before connecting: a subject
// that is not a valid NATS subject for some index, a bad stream name.
func (c *Config) Check() error {
	cc := *c
	cc.defaults()
	var errs []string
	if strings.TrimSpace(cc.URL) == "" {
		errs = append(errs, "output.jetstream.url: missing: give the NATS servers, such as nats://127.0.0.1:4222 (several comma-separated)")
	}
	if strings.ContainsAny(cc.Stream, " \t\r\n.*>/\\") {
		errs = append(errs, fmt.Sprintf("output.jetstream.stream: %q is not a valid stream name: use letters, digits, - and _", cc.Stream))
	}
	if cc.Replicas > 5 {
		errs = append(errs, fmt.Sprintf("output.jetstream.replicas: %d: JetStream allows at most 5", cc.Replicas))
	}
	for _, ix := range cc.Indexes {
		if err := checkSubject(cc.SubjectFor(ix)); err != nil {
			errs = append(errs, fmt.Sprintf("output.jetstream.subject: index %q: %v: rename the index or write a subject without {index}", ix, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// checkSubject accepts a subject one may publish on: dot-separated tokens,
// none empty, no whitespace, no wildcard.
func checkSubject(s string) error {
	if s == "" {
		return fmt.Errorf("the subject is empty")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return fmt.Errorf("subject %q has an empty token", s)
		}
		if strings.ContainsAny(tok, " \t\r\n\f\v") || tok == "*" || tok == ">" || strings.ContainsAny(tok, "*>") {
			return fmt.Errorf("subject %q holds whitespace or a wildcard (* or >)", s)
		}
	}
	return nil
}

// subjectMatches reports whether the stream subject filter covers subject.
func subjectMatches(filter, subject string) bool {
	f := strings.Split(filter, ".")
	s := strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) {
			return false
		}
		if tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}
