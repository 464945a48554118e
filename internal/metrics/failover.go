package metrics

import "github.com/prometheus/client_golang/prometheus"

// FailoverStats is what the capture knows about timelines (wal.Capture has
// these methods).
type FailoverStats interface {
	Timeline() int32
	Failovers() int64
}

// WatchFailover exports the server's timeline and the failovers followed.
func (m *Metrics) WatchFailover(c FailoverStats) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flusso_server_timeline",
			Help: "The timeline of the server the capture is connected to; it goes up by one at each promotion of a standby."},
			func() float64 { return float64(c.Timeline()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flusso_failovers_total",
			Help: "Timeline changes (failovers) followed without a backfill: the slot survived on the new primary."},
			func() float64 { return float64(c.Failovers()) }),
	)
}
