package config

import (
	"strings"
	"testing"
)

var defaultJetStream = JetStream{Subject: "flusso.{index}", Stream: "FLUSSO", Replicas: 1, MaxInFlight: 1024}

func TestOutputJetStream(t *testing.T) {
	cfg, err := Parse([]byte(`
output:
  kind: jetstream
  jetstream:
    url: nats://a:4222,nats://b:4222
    subject: search.{index}
    stream: DOCS
    replicas: 3
    creds: /etc/flusso/nats.creds
    ca: /etc/flusso/ca.pem
    max_in_flight: 256
` + validIndex))
	if err != nil {
		t.Fatal(err)
	}
	want := JetStream{URL: "nats://a:4222,nats://b:4222", Subject: "search.{index}", Stream: "DOCS", Replicas: 3,
		Creds: "/etc/flusso/nats.creds", CA: "/etc/flusso/ca.pem", MaxInFlight: 256}
	if cfg.Output.Kind != OutputJetStream || cfg.Output.JetStream != want {
		t.Fatalf("got kind %q %+v\nwant %+v", cfg.Output.Kind, cfg.Output.JetStream, want)
	}
}

func TestOutputJetStreamFromEnvironment(t *testing.T) {
	env := map[string]string{"FLUSSO_OUTPUT_KIND": "jetstream", "FLUSSO_OUTPUT_JETSTREAM_URL": "nats://x:4222", "FLUSSO_OUTPUT_JETSTREAM_PASSWORD": "p", "FLUSSO_OUTPUT_JETSTREAM_USER": "u"}
	root, err := parseYAML([]byte(validIndex))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decode(root, "", nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if js := cfg.Output.JetStream; cfg.Output.Kind != OutputJetStream || js.URL != "nats://x:4222" || js.User != "u" || js.Password != "p" {
		t.Fatalf("got %+v", cfg.Output)
	}
}

func TestOutputProblems(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"output:\n  kind: kafka\n", `output.kind: "kafka" is not one of stdout, file, jetstream`},
		{"output:\n  kind: jetstream\n", "output.jetstream.url: missing"},
		{"output:\n  kind: file\n", "output.path: must name a file"},
		{"output:\n  kind: stdout\n  path: x.ndjson\n", "output.kind: stdout, but output.path is"},
		{"output:\n  kind: jetstream\n  jetstream:\n    url: nats://a\n    replicas: 0\n", "output.jetstream.replicas"},
		{"output:\n  kind: jetstream\n  jetstream:\n    url: nats://a\n    replicas: 7\n", "at most 5"},
		{"output:\n  kind: jetstream\n  jetstream:\n    urll: nats://a\n", `unknown key "urll" (did you mean "url"?)`},
		{"output:\n  jetstream: nats://a\n", "output.jetstream: must be a mapping of keys"},
		{"output:\n  kind: jetstream\n  jetstream:\n    url: nats://a\n    password: p\n", "a password needs a user"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.yaml + validIndex))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.yaml, err, c.want)
		}
	}
}
