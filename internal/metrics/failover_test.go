package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

type failoverStats struct{}

func (failoverStats) Timeline() int32  { return 3 }
func (failoverStats) Failovers() int64 { return 2 }

func TestWatchFailoverExportsTimelineAndFailovers(t *testing.T) {
	m := New()
	m.WatchFailover(failoverStats{})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"flusso_server_timeline 3", "flusso_failovers_total 2"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
