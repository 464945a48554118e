package pgtest

import (
	"context"
	"testing"
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
