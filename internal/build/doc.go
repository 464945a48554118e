// Package build turns the configured indexes into SQL and runs it: it reads
// the catalog, checks the config against it, builds complete documents on the
// server, and works out which documents a batch of changed rows affects.
//
// # Catalog
//
// [LoadCatalog] reads, for every table an index names, its columns (type with
// modifier, nullability, type category), its primary key in key order, and
// its replica identity: the columns a DELETE's old row, or an UPDATE's old
// row, carries in the WAL. Under REPLICA IDENTITY DEFAULT that is the primary
// key; USING INDEX, that index's columns; FULL, every column; NOTHING, none.
// Under DEFAULT and INDEX, an UPDATE carries an old row only when one of
// those columns changed. See
// https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-REPLICA-IDENTITY
// and https://www.postgresql.org/docs/current/logical-replication-publication.html.
//
// Keys always come from the catalog's primary key (or the config's key:),
// never from the identity flags of the WAL: under FULL every column is
// flagged as part of the identity.
//
// # Validation
//
// [Compile] checks every index at once and returns [Problem] values naming
// the index, the config path, the table, the column and the fix: missing
// schemas, tables and columns (with the nearest name), a root without a key,
// joins between incompatible types, sum/avg over non-numeric columns,
// order_by on missing columns, where clauses the server rejects or that
// cannot be followed exactly (reading other tables, the clock, VOLATILE
// functions: asked of the server with EXPLAIN (VERBOSE) in where.go),
// nullable or generated key columns, generated child-side join columns,
// duplicate fields once the default columns are filled in, inheritance
// children, the replica identity of every leaf partition, and the one
// users get wrong most: a table below the root whose columns pointing toward
// the root are not in its replica identity. Such a table cannot tell, on a
// DELETE or on an UPDATE that moves the row to another parent, which parent
// held it, so that parent's document would stay stale; the fix is
// ALTER TABLE ... REPLICA IDENTITY FULL. A belongs_to target is joined by
// its key, which every identity but NOTHING carries, so it needs nothing.
//
// # Documents
//
// An index compiles to a tree of nodes: the root table, its relations
// (belongs_to and has_one give an object or null, has_many and many_to_many
// an array, [] when empty) and aggregates, nested to any depth. The tree
// becomes one SQL expression per root row: json_build_object for objects,
// json_agg in a correlated subquery for arrays, scalar subqueries for
// aggregates. [Index.Build] runs it for a whole batch of keys in one
// statement:
//
//	SELECT <key json>, <key text>, d.doc
//	FROM (SELECT v.v0::bigint AS k0 FROM unnest($1::text[]) AS v(v0)) AS k
//	LEFT JOIN LATERAL (SELECT json_build_object(...) AS doc
//	                   FROM posts AS t0 WHERE t0.id = k.k0) AS d ON true
//
// Arrays and aggregates over the same table, join and where are computed in
// one LATERAL pass (json_agg, count and max over a post's comments read them
// once). Keys travel as text (one text[] per key column) and are cast to the
// column's type on the server, so a composite key, a uuid or a bigint past
// 2^53 needs nothing special, and the key JSON is typed ({"id":42}) even for
// a key whose row is gone: that row comes back with a NULL document, which
// the caller writes as a delete. [Index.Scan] pages through the root by its
// key (a row comparison for composite keys) for the backfill.
//
// Values are exactly what Postgres' to_json gives: documents are read as raw
// bytes from the driver and handed on untouched, never decoded into Go
// numbers. Postgres caps a function call at 100 arguments, so an object of
// more than 50 fields is built in chunks and spliced as text, which keeps
// the field order and every value as json prints it.
//
// # Resolution
//
// [Plan.Resolve] turns changed rows into the root keys to rebuild. Every
// place an index reads a table is a chain of joins up to the root. When the
// changed row holds the root key itself (the root, or a child joined by the
// root's key, like comments.post_id), the key is taken from the row, old and
// new values both, with no query. Otherwise one statement per table and
// batch joins the changed values (text arrays, cast on the server) up the
// chain to the root. Old values are resolved as well as new ones, so a
// deleted child or a child moved to another parent rebuilds its old parent
// too. A value the server did not send (an unchanged TOASTed value with no
// old row) is never taken for NULL: the row's current values are looked up
// by its key. TRUNCATE of a root table is reported as Truncated (only the
// keys of rows before it are dropped: a reload in one transaction keeps
// the rows written after it), of any other table the index reads as Rebuild.
//
// # Keys
//
// A document's key and id are spelt by the root row (t0.<key>), whatever
// spelling looked it up; Key.String escapes a composite key's parts so
// distinct keys never share an id. The text of a key does not depend on
// session settings: internal/pgsession pins them.
package build
