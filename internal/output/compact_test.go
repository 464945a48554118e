package output

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestAppendCompact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"id" : 42, "title" : "a b"}`, `{"id":42,"title":"a b"}`},
		{`{"a" : [1, 2, {"b" : null}], "c" : true}`, `{"a":[1,2,{"b":null}],"c":true}`},
		{"{\n  \"j\": {\"x\":\t1},\r\n  \"k\": [ ]\n}", `{"j":{"x":1},"k":[]}`},
		{`{"q" : "say \"hi\" , ok", "s" : "back\\", "t" : " : "}`, `{"q":"say \"hi\" , ok","s":"back\\","t":" : "}`},
		{`{"u" : "\\\"x y\\\\"}`, `{"u":"\\\"x y\\\\"}`},
		{`"só , ü : 🙂"`, `"só , ü : 🙂"`},
		{`{"n" : -1.5e+10 , "e" : ""}`, `{"n":-1.5e+10,"e":""}`},
		{`  7  `, `7`},
		{``, ``},
		{`{"open" : "no end`, `{"open":"no end`}, // not JSON: copied as it is from the string on
	} {
		got := AppendCompact([]byte("prefix:"), []byte(c.in))
		if string(got) != "prefix:"+c.want {
			t.Errorf("AppendCompact(%q) = %q, want %q", c.in, got[len("prefix:"):], c.want)
		}
	}
}

// The compacted line of a document Postgres built is exactly what
// encoding/json's Compact makes of it: whitespace is all that goes.
func FuzzAppendCompact(f *testing.F) {
	for _, s := range []string{`{"id" : 42, "t" : "a \" b"}`, `[1, "\\", {"x" : [ ]}]`, "{\"a\":\n\"\\u00e9\"}", `"\\\\"`, `{"a" : "\\\" , "}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		got := AppendCompact(nil, src) // never panics, whatever src is
		if !json.Valid(src) {
			return
		}
		var want bytes.Buffer
		if err := json.Compact(&want, src); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("AppendCompact(%q) = %q, json.Compact gives %q", src, got, want.Bytes())
		}
	})
}

func TestAppendCompactAllocatesNothing(t *testing.T) {
	doc := []byte(`{"id" : 42, "title" : "post \"title\" 42", "tags" : ["a", "b"]}`)
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = AppendCompact(buf[:0], doc) }); n != 0 {
		t.Fatalf("AppendCompact allocates %v times per call into a buffer with room", n)
	}
}
