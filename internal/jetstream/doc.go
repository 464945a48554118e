// Package jetstream publishes flusso-pg's NDJSON lines to a NATS JetStream
// stream, and tells the caller how far the broker has acknowledged them.
//
// JetStream is NATS' persistence layer: a stream captures the messages
// published on its subjects and stores them on one node or, replicated with
// RAFT, on three or five (the stream's replication factor, "R3"). A publish is
// acknowledged (a PubAck carrying the message's stream sequence) only once the
// stream has stored it on a quorum of its replicas; an unacknowledged publish
// may or may not have been stored. See https://docs.nats.io/nats-concepts/jetstream.
//
// Here the broker plays the part of the acknowledging reader of `--ack-fd`:
// the slot is confirmed only up to the newest LSN all of whose lines the
// stream has acknowledged (Publisher's watermark), and the backfill
// checkpoints only after Flush, which waits for every acknowledgement.
//
// Each line becomes one message on the index's subject (output.jetstream.subject
// with {index} replaced), its body the NDJSON line without the newline, with
// headers:
//
//	Nats-Msg-Id    <index>:<id>:<lsn> (events: <index>!<op>:<lsn>), so a line
//	               published again after a crash is dropped by the server's
//	               duplicate window (2 minutes unless the stream says otherwise)
//	Flusso-Index, Flusso-Op, Flusso-Id, Flusso-Lsn
//	Nats-Expected-Last-Sequence
//
// Order is the subtle part. Messages are published asynchronously, a window
// of them in flight; if one is lost (a node killed before it replicated it)
// while a later one is stored, publishing the lost one again would put an old
// state of a document after a newer one, and the fold of the stream would be
// wrong. So every message carries the stream sequence its predecessor is
// expected to have (Nats-Expected-Last-Sequence): the server refuses a
// message whose predecessor is missing, every message after a lost one fails
// too, and the publisher re-publishes them in order, one at a time, until the
// stream has them all (duplicates count as stored), then pipelines again.
// A shift of the stream's sequence by a message this publisher did not send
// (another publisher, a killed flusso-pg's message stored late) can let a
// message through after a refused one; the publisher then checks which
// refused ones the stream holds anyway (lost acknowledgements), and
// publishes the ones stored after a real gap again, after it, under a new
// Msg-Id, so that the last copy of every line is in order.
// The stream should be written by this flusso-pg only (others cost re-publishing).
//
// A broker or node that is down is a transient fault: publishing waits and
// retries (internal/fault's backoff and Health), never gives up. A line larger
// than the server's max_payload is a permanent error naming the index and
// the document.
package jetstream
