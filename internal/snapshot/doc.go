// Package snapshot writes every document of an index once, from one
// consistent image of the database: the backfill. It runs on the first
// `follow` (inside the snapshot the replication slot exported, so the backfill
// and the stream meet exactly at the slot's consistent point) and in the
// one-shot `backfill` command (inside a snapshot of its own).
//
// # Snapshots and REPEATABLE READ
//
// A transaction at the REPEATABLE READ isolation level takes one snapshot at
// its first statement and sees the database as of that instant until it ends,
// whatever commits meanwhile
// (https://www.postgresql.org/docs/current/transaction-iso.html#XACT-REPEATABLE-READ).
// One worker reading a whole table in such a transaction therefore writes a
// consistent image, however long it takes.
//
// # Exported snapshots
//
// Several workers can share that image. pg_export_snapshot() in the first
// transaction returns a name
// (https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-SNAPSHOT-SYNCHRONIZATION),
// and every other transaction runs, as its very first statement,
//
//	BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
//	SET TRANSACTION SNAPSHOT '00000003-0000001B-1';
//
// (https://www.postgresql.org/docs/current/sql-set-transaction.html). This is
// how pg_dump -j reads in parallel. The name can be imported only while the
// exporting transaction is open: workers import it before any of them starts
// reading.
//
// A logical replication slot created with EXPORT_SNAPSHOT exports a snapshot
// too: the image at the slot's consistent point, from which the slot streams
// every later commit without gap or overlap
// (https://www.postgresql.org/docs/current/logicaldecoding-explanation.html#LOGICALDECODING-EXPLANATION-EXPORTED-SNAPSHOT).
// That name stays valid only until the replication connection runs its next
// command (https://www.postgresql.org/docs/current/protocol-replication.html),
// so Run calls its imported callback as soon as every worker has imported it,
// and the caller may then start replication.
//
// # Keyset pagination and key ranges
//
// Each index's root table is cut into ranges of its key: (nil, b1], (b1, b2],
// ..., (bk, nil], with boundaries taken as exact quantiles of the key for
// tables up to a few million rows and from a block sample (TABLESAMPLE
// SYSTEM, https://www.postgresql.org/docs/current/sql-select.html#SQL-FROM)
// above that. Workers take ranges from a queue and read each in batches with
// keyset pagination
// (https://www.postgresql.org/docs/current/queries-limit.html): the next batch
// is WHERE key > last ORDER BY key LIMIT n, which the key's btree index
// answers directly, so every batch costs the same wherever it is in the table
// (unlike OFFSET, which rereads everything it skips). A composite key
// compares as a row value: (a, b) > ($1, $2)
// (https://www.postgresql.org/docs/current/functions-comparisons.html#ROW-WISE-COMPARISON).
// Each batch is built into complete documents by one query (build.Index.Scan)
// and written as one block of lines; only that block is held in memory.
//
// # Checkpoints and resume
//
// With a state store, the last key written of every range is saved in
// <slot>.backfill.json every second, but only after the lines it covers were
// flushed (and fsynced, for a file). A backfill killed at any moment resumes
// from those keys, with the same ranges, under a fresh snapshot: the exported
// one died with its session. The slot still holds every change since its
// consistent point, so the stream that follows the backfill rewrites any
// document the new snapshot saw differently. docs/backfill.md gives the rules.
package snapshot
