package keymap

import (
	"encoding/binary"
	"errors"

	"github.com/flusso-pg/flusso-pg/internal/change"
)

// The store's key space. Every key starts with one byte that says what it is:
//
//	'e' tid(4) vals(key)          → vals(join)            an entry: a row's key → its join values
//	'u' tid(4) vals(key) lsn(8)   → flag(1) vals(join)    the entry as it was before transaction lsn touched it
//	't' tid(4) lsn(8)             → ""                    transaction lsn truncated table tid
//	'j' lsn(8) chunk(4)           → keys                  the 'u' and 't' keys transaction lsn wrote (for Prune)
//	'm' name                      → meta: format, fingerprint, lsn, durable lsn, counts
//	's' tid(4) vals(key)          → flag(1) vals(join)    a large replay's own writes, spilled (gone after it)
//
// tid is the table's position in the sorted table specs (part of the
// fingerprint, so it never changes under a map). Values are encoded one after
// the other: a tag byte (0 NULL, 1 text, 2 missing), then for text the length
// as a uvarint and the bytes. The encoding is self-delimiting, so a key's
// encoding is never the prefix of another key's with the same column count.
const (
	pEntry   = 'e'
	pJournal = 'j'
	pMeta    = 'm'
	pTrunc   = 't'
	pUndo    = 'u'
	pScratch = 's'
)

var (
	metaFormat      = []byte("mformat")
	metaFingerprint = []byte("mfingerprint")
	metaLSN         = []byte("mlsn")
	metaDurable     = []byte("mdurable")
	metaPartial     = []byte("mpartial") // the LSN of a transaction whose chunks are written but not its commit
	metaLost        = []byte("mlost")    // tids whose entries a rolled-back truncate removed (Map.lostClear)
	metaCountPrefix = []byte("mcount/")
)

const (
	tagNull    = 0
	tagText    = 1
	tagMissing = 2
)

var errDecode = errors.New("keymap: a stored value does not decode")

func appendVals(dst []byte, vals []change.Value) []byte {
	for _, v := range vals {
		switch {
		case v.Missing:
			dst = append(dst, tagMissing)
		case v.Null:
			dst = append(dst, tagNull)
		default:
			dst = append(dst, tagText)
			dst = binary.AppendUvarint(dst, uint64(len(v.Text)))
			dst = append(dst, v.Text...)
		}
	}
	return dst
}

func decodeVals(b []byte) ([]change.Value, error) {
	var out []change.Value
	for len(b) > 0 {
		switch b[0] {
		case tagNull:
			out = append(out, change.Value{Null: true})
			b = b[1:]
		case tagMissing:
			out = append(out, change.Value{Missing: true})
			b = b[1:]
		case tagText:
			n, w := binary.Uvarint(b[1:])
			if w <= 0 || uint64(len(b)-1-w) < n {
				return nil, errDecode
			}
			s := 1 + w
			out = append(out, change.Value{Text: string(b[s : s+int(n)])})
			b = b[s+int(n):]
		default:
			return nil, errDecode
		}
	}
	return out, nil
}

func appendTid(dst []byte, tid uint32) []byte { return binary.BigEndian.AppendUint32(dst, tid) }
func appendLSN(dst []byte, lsn uint64) []byte { return binary.BigEndian.AppendUint64(dst, lsn) }

func entryKey(dst []byte, tid uint32, key []change.Value) []byte {
	dst = append(dst, pEntry)
	dst = appendTid(dst, tid)
	return appendVals(dst, key)
}

func undoPrefix(dst []byte, tid uint32, key []change.Value) []byte {
	dst = append(dst, pUndo)
	dst = appendTid(dst, tid)
	return appendVals(dst, key)
}

func truncPrefix(dst []byte, tid uint32) []byte {
	dst = append(dst, pTrunc)
	return appendTid(dst, tid)
}

func journalKey(lsn uint64) []byte { return appendLSN([]byte{pJournal}, lsn) }

// journalChunkKey is the journal record of one chunk of a transaction (0
// for a transaction written at once).
func journalChunkKey(lsn uint64, chunk int) []byte {
	return binary.BigEndian.AppendUint32(journalKey(lsn), uint32(chunk))
}

func countKey(tid uint32) []byte { return appendTid(append([]byte(nil), metaCountPrefix...), tid) }

// tableSpan is the range of a table's entries.
func tableSpan(tid uint32) (lo, hi []byte) {
	return appendTid([]byte{pEntry}, tid), appendTid([]byte{pEntry}, tid+1)
}

// successor is the smallest key greater than every key with prefix p.
func successor(p []byte) []byte {
	s := append([]byte(nil), p...)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// journal records are a list of keys, each with a uvarint length.
func appendJournal(dst, key []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	return append(dst, key...)
}

func eachJournal(b []byte, fn func(key []byte)) error {
	for len(b) > 0 {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return errDecode
		}
		fn(b[w : w+int(n)])
		b = b[w+int(n):]
	}
	return nil
}

func sameVals(a, b []change.Value) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// scratchKey is where a replay spills its write of entry key ek.
func scratchKey(ek []byte) []byte { return append([]byte{pScratch}, ek[1:]...) }
