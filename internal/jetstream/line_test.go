package jetstream

import (
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/flusso-pg/flusso-pg/internal/output"
)

func TestParseHead(t *testing.T) {
	lsn := pglogrepl.LSN(0x16B3748)
	cases := []struct {
		name string
		line []byte
		want head
		id   string
	}{
		{"upsert", output.AppendUpsert(nil, "posts", []byte(`{"id":42}`), "42", lsn, []byte(`{"id":42,"lsn":"9/9"}`)),
			head{index: "posts", op: "upsert", id: "42", hasID: true, lsn: lsn}, "posts:42:0/16B3748"},
		{"delete with a composite key", output.AppendDelete(nil, "order lines", []byte(`{"a":"x:y","b":[1,{"c":"}"}]}`), `x\:y:1`, lsn),
			head{index: "order lines", op: "delete", id: `x\:y:1`, hasID: true, lsn: lsn}, `order%20lines:x\%3Ay%3A1:0/16B3748`},
		{"escaped", output.AppendDelete(nil, "we\"ird", []byte(`{"k":"a\nb"}`), "a\nb!%", lsn),
			head{index: "we\"ird", op: "delete", id: "a\nb!%", hasID: true, lsn: lsn}, `we"ird:a%0Ab%21%25:0/16B3748`},
		{"truncate", output.AppendTruncate(nil, "posts", lsn),
			head{index: "posts", op: "truncate", lsn: lsn}, "posts!truncate:0/16B3748"},
		{"rebuild_start", []byte(`{"index":"posts","op":"rebuild_start","lsn":"0/16B3748"}`),
			head{index: "posts", op: "rebuild_start", lsn: lsn}, "posts!rebuild_start:0/16B3748"},
		{"extra field and other order (fallback)", []byte(`{"op":"upsert","index":"p","lsn":"0/16B3748","id":"1","ack":true}`),
			head{index: "p", op: "upsert", id: "1", hasID: true, lsn: lsn}, "p:1:0/16B3748"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			line := c.line
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			got, err := parseHead(line)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			if id := got.msgID(); id != c.id {
				t.Fatalf("msg id %q, want %q", id, c.id)
			}
		})
	}
	for _, bad := range []string{`not json`, `{"index":"p"}`, `{"index":"p","op":"upsert","lsn":"zz"}`} {
		if _, err := parseHead([]byte(bad)); err == nil {
			t.Errorf("parseHead(%s) accepted it", bad)
		}
	}
}

func FuzzParseHead(f *testing.F) {
	f.Add([]byte(`{"index":"posts","op":"upsert","key":{"id":1},"id":"1","lsn":"0/1","doc":{}}`))
	f.Add([]byte(`{"index":"p","op":"truncate","lsn":"0/1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseHead(b) // must not panic
	})
}

func TestConfigCheck(t *testing.T) {
	ok := Config{URL: "nats://a", Indexes: []string{"posts", "tags"}}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Indexes: []string{"posts"}}, "output.jetstream.url: missing"},
		{Config{URL: "nats://a", Indexes: []string{"my posts"}}, `index "my posts"`},
		{Config{URL: "nats://a", Indexes: []string{"a*"}}, "wildcard"},
		{Config{URL: "nats://a", Subject: "x..{index}", Indexes: []string{"p"}}, "empty token"},
		{Config{URL: "nats://a", Stream: "a.b", Indexes: []string{"p"}}, "not a valid stream name"},
	} {
		err := c.cfg.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestSubjectMatches(t *testing.T) {
	for _, c := range []struct {
		filter, subj string
		want         bool
	}{
		{"flusso.*", "flusso.posts", true}, {"flusso.>", "flusso.a.b", true}, {"flusso.*", "flusso.a.b", false},
		{"flusso.posts", "flusso.posts", true}, {"flusso.posts", "flusso.tags", false}, {">", "x", true}, {"flusso.>", "flusso", false},
	} {
		if got := subjectMatches(c.filter, c.subj); got != c.want {
			t.Errorf("subjectMatches(%s, %s) = %v", c.filter, c.subj, got)
		}
	}
}
