package follow

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/flusso-pg/flusso-pg/internal/config"
	"github.com/flusso-pg/flusso-pg/internal/jetstream"
	"github.com/flusso-pg/flusso-pg/internal/output"
	"github.com/flusso-pg/flusso-pg/internal/snapshot"
)

// outputSink is where the lines go: the output.Writer (stdout or a file),
// or the JetStream publisher (output.kind: jetstream). Write takes whole
// lines; Sync ends a group: the Writer flushes (and fsyncs) it, the
// publisher marks it and lets the broker's acknowledgements confirm it (the
// publisher's watermark feeds the confirmer's ack path, as an --ack-fd
// reader does).
type outputSink interface {
	sink
	Close() error
}

// openSink opens the output the config names.
func (f *Follower) openSink(ctx context.Context) (outputSink, error) {
	if f.cfg.Output.Kind != config.OutputJetStream {
		w, err := output.Open(f.cfg.Output.Path)
		if err != nil {
			return nil, err
		}
		if n := w.Trimmed(); n > 0 {
			f.log.Warn("cut the partial last line an earlier run left in the output (it was never confirmed)", zap.String("file", w.Name()), zap.Int64("bytes", n))
		}
		return w, nil
	}
	if f.opts.AckFD > 0 || f.opts.AckFile != "" {
		return nil, fmt.Errorf("--ack-fd and --ack-file take a reader's acknowledgements; with output.kind: jetstream the stream acknowledges: drop the flag")
	}
	acks := prometheus.NewCounter(prometheus.CounterOpts{Name: "flusso_jetstream_acks_total",
		Help: "Messages the JetStream stream acknowledged (stored, or recognised as duplicates)."})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flusso_jetstream_publish_seconds",
		Help:    "Time from a message's first publish to the stream's acknowledgement.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)})
	// The follower's Health: a publish that fails is retried, counted in
	// flusso_retries_total{stage="jetstream"} and makes /readyz answer 503.
	health := f.health
	degraded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flusso_jetstream_degraded",
		Help: "1 while publishing to JetStream is failing and being retried."}, func() float64 {
		if health.StageDegraded(jetstream.Stage) {
			return 1
		}
		return 0
	})
	js := f.cfg.Output.JetStream
	names := make([]string, len(f.plan.Indexes))
	for i, ix := range f.plan.Indexes {
		names[i] = ix.Name()
	}
	p, err := jetstream.Open(ctx, jetstream.Config{
		URL: js.URL, Subject: js.Subject, Stream: js.Stream, Replicas: js.Replicas,
		Creds: js.Creds, NKey: js.NKey, User: js.User, Password: js.Password, Token: js.Token, CA: js.CA,
		MaxInFlight: js.MaxInFlight, Indexes: names,
	}, f.log, health, jetstream.Hooks{
		OnAck: func(d time.Duration) { acks.Inc(); latency.Observe(d.Seconds()) },
		// The confirmer exists before the publisher's first acknowledgement:
		// Run starts after it (startSink).
		OnWatermark: func(lsn pglogrepl.LSN) { f.confirmer.ack(lsn) },
	})
	if err != nil {
		return nil, err
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flusso_jetstream_pending",
		Help: "Messages published to JetStream and not yet acknowledged."}, func() float64 { return float64(p.Pending()) })
	f.metrics.Registry.MustRegister(pending, acks, latency, degraded)
	f.pub = p
	f.log.Info("publishing to JetStream", zap.String("stream", js.Stream), zap.String("subject", js.Subject))
	return p, nil
}

// startSink starts the publisher's acknowledgement loop, when there is
// one; otherwise the lineWriter, which writes the groups' lines while the
// next group is built (writer.go). Its output errors stop the pipeline.
func (f *Follower) startSink(g *errgroup.Group, ctx context.Context) {
	if f.pub != nil {
		g.Go(func() error { return f.pub.Run(ctx) })
		return
	}
	f.lw = newLineWriter(ctx, f.out)
	f.em.out = f.lw
	g.Go(func() error { return f.lw.failure(ctx) })
}

// backfillOut is what the backfill writes to. The backfill checkpoints
// after each Sync, so with JetStream its Sync waits for the broker's
// acknowledgements: a checkpoint never passes a line the stream lacks.
func (f *Follower) backfillOut(ctx context.Context) snapshot.Output {
	if f.pub != nil {
		return flushOnSync{f.pub, ctx}
	}
	return f.out
}

type flushOnSync struct {
	*jetstream.Publisher
	ctx context.Context
}

func (s flushOnSync) Sync() error { return s.Flush(s.ctx) }
