package output

import "github.com/jackc/pglogrepl"

// Ops of the lines that bracket a rebuild of an index (a backfill).
const (
	OpRebuildStart = "rebuild_start"
	OpRebuildDone  = "rebuild_done"
)

// AppendRebuildStart appends a rebuild_start line: a rebuild of index (every
// document written again) begins. At the matching rebuild_done, every
// document of the index not upserted since this line is gone.
func AppendRebuildStart(buf []byte, index string, lsn pglogrepl.LSN) []byte {
	return appendIndexOp(buf, index, OpRebuildStart, lsn)
}

// AppendRebuildDone appends a rebuild_done line: the rebuild of index that
// the last rebuild_start began is complete.
func AppendRebuildDone(buf []byte, index string, lsn pglogrepl.LSN) []byte {
	return appendIndexOp(buf, index, OpRebuildDone, lsn)
}

// appendIndexOp appends a line about a whole index: {"index":..,"op":..,"lsn":..}.
func appendIndexOp(buf []byte, index, op string, lsn pglogrepl.LSN) []byte {
	buf = append(buf, `{"index":`...)
	buf = AppendString(buf, index)
	buf = append(buf, `,"op":"`...)
	buf = append(buf, op...)
	buf = append(buf, `","lsn":"`...)
	buf = AppendLSN(buf, lsn)
	return append(buf, "\"}\n"...)
}
