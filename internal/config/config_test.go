package config

import (
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	tests := []struct {
		name, dsn, want string
	}{
		{"url with password", "postgres://flusso:s3cret@db:5432/app?sslmode=require", "postgres://flusso:xxxxx@db:5432/app?sslmode=require"},
		{"postgresql scheme, escaped password", "postgresql://flusso:p%40ss%2Fword@db/app", "postgresql://flusso:xxxxx@db/app"},
		{"url without password", "postgres://flusso@db:5432/app", "postgres://flusso@db:5432/app"},
		{"url without user", "postgres://db/app?sslmode=disable", "postgres://db/app?sslmode=disable"},
		{"password in the query", "postgres://flusso@db/app?sslmode=disable&password=s3cret&application_name=x", "postgres://flusso@db/app?sslmode=disable&password=xxxxx&application_name=x"},
		{"sslpassword in the query", "postgres://db/app?sslpassword=s3cret", "postgres://db/app?sslpassword=xxxxx"},
		{"socket url", "postgres:///app?host=/var/run/postgresql&password=s3cret", "postgres:///app?host=/var/run/postgresql&password=xxxxx"},
		{"several hosts", "postgres://flusso:s3cret@h1:5432,h2:5433/app", "postgres://flusso:xxxxx@h1:5432,h2:5433/app"},
		{"unescaped @ and / in the password", "postgres://flusso:pa@ss/word@db/app", "postgres://flusso:xxxxx@db/app"},
		{"upper-case scheme", "POSTGRES://flusso:s3cret@db/app", "postgres://flusso:xxxxx@db/app"},
		{"key=value", "host=db user=flusso password=s3cret dbname=app", "host=db user=flusso password=xxxxx dbname=app"},
		{"key=value, quoted password", "host=db password='s3 cr\\'et' dbname=app", "host=db password=xxxxx dbname=app"},
		{"key=value, spaces around =", "host=db password = s3cret dbname=app", "host=db password = xxxxx dbname=app"},
		{"key=value, upper case", "host=db PASSWORD=s3cret", "host=db PASSWORD=xxxxx"},
		{"key=value, sslpassword", "host=db sslpassword=s3cret", "host=db sslpassword=xxxxx"},
		{"key=value, without password", "host=db user=flusso dbname=app", "host=db user=flusso dbname=app"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RedactDSN(tt.dsn)
			if got != tt.want {
				t.Errorf("RedactDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
			}
			for _, secret := range []string{"s3cret", "s3 cr", "pa@ss", "ss/word", "p%40ss"} {
				if strings.Contains(tt.dsn, secret) && strings.Contains(got, secret) {
					t.Errorf("RedactDSN(%q) = %q still holds %q", tt.dsn, got, secret)
				}
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"32MiB", 32 << 20, true},
		{"512KiB", 512 << 10, true},
		{"1GiB", 1 << 30, true},
		{"64MB", 64e6, true},
		{"10KB", 10e3, true},
		{"100B", 100, true},
		{"4096", 4096, true},
		{" 8 MiB ", 8 << 20, true},
		{"0", 0, false},
		{"-1MiB", 0, false},
		{"lots", 0, false},
		{"MiB", 0, false},
		{"1.5MiB", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBytes(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"relatons", "relations"},
		{"colums", "columns"},
		{"has_manny", "has_many"},
		{"belongsto", "belongs_to"},
		{"cnt", "count"},
		{"Kind", "kind"},
		{"zzzzzzzzz", ""},
	}
	candidates := append(append(append([]string{}, relationKeys...), Kinds...), Functions...)
	for _, tt := range tests {
		if got := Suggest(tt.in, candidates); got != tt.want {
			t.Errorf("Suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSelect(t *testing.T) {
	cfg, err := Parse([]byte(validIndex + "  - name: users\n    table: public.users\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Select(nil); err != nil || len(cfg.Indexes) != 2 {
		t.Fatalf("Select(nil) = %v, kept %d", err, len(cfg.Indexes))
	}
	err = cfg.Select([]string{"nope"})
	if err == nil || err.Error() != "--index nope: no such index in the config (have: posts, users)" {
		t.Fatalf("Select(nope) = %v", err)
	}
	if err := cfg.Select([]string{"users"}); err != nil || len(cfg.Indexes) != 1 || cfg.Indexes[0].Name != "users" {
		t.Fatalf("Select(users) = %v, kept %+v", err, cfg.Indexes)
	}
}

func TestCheckDSNRefusesABareAt(t *testing.T) {
	err := CheckDSN("postgres://postgres:abc@TAILSECRET@127.0.0.1:5432/blog")
	if err == nil || !strings.Contains(err.Error(), "percent-encode it as %40") {
		t.Fatalf("CheckDSN = %v, want a refusal saying percent-encode it as %%40", err)
	}
	if strings.Contains(err.Error(), "TAILSECRET") || strings.Contains(err.Error(), "abc") {
		t.Fatalf("the refusal quotes the password: %v", err)
	}
	for _, ok := range []string{
		"postgres://postgres:abc%40TAILSECRET@127.0.0.1:5432/blog",
		"postgres://u@h/db?password=a@b",
		"host=h user=u password=a@b@c",
	} {
		if err := CheckDSN(ok); err != nil {
			t.Errorf("CheckDSN(%q) = %v, want nil", ok, err)
		}
	}
}

func TestRedactSecrets(t *testing.T) {
	for _, tc := range []struct{ dsn, text string }{
		{"postgres://u:abc%40TAIL@h/db", "lookup abc@TAIL: no such host; TAIL"},
		{"postgres://u@h/db?sslmode=disable&password=s3cr%2Fet", "auth s3cr/et failed"},
		{"host=h user=u password='sp ace\\'uoted'", `pw sp ace'uoted`},
		{"host=h password=plainpw", `{"error":"bad plainpw"}`},
	} {
		got := Redact(tc.text, Secrets(tc.dsn))
		for _, piece := range []string{"abc", "TAIL", "s3cr", "uoted", "plainpw"} {
			if strings.Contains(got, piece) {
				t.Errorf("Redact(%q) for %q = %q: %q is still there", tc.text, tc.dsn, got, piece)
			}
		}
	}
}
