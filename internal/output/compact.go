package output

import "bytes"

// Postgres' json_build_object and json/jsonb output put a space after every
// ':' and ',' ("id" : 42, "title" : ...), and a json column keeps whatever
// whitespace it was written with. AppendCompact drops the whitespace outside
// strings in one pass over the bytes, without an allocation of its own, so
// lines are as the documented format shows them ({"id":42,"title":...}); the
// values, strings and numbers included, stay byte for byte what Postgres gave.

// insignificant marks the bytes JSON allows between tokens, and '"'.
var insignificant = [256]bool{' ': true, '\t': true, '\n': true, '\r': true, '"': true}

// AppendCompact appends the JSON text src to dst without its insignificant
// whitespace. src is taken to be valid JSON (Postgres built or validated
// it); an unterminated string is copied as it is.
func AppendCompact(dst, src []byte) []byte {
	for len(src) > 0 {
		i := 0
		for i < len(src) && !insignificant[src[i]] {
			i++
		}
		dst = append(dst, src[:i]...)
		if i == len(src) {
			return dst
		}
		if src[i] != '"' { // whitespace: dropped
			src = src[i+1:]
			continue
		}
		n := stringEnd(src[i+1:])
		if n < 0 {
			return append(dst, src[i:]...)
		}
		end := i + 1 + n + 1 // through the closing quote
		dst = append(dst, src[i:end]...)
		src = src[end:]
	}
	return dst
}

// stringEnd returns the position in s (the bytes after a string's opening
// quote) of its closing quote, or -1.
func stringEnd(s []byte) int {
	off := 0
	for {
		j := bytes.IndexByte(s[off:], '"')
		if j < 0 {
			return -1
		}
		q := off + j
		// The quote is escaped when an odd number of backslashes precede it.
		k := q
		for k > 0 && s[k-1] == '\\' {
			k--
		}
		if (q-k)%2 == 0 {
			return q
		}
		off = q + 1
	}
}
