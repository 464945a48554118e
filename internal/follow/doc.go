// Package follow is the daemon behind `flusso-pg follow`: it wires change
// capture (internal/wal), document building (internal/build), the backfill
// (internal/snapshot) and the output (internal/output) into one pipeline:
//
//	slot ──► committed transactions ──► resolve root keys ──► build documents
//	     ◄── confirm the end LSN ◄── flush (and the reader's ack) ◄── NDJSON
//
// On first start the slot is created with an exported snapshot and every
// index is backfilled inside it; the stream is read only once the backfill is
// done, so a stream line can never be overtaken by an older backfill line.
//
// Transactions are taken in commit order. Those already waiting are coalesced
// into one group (flusso-pg is behind): their root keys are deduplicated,
// each key keeping the commit LSN of the newest transaction that touched it,
// and built with one query per index and chunk of capture.batch_size keys.
// Lines are written in non-decreasing LSN order. A group is confirmed to the
// server only after its lines are flushed (and fsynced for a file), and, when
// the reader acknowledges (--ack-fd / --ack-file), only after the reader has
// written back an LSN at or past the group's newest line. The last line of a
// group then carries "ack": true, so the reader knows it has all the lines of
// the LSNs it acknowledges.
//
// Between groups, every few seconds and at the start of the stream, the loop
// looks at what the WAL does not carry and rebuilds inline (rebuild_start,
// every document, rebuild_done; the stream goes on) an index whose default
// column list changed (schema.go), whose partitions were truncated,
// attached, detached or dropped (partitions.go), or which reads a table the
// publication watcher added back (readd.go).
//
// A stop signal lets the group in hand finish, flush and be confirmed within
// a bounded time; the capture then sends its final status update.
//
// Faults: every unit of work — the start, a group of transactions, a page of
// a truncate rebuild, a backfill batch, the replication session — runs
// through fault.Retry: a transient error (a server restart, a terminated
// backend) runs it again after a backoff, on fresh connections, for as long
// as the server is away; a permanent one stops follow with its cause. One
// fault.Health records every stage's outages, for the log (once per
// episode), /readyz and the metrics. A group run again writes its lines
// again (at-least-once); nothing is confirmed before the whole group is
// flushed.
//
// The files follow the stages: follow.go (Run), stop.go (the two-phase
// stop), open.go, backfill.go, stream.go (the loop over groups), resolve.go,
// group.go, build.go, emitter.go (the lines), confirm.go, ack.go, visible.go,
// slotstats.go, retry.go, and the inline rebuilds: schema.go, partitions.go,
// readd.go.
package follow
