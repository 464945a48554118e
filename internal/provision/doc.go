// Package provision checks, and where it is allowed fixes, what Postgres
// must provide before flusso-pg can stream: the server settings, the
// privileges of the role it connects as, the publication, the replica
// identity of every table the indexes read, and the replication slot. It
// answers `flusso-pg check`, runs at the start of `flusso-pg follow`
// (Ensure, before the slot is created) and carries out `flusso-pg drop`.
//
// # Logical decoding and wal_level
//
// flusso-pg reads changes from the write-ahead log through logical
// decoding, which needs wal_level = logical (a restart to change) and a
// free replication slot and WAL sender (max_replication_slots,
// max_wal_senders). See
// https://www.postgresql.org/docs/current/logicaldecoding-explanation.html
// and https://www.postgresql.org/docs/current/runtime-config-wal.html#GUC-WAL-LEVEL.
//
// # The role: REPLICATION, SELECT, CREATE, ownership
//
// A replication connection, and creating or dropping a slot, need the
// REPLICATION attribute (or superuser; on Amazon RDS, membership in
// rds_replication). Building documents needs SELECT on every table the
// indexes read (or pg_read_all_data, PostgreSQL 14+) and USAGE on their
// schemas. Creating a publication needs CREATE on the database; adding a
// table to a publication needs ownership of the table and of the
// publication; FOR ALL TABLES needs superuser. See
// https://www.postgresql.org/docs/current/logical-replication-security.html
// and https://www.postgresql.org/docs/current/sql-createpublication.html.
//
// # The publication
//
// pgoutput sends only the changes of the tables in the publications the
// reader names, and only the operations the publication publishes
// (publish = 'insert, update, delete, truncate' by default). A table missing
// from the publication is silent: its changes simply never arrive, and the
// documents that embed its rows go stale. So check lists every table the
// indexes read (roots, relations at any depth, join tables, aggregates) and
// says, for each, whether the publication covers it. pg_publication_tables
// expands FOR ALL TABLES and FOR TABLES IN SCHEMA publications, so both
// count as covering. Since PostgreSQL 15 a publication may also carry a row
// filter (WHERE), which hides the changes of the other rows, and a column
// list, which may leave out the key or join columns flusso-pg needs to find
// the affected documents: both are reported. A partitioned table's changes
// arrive under the partitions' names unless publish_via_partition_root is
// on. The publication must exist before the slot is created: pgoutput reads
// it through the catalog as of the position being decoded. See
// https://www.postgresql.org/docs/current/logical-replication-publication.html,
// https://www.postgresql.org/docs/current/logical-replication-row-filter.html
// and https://www.postgresql.org/docs/current/logical-replication-col-lists.html.
//
// # Replica identity
//
// For an UPDATE or DELETE, the WAL holds the old row only as far as the
// table's replica identity says: DEFAULT sends the primary key columns,
// USING INDEX the index's columns, FULL the whole row, NOTHING nothing. A
// table with no identity at all (NOTHING, or DEFAULT without a primary key)
// cannot publish UPDATE or DELETE: once it is in a publication that
// publishes them, Postgres refuses those statements on it. That verdict is
// this package's, and provisioning never adds such a table. Whether the
// identity carries the columns a document needs (the join columns of a
// child table) is internal/build's verdict (code replica_identity), merged
// into the same report. See
// https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-REPLICA-IDENTITY.
//
// # The slot
//
// A logical slot remembers how far the reader has confirmed, and makes the
// server keep every WAL segment from its restart_lsn on. pg_replication_slots
// tells whether it is active (a connection streams from it; active_pid is
// that backend) and its wal_status: reserved (within max_wal_size),
// extended (beyond it, kept for the slot), unreserved (beyond
// max_slot_wal_keep_size: invalidated at the next checkpoint unless the
// reader catches up) or lost (invalidated; PostgreSQL 17 says why in
// invalidation_reason). A lost slot cannot stream again: flusso-pg follow
// --resync starts over. max_slot_wal_keep_size = -1 (the default) lets a
// stopped reader fill the disk. See
// https://www.postgresql.org/docs/current/view-pg-replication-slots.html and
// https://www.postgresql.org/docs/current/runtime-config-replication.html#GUC-MAX-SLOT-WAL-KEEP-SIZE.
//
// # Provisioning
//
// source.provision decides what Ensure does: auto creates the publication
// for exactly the tables read (with publish_via_partition_root when one of
// them is partitioned) or adds the tables it lacks, and records in the
// state dir when it created it; it never drops, narrows or re-options a
// publication, and never widens one to all tables. check changes nothing and
// refuses to start with the report's failures. off checks nothing. Creating
// the slot stays with capture (internal/wal). Drop removes the slot, the
// publication when flusso-pg created it, and the slot's state records.
//
// Every verdict is a Finding with a status (ok, warn, fail, info), the
// index, table and column it is about, a message, and the SQL or GRANT that
// fixes it.
package provision
