package output

import (
	"encoding/json"
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestLinesAreValidJSONWithTheContractFields(t *testing.T) {
	lsn := pglogrepl.LSN(0x16B3748)
	cases := []struct {
		name string
		line []byte
		want map[string]any
	}{
		{"upsert", AppendUpsert(nil, "posts", []byte(`{"id":42}`), "42", lsn, []byte(`{"id":42,"title":"x"}`)),
			map[string]any{"index": "posts", "op": "upsert", "id": "42", "lsn": "0/16B3748"}},
		{"delete", AppendDelete(nil, "posts", []byte(`{"id":42}`), "42", lsn),
			map[string]any{"index": "posts", "op": "delete", "id": "42", "lsn": "0/16B3748"}},
		{"truncate", AppendTruncate(nil, "posts", lsn),
			map[string]any{"index": "posts", "op": "truncate", "lsn": "0/16B3748"}},
		{"escaped id", AppendDelete(nil, "we\"ird", []byte(`{"k":"a:b"}`), "a\n\"b\"\\\x01\u2028\xff", lsn),
			map[string]any{"index": "we\"ird", "id": "a\n\"b\"\\\x01\u2028\ufffd"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.line[len(c.line)-1] != '\n' {
				t.Fatalf("line does not end with a newline: %q", c.line)
			}
			var got map[string]any
			if err := json.Unmarshal(c.line, &got); err != nil {
				t.Fatalf("invalid JSON %q: %v", c.line, err)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %#v, want %#v (line %s)", k, got[k], v, c.line)
				}
			}
			if _, ok := got["doc"]; ok != (c.name == "upsert") {
				t.Errorf("doc present = %v in %s", ok, c.line)
			}
		})
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"", "\x00\x1f", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("AppendString(%q) = %s: invalid JSON: %v", s, out, err)
		}
	})
}

func TestAppendLSNMatchesString(t *testing.T) {
	for _, l := range []pglogrepl.LSN{0, 1, 0x16B3748, 0xFFFFFFFF, 0x1_00000000, 0xABCDEF01_23456789, ^pglogrepl.LSN(0)} {
		if got, want := string(AppendLSN(nil, l)), l.String(); got != want {
			t.Errorf("AppendLSN(%d) = %s, want %s", uint64(l), got, want)
		}
	}
}
