package follow

import (
	"context"
	"testing"

	"github.com/flusso-pg/flusso-pg/internal/pgtest"
)

// A new leaf counts as "only partitions added whose rows are in the
// stream" (no rebuild) while it was never truncated and holds no row older
// than its ATTACH: a leaf made, written (its rows streamed) and truncated
// between two looks (the truncate is not in the stream) must rebuild, and
// so must a table attached with rows, or made and written in one
// transaction.
func TestOnlyStreamedLeavesAdded(t *testing.T) {
	db := pgtest.NewDB(t)
	db.Exec(t, `CREATE TABLE ev (id int, day date, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)`)
	ctx := context.Background()
	f := &Follower{pool: db.Pool}
	look := func() string {
		var fp string
		if err := db.Pool.QueryRow(ctx, partitionsSQL, []string{"public.ev"}).Scan(new(string), &fp); err != nil {
			t.Fatal(err)
		}
		return "public.ev=" + fp + ";"
	}
	before := look()
	db.Exec(t, `CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`)
	if ok, err := onlyStreamedLeavesAdded(ctx, f, before, look()); err != nil || !ok {
		t.Fatalf("a new empty leaf: %v, %v; want true (no rebuild)", ok, err)
	}
	db.Exec(t, `INSERT INTO ev VALUES (1, '2024-05-01')`)
	if ok, err := onlyStreamedLeavesAdded(ctx, f, before, look()); err != nil || !ok {
		t.Fatalf("a new leaf with a row written after it was made: %v, %v; want true (the row is in the stream)", ok, err)
	}
	db.Exec(t, `TRUNCATE ev_2024`)
	if ok, err := onlyStreamedLeavesAdded(ctx, f, before, look()); err != nil || ok {
		t.Fatalf("a new leaf written then truncated: %v, %v; want false (its rows may be in the documents)", ok, err)
	}

	before = look()
	db.Exec(t, `CREATE TABLE ev_2025 (id int, day date, PRIMARY KEY (id, day))`)
	db.Exec(t, `INSERT INTO ev_2025 VALUES (2, '2025-05-01')`)
	db.Exec(t, `ALTER TABLE ev ATTACH PARTITION ev_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`)
	if ok, err := onlyStreamedLeavesAdded(ctx, f, before, look()); err != nil || ok {
		t.Fatalf("a table attached with a row: %v, %v; want false (the row was never in the stream)", ok, err)
	}
	before = look()
	db.Exec(t, `BEGIN;
		CREATE TABLE ev_2026 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		INSERT INTO ev VALUES (3, '2026-05-01');
		COMMIT`)
	if ok, err := onlyStreamedLeavesAdded(ctx, f, before, look()); err != nil || ok {
		t.Fatalf("a leaf made and written in one transaction: %v, %v; want false (not told apart from an attach)", ok, err)
	}
	// A new leaf dropped between the look that found it and the reading of
	// its rows: gone again, not an error.
	before = look()
	db.Exec(t, `CREATE TABLE ev_2027 PARTITION OF ev FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')`)
	found := look()
	db.Exec(t, `DROP TABLE ev_2027`)
	if ok, err := onlyStreamedLeavesAdded(ctx, f, before, found); err != nil || ok {
		t.Fatalf("a new leaf dropped since the look: %v, %v; want false, no error", ok, err)
	}
}
