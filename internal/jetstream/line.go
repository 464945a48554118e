package jetstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
)

// head is what the publisher needs from a line: where it goes and what
// identifies it. The line is flusso-pg's own NDJSON (internal/output).
type head struct {
	index, op, id string
	hasID         bool
	lsn           pglogrepl.LSN
}

var errHead = errors.New("not a flusso-pg line")

// parseHead reads the fields before "doc" of a line written by
// internal/output, without reading the document; anything else falls back
// to encoding/json.
func parseHead(line []byte) (head, error) {
	if h, ok := fastHead(line); ok {
		return h, nil
	}
	var v struct {
		Index *string `json:"index"`
		Op    string  `json:"op"`
		ID    *string `json:"id"`
		LSN   string  `json:"lsn"`
	}
	if err := json.Unmarshal(line, &v); err != nil || v.Index == nil || v.Op == "" {
		return head{}, fmt.Errorf("%w: %.80q", errHead, line)
	}
	lsn, err := pglogrepl.ParseLSN(v.LSN)
	if err != nil {
		return head{}, fmt.Errorf("%w: bad lsn %q", errHead, v.LSN)
	}
	h := head{index: *v.Index, op: v.Op, lsn: lsn}
	if v.ID != nil {
		h.id, h.hasID = *v.ID, true
	}
	return h, nil
}

func fastHead(b []byte) (h head, ok bool) {
	p, ok := expect(b, 0, `{"index":`)
	if !ok {
		return h, false
	}
	if h.index, p, ok = str(b, p); !ok {
		return h, false
	}
	if p, ok = expect(b, p, `,"op":`); !ok {
		return h, false
	}
	if h.op, p, ok = str(b, p); !ok {
		return h, false
	}
	if q, ok := expect(b, p, `,"key":`); ok {
		if p, ok = skipValue(b, q); !ok {
			return h, false
		}
		if p, ok = expect(b, p, `,"id":`); !ok {
			return h, false
		}
		if h.id, p, ok = str(b, p); !ok {
			return h, false
		}
		h.hasID = true
	}
	if p, ok = expect(b, p, `,"lsn":`); !ok {
		return h, false
	}
	var s string
	if s, _, ok = str(b, p); !ok {
		return h, false
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return h, false
	}
	h.lsn = lsn
	return h, true
}

func expect(b []byte, p int, s string) (int, bool) {
	if bytes.HasPrefix(b[p:], []byte(s)) {
		return p + len(s), true
	}
	return p, false
}

// str reads a JSON string at p.
func str(b []byte, p int) (string, int, bool) {
	end, ok := skipString(b, p)
	if !ok {
		return "", p, false
	}
	raw := b[p:end]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), end, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", p, false
	}
	return s, end, true
}

func skipString(b []byte, p int) (int, bool) {
	if p >= len(b) || b[p] != '"' {
		return p, false
	}
	for i := p + 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return p, false
}

// skipValue skips the JSON value (an object, array, string or scalar) at p.
func skipValue(b []byte, p int) (int, bool) {
	if p >= len(b) {
		return p, false
	}
	switch b[p] {
	case '"':
		return skipString(b, p)
	case '{', '[':
		depth := 0
		for i := p; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return p, false
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
		}
		return p, false
	}
	for i := p; i < len(b); i++ {
		if b[i] == ',' || b[i] == '}' {
			return i, i > p
		}
	}
	return p, false
}

// msgID is the line's Nats-Msg-Id: the same line published again (a replay
// after a crash) has the same id, so the server drops it.
func (h head) msgID() string {
	var b strings.Builder
	b.WriteString(escape(h.index))
	if h.hasID {
		b.WriteByte(':')
		b.WriteString(escape(h.id))
	} else {
		b.WriteByte('!')
		b.WriteString(escape(h.op))
	}
	b.WriteByte(':')
	b.WriteString(h.lsn.String())
	return b.String()
}

// escape writes s so that it fits a header value and cannot be confused
// with the separators of msgID: control characters, space, '%', ':' and '!'
// are percent-encoded.
func escape(s string) string {
	need := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c == 0x7f || c == '%' || c == ':' || c == '!' {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x7f || c == '%' || c == ':' || c == '!' {
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&0xF])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
