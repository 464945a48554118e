// Package wal captures changes from PostgreSQL through logical replication
// and hands them out as committed transactions of thin rows.
//
// # Logical replication in one page
//
// Postgres writes every change to its write-ahead log (WAL). With
// wal_level = logical, a logical replication slot decodes that log into
// row changes through an output plugin; flusso-pg uses pgoutput, the plugin
// built into the server for its own logical replication
// (https://www.postgresql.org/docs/current/logicaldecoding-explanation.html).
// pgoutput sends the changes of the tables in a publication
// (https://www.postgresql.org/docs/current/logical-replication-publication.html),
// one committed transaction after another, in commit order.
//
// A slot remembers how far its consumer got: confirmed_flush_lsn. The
// server keeps the WAL the slot still needs, and after a restart or a
// reconnect the stream starts again after that position. Everything the
// consumer has not confirmed is sent again, so delivery is at-least-once
// and correctness depends on confirming only what is durably written.
//
// # The life of a slot (capture.go, slot.go)
//
// Open connects in replication mode (replication=database: a walsender
// that also answers plain SQL), asks IDENTIFY_SYSTEM for the server's
// system identifier, and compares it with the identity record in the state
// dir: progress belongs to one server, one database and one slot.
//
// The first time, it creates a permanent slot with CREATE_REPLICATION_SLOT
// … LOGICAL pgoutput EXPORT_SNAPSHOT
// (https://www.postgresql.org/docs/current/protocol-replication.html).
// The server answers with a consistent point (an LSN) and the name of an
// exported snapshot: a transaction snapshot that sees exactly the
// transactions committed before the consistent point, while the slot
// streams exactly those committed after it. The backfill imports it on as
// many connections as it likes (SET TRANSACTION SNAPSHOT), so backfill and
// stream meet without a gap or an overlap
// (https://www.postgresql.org/docs/current/logicaldecoding-explanation.html#LOGICALDECODING-EXPLANATION-EXPORTED-SNAPSHOTS).
// The snapshot lives only until the replication connection runs its next
// command, so capture keeps that connection idle until ReleaseSnapshot.
//
// The publication must exist before the slot: pgoutput reads publications
// as of the WAL position it decodes, so a slot older than its publication
// fails (or, on PG18, silently skips the publication).
//
// Later runs resume the slot. A slot that is gone (dropped, or invalidated
// by max_slot_wal_keep_size: wal_status = 'lost'), a publication that is
// gone, or a state dir that belongs to another server means changes were
// lost or are not ours: capture stops with ErrSlotMissing, ErrSlotLost,
// ErrPublicationMissing or ErrServerChanged, and --resync (Config.Resync)
// starts over with a new slot and a new backfill. Slots are never created
// with TWO_PHASE, so a prepared transaction arrives whole at COMMIT PREPARED.
//
// # The stream (session.go, status.go, decode.go, relation.go)
//
// START_REPLICATION opens a copy stream. The server sends XLogData
// messages, each carrying one pgoutput message, and keepalives; the client
// sends standby status updates
// (https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-XLOGDATA).
// The pgoutput messages
// (https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html)
// are Begin, Relation (a table's columns: sent before a table's first
// change on a connection and again after DDL), Insert, Update, Delete,
// Truncate and Commit. decode.go reads them straight from the network
// buffer with bounds checks, keeps a relation cache, and drops the
// changes of tables nobody asked for after four bytes.
//
// Each change becomes a change.Row with only the configured columns (the
// key first). Which old values an Update or Delete carries depends on the
// table's REPLICA IDENTITY: the key ('K') when the key changed or on
// delete, the whole old row ('O') under FULL, nothing otherwise. A value
// stored out of line (TOAST) and not changed comes as 'u', without data:
// it is taken from the old row when there is one, and is otherwise marked
// Missing — never an invented NULL.
//
// # Transactions (assemble.go, txn.go, spill.go)
//
// Changes are buffered per transaction and handed out at commit as a Txn
// with its commit LSN, end LSN, xid and commit time; rolled-back work never
// leaves. With protocol version 2 (PG14+, streaming 'on'), a transaction
// bigger than the server's logical_decoding_work_mem is sent while it runs,
// in blocks between Stream Start and Stream Stop that interleave with
// other transactions, and ends with Stream Commit or Stream Abort. A Stream
// Abort naming a subtransaction drops the rows from where that
// subtransaction first appeared: the stream is in WAL order and
// subtransactions nest, so everything after that point is its own or its
// children's. A Txn keeps identical rows once, and moves its rows to a
// temporary file beyond the memory budget, so memory stays bounded for a
// transaction of any size.
//
// # Reading the socket (pace.go)
//
// The walsender sends each message with its own send(). Committed
// transactions are handed out in batches, once the socket is drained, and
// while the stream is busy the reader pauses briefly after draining it
// (SO_RCVLOWAT and a deadline on Linux), so it reads what piled up in a few
// large reads: per-message wake-ups are what cost the walsender, the real
// bottleneck, most of its CPU. A quiet stream is never paused.
//
// # Progress (watermark.go)
//
// Status updates report one position as written, flushed and applied: the
// watermark. It moves to what the consumer reports with Confirm — the
// EndLSN of a transaction whose output is durable — and never backwards,
// never into a transaction, never past a commit in flight. Confirming the
// end of the commit record (not its start) is what keeps a confirmed
// transaction from being sent again. When nothing is pending, the
// watermark follows the server's WAL end from keepalives, so an idle slot,
// or one whose tables are quiet while others are busy, retains no WAL.
//
// Updates go out on every keepalive that asks for one and on a timer, also
// while the consumer is not reading, or the server would end the
// connection after wal_sender_timeout. One goroutine owns the connection;
// status.go draws the three reasons its blocking read is cut short.
//
// # Failures (retry.go)
//
// Errors are sorted by internal/fault: network errors, server restarts and
// crashes, a killed walsender are transient and retried for as long as
// they last, with a backoff from 100 ms to 30 s with jitter; bad
// credentials get a grace period; a lost slot, a dropped publication,
// another server or a decode error end Run. The stream resumes from the
// watermark and replays what was not confirmed. A slot that another client
// streams from (a second instance) is waited for: capture polls and takes
// over when the slot is free. A server that is shutting down waits for its
// walsenders to be confirmed up to what they sent; when a transaction is
// still pending, capture disconnects instead, so the server can stop.
package wal
