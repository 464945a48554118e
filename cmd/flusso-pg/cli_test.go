package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/logging"
)

// Usage mistakes exit 2, everything else that fails 1 (SPEC: "Exit codes
// and conventions").
func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"nosuch"},
		{"follow", "--bogus"},
		{"check", "extra"},
		{"backfill", "--workers", "abc"},
	} {
		_, _, err := run(t, args...)
		if err == nil || !isUsage(err) {
			t.Errorf("%v: err %v is not a usage error (exit 2)", args, err)
		}
	}
	t.Setenv("FLUSSO_SOURCE_DSN", "")
	_, _, err := run(t, "validate", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || isUsage(err) {
		t.Errorf("a missing config file: err %v, want a failure (exit 1), not a usage error", err)
	}
}

func TestVersionFlag(t *testing.T) {
	out, _, err := run(t, "--version")
	if err != nil || !strings.HasPrefix(out, "flusso-pg "+version) {
		t.Fatalf("--version printed %q (err %v)", out, err)
	}
	out2, _, _ := run(t, "version")
	if out2 != out {
		t.Fatalf("--version %q and version %q differ", out, out2)
	}
}

// Without --config, FLUSSO_CONFIG names the file, else ./flusso.yaml is
// read; with neither, the error says no config was given (not "no index").
func TestConfigFileSearch(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("FLUSSO_SOURCE_DSN", "postgres://u@127.0.0.1:1/x")
	_, _, err := run(t, "validate")
	if err == nil || !strings.Contains(err.Error(), "no config file: give --config FILE, set FLUSSO_CONFIG, or run where ./flusso.yaml is") {
		t.Fatalf("no config anywhere: %v", err)
	}
	if err := os.WriteFile("flusso.yaml", []byte("bogus_here: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, "validate")
	if err == nil || !strings.HasPrefix(err.Error(), "flusso.yaml: line 1: ") {
		t.Fatalf("./flusso.yaml was not read: %v", err)
	}
	other := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(other, []byte("bogus_there: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLUSSO_CONFIG", other)
	_, _, err = run(t, "validate")
	if err == nil || !strings.HasPrefix(err.Error(), other+": line 1: ") {
		t.Fatalf("FLUSSO_CONFIG was not read before ./flusso.yaml: %v", err)
	}
	_, _, err = run(t, "validate", "--config", "flusso.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "flusso.yaml: line 1: ") {
		t.Fatalf("--config does not win over FLUSSO_CONFIG: %v", err)
	}
	t.Setenv("FLUSSO_CONFIG", filepath.Join(dir, "missing.yaml"))
	_, _, err = run(t, "validate")
	if err == nil || !strings.HasPrefix(err.Error(), "FLUSSO_CONFIG names a config file that cannot be read") {
		t.Fatalf("a missing FLUSSO_CONFIG file: %v", err)
	}
}

func TestUnknownEnvNamedInError(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("FLUSSO_SORCE_DSN", "postgres://u@127.0.0.1:1/x")
	_, _, err := run(t, "validate")
	if err == nil || !strings.Contains(err.Error(), "FLUSSO_SORCE_DSN is not one flusso-pg reads: it is ignored (did you mean FLUSSO_SOURCE_DSN?)") {
		t.Fatalf("a misspelt variable is not named: %v", err)
	}
}

// A bare "@" in the URL's password is refused before any connection, in
// every command, naming no part of the password.
func TestBareAtInPasswordRefused(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("flusso.yaml", []byte("indexes:\n  - name: p\n    table: public.p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLUSSO_SOURCE_DSN", "postgres://postgres:abc@TAILSECRET@127.0.0.1:1/blog")
	for _, c := range []string{"check", "validate", "follow", "backfill", "explain", "drop"} {
		out, errOut, err := run(t, c)
		all := out + errOut
		if err != nil {
			all += err.Error()
		}
		if err == nil || !strings.Contains(err.Error(), "percent-encode it as %40") {
			t.Errorf("%s: %v, want the refusal naming %%40", c, err)
		}
		if strings.Contains(all, "TAILSECRET") || strings.Contains(all, "abc") {
			t.Errorf("%s: a part of the password is printed: %s", c, all)
		}
	}
}

func TestRedactingWriter(t *testing.T) {
	var b strings.Builder
	s := []string{"TAILSECRET"}
	secrets.Store(&s)
	defer secrets.Store(nil)
	w := logging.Redacting(&b, redact)
	w.Write([]byte(`{"msg":"lookup TAILSECRET@127.0.0.1: no such host"}` + "\n"))
	if strings.Contains(b.String(), "TAILSECRET") || !strings.Contains(b.String(), "xxxxx@127.0.0.1") {
		t.Fatalf("redacted log line = %q", b.String())
	}
}

func TestHealthProbe(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "backfilling\n")
			return
		}
		w.WriteHeader(status)
		io.WriteString(w, "ok\n")
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	out, _, err := run(t, "health", "--addr", addr)
	if err != nil || out != "ok\n" {
		t.Fatalf("health on a healthy follow: %q, %v", out, err)
	}
	_, _, err = run(t, "health", "--addr", addr, "--ready")
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "answers 503: backfilling") {
		t.Fatalf("health --ready on a backfilling follow: %v", err)
	}
	srv.Close()
	_, _, err = run(t, "health", "--addr", addr)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "no answer from") {
		t.Fatalf("health with nothing listening: %v", err)
	}
}
