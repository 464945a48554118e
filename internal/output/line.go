// Package output writes flusso-pg's NDJSON lines, one document per line:
//
//	{"index":"posts","op":"upsert","key":{"id":42},"id":"42","lsn":"0/16B3748","doc":{...}}
//	{"index":"posts","op":"delete","key":{"id":42},"id":"42","lsn":"0/16B3790"}
//	{"index":"posts","op":"truncate","lsn":"0/16B37F0"}
//
// Lines are appended to a caller's buffer without an intermediate value tree:
// the key and the document are the JSON Postgres built, copied once without
// the whitespace Postgres puts between tokens (AppendCompact).
package output

import (
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
)

// Ops written in the "op" field.
const (
	OpUpsert   = "upsert"
	OpDelete   = "delete"
	OpTruncate = "truncate"
)

// AppendUpsert appends an upsert line for doc to buf.
func AppendUpsert(buf []byte, index string, key []byte, id string, lsn pglogrepl.LSN, doc []byte) []byte {
	buf = appendHead(buf, index, OpUpsert, key, id, lsn)
	buf = append(buf, `,"doc":`...)
	buf = AppendCompact(buf, doc)
	return append(buf, "}\n"...)
}

// AppendDelete appends a delete line: the root row is gone, or no longer
// matches the index's where.
func AppendDelete(buf []byte, index string, key []byte, id string, lsn pglogrepl.LSN) []byte {
	buf = appendHead(buf, index, OpDelete, key, id, lsn)
	return append(buf, "}\n"...)
}

// AppendTruncate appends a truncate line: the index's root table was emptied.
func AppendTruncate(buf []byte, index string, lsn pglogrepl.LSN) []byte {
	buf = append(buf, `{"index":`...)
	buf = AppendString(buf, index)
	buf = append(buf, `,"op":"truncate","lsn":"`...)
	buf = AppendLSN(buf, lsn)
	return append(buf, "\"}\n"...)
}

func appendHead(buf []byte, index, op string, key []byte, id string, lsn pglogrepl.LSN) []byte {
	buf = append(buf, `{"index":`...)
	buf = AppendString(buf, index)
	buf = append(buf, `,"op":"`...)
	buf = append(buf, op...)
	buf = append(buf, `","key":`...)
	buf = AppendCompact(buf, key)
	buf = append(buf, `,"id":`...)
	buf = AppendString(buf, id)
	buf = append(buf, `,"lsn":"`...)
	buf = AppendLSN(buf, lsn)
	return append(buf, '"')
}

// AppendLSN appends lsn as Postgres prints it (16/B374D848), without the
// allocation of LSN.String.
func AppendLSN(buf []byte, lsn pglogrepl.LSN) []byte {
	buf = appendHex(buf, uint32(lsn>>32))
	buf = append(buf, '/')
	return appendHex(buf, uint32(lsn))
}

func appendHex(buf []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	if v == 0 {
		return append(buf, '0')
	}
	var tmp [8]byte
	i := len(tmp)
	for v > 0 {
		i--
		tmp[i] = digits[v&0xF]
		v >>= 4
	}
	return append(buf, tmp[i:]...)
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8 with U+FFFD.
func AppendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript line readers.
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
