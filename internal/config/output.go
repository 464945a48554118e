package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Output kinds.
const (
	OutputStdout    = "stdout"
	OutputFile      = "file"
	OutputJetStream = "jetstream"
)

// JetStream is output.jetstream: a NATS JetStream stream the lines are
// published to (see docs/jetstream.md).
type JetStream struct {
	URL         string // one or more servers, comma-separated
	Subject     string // with {index}; default flusso.{index}
	Stream      string // default FLUSSO
	Replicas    int    // of a stream flusso-pg creates; default 1
	Creds       string // a .creds file
	NKey        string // an nkey seed file
	User        string
	Password    string
	Token       string
	CA          string // PEM file of the servers' CA
	MaxInFlight int    // messages published and not yet acknowledged; default 1024
}

// outputKeys are output's keys with their defaults (merged into scalarKeys).
var outputKeys = map[string]any{
	"output.kind":                    "",
	"output.jetstream.url":           "",
	"output.jetstream.subject":       "flusso.{index}",
	"output.jetstream.stream":        "FLUSSO",
	"output.jetstream.replicas":      1,
	"output.jetstream.creds":         "",
	"output.jetstream.nkey":          "",
	"output.jetstream.user":          "",
	"output.jetstream.password":      "",
	"output.jetstream.token":         "",
	"output.jetstream.ca":            "",
	"output.jetstream.max_in_flight": 1024,
}

func init() {
	for k, v := range outputKeys {
		scalarKeys[k] = v
	}
}

// sectionScalars reads the scalar keys of a section (n, at path), one level
// of nested mapping included (output.jetstream), into scalars.
func (d *decoder) sectionScalars(n *yaml.Node, path string, scalars map[string]string) {
	for _, e := range d.entries(n, path, sectionKeys(path)) {
		key := path + "." + e.key
		switch {
		case e.v.Kind == yaml.MappingNode && len(sectionKeys(key)) > 0:
			d.sectionScalars(e.v, key, scalars)
		case e.v.Kind != yaml.ScalarNode:
			d.errf(e.v, key, "must be a single value")
		case e.v.Tag == "!!null":
			// key: ~ keeps the default
		case len(sectionKeys(key)) > 0:
			d.errf(e.v, key, "must be a mapping of keys (%s)", strings.Join(sectionKeys(key), ", "))
		default:
			scalars[key] = e.v.Value
		}
	}
}

// decodeOutput fills out's kind and jetstream from v; a kind left out is
// stdout for output.path "-" and file otherwise, as before output.kind existed.
func decodeOutput(v *viper.Viper, out *Output, name func(string) string) []string {
	var errs []string
	out.Kind = strings.ToLower(strings.TrimSpace(v.GetString("output.kind")))
	if out.Kind == "" {
		out.Kind = OutputStdout
		if out.Path != "-" && out.Path != "" {
			out.Kind = OutputFile
		}
	}
	num := func(key string) int {
		s := strings.TrimSpace(v.GetString(key))
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Sprintf("%s: %q is not a positive whole number", name(key), s))
		}
		return n
	}
	js := &out.JetStream
	js.URL = strings.TrimSpace(v.GetString("output.jetstream.url"))
	js.Subject = strings.TrimSpace(v.GetString("output.jetstream.subject"))
	js.Stream = strings.TrimSpace(v.GetString("output.jetstream.stream"))
	js.Replicas = num("output.jetstream.replicas")
	js.Creds = v.GetString("output.jetstream.creds")
	js.NKey = v.GetString("output.jetstream.nkey")
	js.User = v.GetString("output.jetstream.user")
	js.Password = v.GetString("output.jetstream.password")
	js.Token = v.GetString("output.jetstream.token")
	js.CA = v.GetString("output.jetstream.ca")
	js.MaxInFlight = num("output.jetstream.max_in_flight")
	return errs
}

// validate checks output.kind against output.path and output.jetstream.
func (o *Output) validate(v *validator) {
	switch o.Kind {
	case OutputStdout:
		if o.Path != "-" && o.Path != "" {
			v.add("output.kind", "stdout, but output.path is %q: use kind: file for a file, or path: \"-\"", o.Path)
		}
	case OutputFile:
		if o.Path == "-" {
			v.add("output.path", `must name a file with output.kind: file ("-" is stdout)`)
		}
	case OutputJetStream:
		js := o.JetStream
		if js.URL == "" {
			v.add("output.jetstream.url", "missing: give the NATS servers, such as nats://127.0.0.1:4222 (several comma-separated)")
		}
		if js.Subject == "" {
			v.add("output.jetstream.subject", `must not be empty: the default is "flusso.{index}"`)
		}
		if js.Stream == "" {
			v.add("output.jetstream.stream", "must not be empty")
		}
		if js.Replicas > 5 {
			v.add("output.jetstream.replicas", "%d: JetStream allows at most 5", js.Replicas)
		}
		if js.Creds != "" && js.NKey != "" {
			v.add("output.jetstream.nkey", "give either creds or nkey, not both")
		}
		if js.Password != "" && js.User == "" {
			v.add("output.jetstream.user", "missing: a password needs a user")
		}
	default:
		v.add("output.kind", "%q is not one of stdout, file, jetstream", o.Kind)
	}
}
