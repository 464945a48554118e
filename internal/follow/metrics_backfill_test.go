package follow_test

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// flusso_documents_total counts the backfill's lines too, and its series
// exist before the first stream line (a rate() alert sees 0, not nothing).
func TestDocumentsTotalCountsBackfillLines(t *testing.T) {
	db := blog(t, 5, 20, 40)
	dir := t.TempDir()
	cfg := writeConfig(t, db, dir, "")
	out := filepath.Join(dir, "out.ndjson")
	addr := "127.0.0.1:" + freePort(t)
	p := start(t, out, "follow", "--config", cfg, "--listen", addr)
	waitFold(t, db, out, 30*time.Second)
	waitFor(t, 10*time.Second, func() bool { return get(addr+"/readyz") == 200 })
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`flusso_documents_total{index="posts",op="upsert"} 20`, `flusso_documents_total{index="posts",op="delete"} 0`} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics after a 20-document backfill lacks %s", want)
		}
	}
	p.stop(t, syscall.SIGTERM, 15*time.Second)
}
