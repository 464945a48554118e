package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/fault"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

// While a stage is degraded, /readyz is 503 and says why, /healthz stays
// ok, flusso_degraded is 1 and the retries are counted by stage and class;
// all of it clears when the stage recovers.
func TestHealthDrivesReadyzAndTheDegradedMetrics(t *testing.T) {
	m := New()
	h := fault.NewHealth(nil)
	m.WatchHealth(h)
	m.SetReady(true)
	srv := m.Handler()
	if code, _ := get(t, srv, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d before any fault", code)
	}
	h.Failed("build", fault.Transient, errors.New("read tcp: connection reset by peer"))
	h.Failed("build", fault.Transient, errors.New("read tcp: connection reset by peer"))
	code, body := get(t, srv, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "build") || !strings.Contains(body, "connection reset") {
		t.Fatalf("/readyz while degraded: %d %q", code, body)
	}
	if code, body := get(t, srv, "/healthz"); code != 200 {
		t.Fatalf("/healthz while degraded: %d %q, want ok", code, body)
	}
	_, text := get(t, srv, "/metrics")
	for _, want := range []string{"flusso_degraded 1", `flusso_retries_total{class="transient",stage="build"} 2`} {
		if !strings.Contains(text, want) {
			t.Fatalf("/metrics lacks %q while degraded", want)
		}
	}
	h.Recovered("build")
	if code, _ := get(t, srv, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d after recovery", code)
	}
	if _, text := get(t, srv, "/metrics"); !strings.Contains(text, "flusso_degraded 0") {
		t.Fatal("flusso_degraded is not 0 after recovery")
	}
	h.Waiting("capture", "slot s is in use by another client (server pid 7); waiting to take over")
	if code, body := get(t, srv, "/readyz"); code != 503 || !strings.Contains(body, "waiting to take over") {
		t.Fatalf("/readyz while waiting: %d %q", code, body)
	}
	m.SetFailed("boom")
	if code, _ := get(t, srv, "/healthz"); code != 503 {
		t.Fatalf("/healthz %d after SetFailed", code)
	}
}

type stats struct{}

func (stats) Reconnects() int64  { return 3 }
func (stats) Spills() int64      { return 1 }
func (stats) SocketReads() int64 { return 10 }
func (stats) ReadPauses() int64  { return 2 }

func TestWatchCaptureExportsEveryCounter(t *testing.T) {
	m := New()
	m.WatchCapture(stats{})
	_, body := get(t, m.Handler(), "/metrics")
	for _, want := range []string{"flusso_reconnects_total 3", "flusso_capture_spilled_transactions_total 1",
		"flusso_capture_socket_reads_total 10", "flusso_capture_read_pauses_total 2"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// The fan-out's gauge and the group-size histogram are exported from the start.
func TestFanoutMetricsAreExported(t *testing.T) {
	m := New()
	m.FanoutDocuments.Set(20000)
	m.GroupDocuments.Observe(20000)
	_, body := get(t, m.Handler(), "/metrics")
	for _, want := range []string{"flusso_fanout_documents 20000", `flusso_group_documents_bucket{le="10000"} 0`,
		`flusso_group_documents_bucket{le="100000"} 1`, "flusso_group_documents_count 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
