package keymap

import (
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// FuzzDecodeVals: any bytes decode or fail cleanly; what decodes encodes
// back to the same bytes; and an encoding of values decodes to them.
func FuzzDecodeVals(f *testing.F) {
	f.Add(appendVals(nil, []change.Value{{Text: "42"}, {Null: true}, {Missing: true}, {Text: ""}}))
	f.Add([]byte{tagText, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, err := decodeVals(b)
		if err != nil {
			return
		}
		if got := appendVals(nil, vals); string(got) != string(b) && canonical(b) {
			t.Fatalf("decode(%x) = %v encodes to %x", b, vals, got)
		}
		again, err := decodeVals(appendVals(nil, vals))
		if err != nil || !sameVals(again, vals) {
			t.Fatalf("values %v do not round-trip: %v, %v", vals, again, err)
		}
	})
}

// canonical reports whether every length in b is written in its shortest
// uvarint form (the only form appendVals writes).
func canonical(b []byte) bool {
	for len(b) > 0 {
		if b[0] != tagText {
			b = b[1:]
			continue
		}
		n, w := 0, 0
		for i, c := range b[1:] {
			w = i + 1
			n |= int(c&0x7f) << (7 * i)
			if c < 0x80 {
				if c == 0 && i > 0 {
					return false
				}
				break
			}
		}
		b = b[1+w+n:]
	}
	return true
}
