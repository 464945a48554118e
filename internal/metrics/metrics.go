// Package metrics holds flusso-pg's Prometheus metrics and the small HTTP
// server a sidecar exposes with --listen: /healthz (the process is alive and
// not failed: it stays ok while a transient fault is retried), /readyz (the
// backfill is done and the stream is flowing: 503 with the reason while a
// stage is degraded or waiting) and /metrics (Prometheus text format).
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/flusso-pg/flusso-pg/internal/fault"
)

// Metrics is the set of metrics one flusso-pg process exports.
type Metrics struct {
	Registry *prometheus.Registry

	ConfirmedLSN     prometheus.Gauge
	LagBytes         prometheus.Gauge
	LagSeconds       prometheus.Gauge
	RetainedWALBytes prometheus.Gauge
	Documents        *prometheus.CounterVec // index, op
	BuildSeconds     prometheus.Histogram
	Transactions     prometheus.Counter
	BackfillRows     *prometheus.GaugeVec // index
	BackfillEstimate *prometheus.GaugeVec // index
	Degraded         prometheus.Gauge
	Retries          *prometheus.CounterVec // stage, class
	FanoutDocuments  prometheus.Gauge
	GroupDocuments   prometheus.Histogram

	ready  atomic.Bool
	failed atomic.Pointer[string]
	health atomic.Pointer[fault.Health]
}

// New registers every metric in a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		ConfirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flusso_confirmed_lsn",
			Help: "The slot position flusso-pg last confirmed to the server, as a number (the LSN X/Y is X<<32+Y)."}),
		LagBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flusso_replication_lag_bytes",
			Help: "Bytes of WAL between the server's current position and the confirmed position."}),
		LagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flusso_replication_lag_seconds",
			Help: "Seconds between the commit of the newest transaction written and the moment its lines were flushed; 0 when idle."}),
		RetainedWALBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flusso_slot_retained_wal_bytes",
			Help: "Bytes of WAL the slot keeps on the server (from its restart_lsn)."}),
		Documents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flusso_documents_total",
			Help: "NDJSON lines written, by index and op (upsert, delete, truncate)."}, []string{"index", "op"}),
		BuildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flusso_build_duration_seconds",
			Help:    "Time to resolve and build the documents of one batch of transactions, and flush them.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		Transactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "flusso_transactions_total",
			Help: "Committed transactions processed."}),
		BackfillRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flusso_backfill_rows",
			Help: "Documents written by the backfill so far, by index."}, []string{"index"}),
		BackfillEstimate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flusso_backfill_rows_estimate",
			Help: "Estimated root rows of the backfill (pg_class.reltuples), by index."}, []string{"index"}),
		Degraded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flusso_degraded",
			Help: "1 while a stage is failing and being retried (or waiting, as a standby for the slot), 0 otherwise; /readyz says why."}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flusso_retries_total",
			Help: "Units of work run again after a transient error, by stage (capture, start, build, rebuild, backfill, slot_stats) and class (transient, auth)."},
			[]string{"stage", "class"}),
		FanoutDocuments: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flusso_fanout_documents",
			Help: "Documents the group of transactions in hand has resolved so far (written in chunks as they are resolved), 0 once it is flushed: how far a large fan-out has come."}),
		GroupDocuments: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flusso_group_documents",
			Help:    "Documents one group of transactions resolved to, all its chunks together.",
			Buckets: prometheus.ExponentialBuckets(1, 10, 8)}),
	}
	r.MustRegister(m.ConfirmedLSN, m.LagBytes, m.LagSeconds, m.RetainedWALBytes, m.Documents, m.BuildSeconds,
		m.Transactions, m.BackfillRows, m.BackfillEstimate, m.Degraded, m.Retries, m.FanoutDocuments, m.GroupDocuments,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CaptureStats is what the capture counts (wal.Capture has these methods).
// Every capture counter reaches the metrics this one way.
type CaptureStats interface {
	Reconnects() int64
	Spills() int64
	SocketReads() int64
	ReadPauses() int64
}

// WatchCapture exports the capture's counters.
func (m *Metrics) WatchCapture(c CaptureStats) {
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flusso_reconnects_total",
			Help: "Replication connections re-established after an error."},
			func() float64 { return float64(c.Reconnects()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flusso_capture_spilled_transactions_total",
			Help: "Transactions whose changes outgrew capture.memory_budget and went to a temporary file."},
			func() float64 { return float64(c.Spills()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flusso_capture_socket_reads_total",
			Help: "Reads of the replication socket while streaming."},
			func() float64 { return float64(c.SocketReads()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flusso_capture_read_pauses_total",
			Help: "Pauses of capture.coalesce taken while the stream was busy, so that data piles up and is read in fewer reads."},
			func() float64 { return float64(c.ReadPauses()) }),
	)
}

// WatchHealth makes h the source of flusso_degraded, flusso_retries_total
// and /readyz's verdict. Call it before h is used.
func (m *Metrics) WatchHealth(h *fault.Health) {
	h.OnRetry = func(stage string, class fault.Class) { m.Retries.WithLabelValues(stage, class.String()).Inc() }
	h.OnChange = func(degraded bool) {
		if degraded {
			m.Degraded.Set(1)
		} else {
			m.Degraded.Set(0)
		}
	}
	m.health.Store(h)
}

// SetReady marks the process ready: backfill done, streaming.
func (m *Metrics) SetReady(ready bool) { m.ready.Store(ready) }

// SetFailed makes /healthz report the reason.
func (m *Metrics) SetFailed(reason string) { m.failed.Store(&reason) }

// Handler serves /healthz, /readyz and /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if r := m.failed.Load(); r != nil {
			http.Error(w, "failed: "+*r, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if degraded, why := m.health.Load().Degraded(); degraded {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		if !m.ready.Load() {
			http.Error(w, "not ready: backfill running or stream not started", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return mux
}

// Serve listens on addr until ctx ends. The listener is bound before Serve
// returns its first error, so a bad address fails the start at once.
func (m *Metrics) Serve(ctx context.Context, addr string, log *zap.Logger) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
	log.Info("serving health and metrics", zap.String("addr", ln.Addr().String()))
	return func() error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			<-errc
			return nil
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		}
	}, nil
}
