package snapshot

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestProgressBars draws bars on a "terminal" (a buffer) and moves back over
// them on the next draw; without a terminal, it logs instead; OnProgress
// gets the figures.
func TestProgressBars(t *testing.T) {
	var reported []int64
	p := newProgress(nil, func(index string, done, estimate int64) { reported = append(reported, done, estimate) }, zap.NewNop())
	var term bytes.Buffer
	p.tty = &term
	posts := p.add("posts", 200_000, 50_000)
	p.add("authors", 10, 0).finish()
	posts.add(38_211)
	p.report()
	p.draw()
	first := term.String()
	for _, want := range []string{"posts   [", "44.1%", "88,211/200,000", "authors [##############################] 100.0%  0/0", "ETA", "done in"} {
		if !strings.Contains(first, want) {
			t.Fatalf("bars %q lack %q", first, want)
		}
	}
	if strings.Contains(first, "\x1b[2A") {
		t.Fatal("the first draw moved up")
	}
	term.Reset()
	p.draw()
	if !strings.HasPrefix(term.String(), "\x1b[2A") {
		t.Fatalf("the second draw does not move back over the bars: %q", term.String())
	}
	if len(reported) != 4 || reported[0] != 88_211 || reported[1] != 200_000 || reported[2] != 0 || reported[3] != 10 {
		t.Fatalf("OnProgress got %v", reported)
	}

	core, logs := observer.New(zapcore.InfoLevel)
	p = newProgress(&bytes.Buffer{}, nil, zap.New(core))
	if p.tty != nil {
		t.Fatal("a buffer is not a terminal")
	}
	p.add("posts", 100, 0).add(100)
	p.final()
	if logs.FilterMessage("backfill progress").Len() != 1 {
		t.Fatalf("no progress log line: %v", logs.All())
	}
	if got := Count(1234567); got != "1,234,567" {
		t.Fatalf("count: %s", got)
	}
}
