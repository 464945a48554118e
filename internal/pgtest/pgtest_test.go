package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestClusterIsLogical(t *testing.T) {
	db := NewDB(t)
	var level string
	if err := db.Pool.QueryRow(context.Background(), "SHOW wal_level").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level != "logical" {
		t.Fatalf("wal_level = %q, want logical", level)
	}
	db.LoadFile(t, RepoRoot(t)+"/workloads/blog/schema.sql", map[string]string{"authors": "3", "posts": "10", "comments": "30"})
	var n int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM comments").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 30 {
		t.Fatalf("comments = %d, want 30", n)
	}
}

func TestFreshDatabasePerTest(t *testing.T) {
	a, b := NewDB(t), NewDB(t)
	if a.Name == b.Name {
		t.Fatalf("two tests share database %s", a.Name)
	}
}

func TestPairReplicatesAndPromotes(t *testing.T) {
	p := NewPair(t, PairOptions{})
	db := p.Primary.NewDB(t)
	db.Exec(t, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g")
	p.WaitReplayed(t)
	ctx := context.Background()
	standby, err := pgx.Connect(ctx, p.StandbyDSN(db.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close(ctx)
	var n int
	var recovery bool
	if err := standby.QueryRow(ctx, "SELECT count(*), pg_is_in_recovery() FROM t").Scan(&n, &recovery); err != nil {
		t.Fatal(err)
	}
	if n != 100 || !recovery {
		t.Fatalf("standby: %d rows (want 100), in recovery %v (want true)", n, recovery)
	}
	if _, err := standby.Exec(ctx, "INSERT INTO t VALUES (101, 'y')"); err == nil {
		t.Fatal("the standby accepted a write before its promotion")
	}
	standby.Close(ctx)
	p.StopPrimary()
	if err := p.Promote(); err != nil {
		t.Fatal(err)
	}
	promoted, err := pgx.Connect(ctx, p.StandbyDSN(db.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer promoted.Close(ctx)
	if _, err := promoted.Exec(ctx, "INSERT INTO t VALUES (101, 'y')"); err != nil {
		t.Fatalf("the promoted standby refused a write: %v", err)
	}
	if err := promoted.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 101 {
		t.Fatalf("promoted: %d rows (want 101), %v", n, err)
	}
}
