// Package logging builds the zap logger flusso-pg writes to stderr. stdout is
// reserved for NDJSON documents: nothing in this program logs there.
package logging

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger at level ("debug", "info", "warn", "error") in format
// ("console" or "json") writing to w (os.Stderr when nil).
func New(level, format string, w io.Writer) (*zap.Logger, error) {
	if w == nil {
		w = os.Stderr
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", level)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console", "":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("log.format: %q is not one of console, json", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core), nil
}

// Component returns l tagged with the component field, once per package.
func Component(l *zap.Logger, name string) *zap.Logger {
	return l.With(zap.String("component", name))
}

// Redacting returns a writer that passes each write to w with every string
// redact changes replaced (the DSN's password, however a message quotes it).
// zap writes one whole entry per write, so a secret is never split.
func Redacting(w io.Writer, redact func(string) string) io.Writer {
	return redacting{w: w, redact: redact}
}

type redacting struct {
	w      io.Writer
	redact func(string) string
}

func (r redacting) Write(p []byte) (int, error) {
	s := r.redact(string(p))
	if s == string(p) {
		return r.w.Write(p)
	}
	if _, err := io.WriteString(r.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}
