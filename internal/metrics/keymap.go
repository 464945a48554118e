package metrics

import "github.com/prometheus/client_golang/prometheus"

// KeyMapStats is what the key map (internal/keymap) reports.
type KeyMapStats interface {
	Entries() int64
	Bytes() int64
}

// WatchKeyMap exports the size of the key map (docs/keymap.md), read at
// scrape time. Call it once.
func (m *Metrics) WatchKeyMap(k KeyMapStats) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flusso_keymap_entries",
			Help: "Rows the key map holds (all its tables): each row's key and the join values that tie it to its parents."},
			func() float64 { return float64(k.Entries()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flusso_keymap_bytes",
			Help: "Disk space the key map takes in state.dir (tables, log, manifest)."},
			func() float64 { return float64(k.Bytes()) }),
	)
}
