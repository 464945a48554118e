package change

import "testing"

func TestParseTable(t *testing.T) {
	cases := []struct {
		in      string
		want    Table
		wantErr bool
	}{
		{"public.posts", Table{"public", "posts"}, false},
		{"posts", Table{"", "posts"}, false},
		{"Public.Posts", Table{"public", "posts"}, false},
		{`"Media".album`, Table{"Media", "album"}, false},
		{`"My Schema"."Order"`, Table{"My Schema", "Order"}, false},
		{`"we""ird"."a.b"`, Table{`we"ird`, "a.b"}, false},
		{"", Table{}, true},
		{"a.", Table{}, true},
		{".a", Table{}, true},
		{"a.b.c", Table{}, true},
		{`"open.a`, Table{}, true},
		{`my table`, Table{}, true},
		{`""."x"`, Table{}, true},
	}
	for _, c := range cases {
		got, err := ParseTable(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("ParseTable(%q) error = %v, want error %v", c.in, err, c.wantErr)
			continue
		}
		if !c.wantErr && got != c.want {
			t.Errorf("ParseTable(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestTableStringRoundTrips(t *testing.T) {
	for _, tb := range []Table{{"public", "posts"}, {"Media", "album"}, {"My Schema", "Order"}, {"public", "select"}, {`we"ird`, "a.b"}, {"s", "1abc"}} {
		back, err := ParseTable(tb.String())
		if err != nil || back != tb {
			t.Errorf("%+v → %s → %+v, %v", tb, tb.String(), back, err)
		}
		if q := tb.Quoted(); q[0] != '"' {
			t.Errorf("Quoted(%+v) = %s", tb, q)
		}
	}
}

func TestQuoteLiteral(t *testing.T) {
	if got := QuoteLiteral("it's"); got != "'it''s'" {
		t.Fatalf("QuoteLiteral = %s", got)
	}
}
