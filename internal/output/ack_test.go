package output

import (
	"encoding/json"
	"testing"
)

func TestAppendAckMark(t *testing.T) {
	cases := []struct {
		name string
		line []byte
		want string
	}{
		{"upsert", AppendUpsert(nil, "posts", []byte(`{"id":1}`), "1", 0x16B3748, []byte(`{"id":1}`)),
			`{"index":"posts","op":"upsert","key":{"id":1},"id":"1","lsn":"0/16B3748","doc":{"id":1},"ack":true}` + "\n"},
		{"delete", AppendDelete(nil, "posts", []byte(`{"id":1}`), "1", 0x16B3790),
			`{"index":"posts","op":"delete","key":{"id":1},"id":"1","lsn":"0/16B3790","ack":true}` + "\n"},
		{"truncate", AppendTruncate(nil, "posts", 0x16B37F0),
			`{"index":"posts","op":"truncate","lsn":"0/16B37F0","ack":true}` + "\n"},
		{"not a line", []byte(`{"a":1}`), `{"a":1}`},
		{"empty", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := string(AppendAckMark(c.line))
			if got != c.want {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
			if len(got) > 1 && !json.Valid([]byte(got)) {
				t.Fatalf("not JSON: %q", got)
			}
		})
	}
}
