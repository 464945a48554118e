// Package wal captures changes from a PostgreSQL logical replication slot
// with the pgoutput plugin and hands them out as committed transactions of
// thin rows (change.Row): only the columns the indexes need, old and new.
package wal
