// Package pgtest starts a throwaway PostgreSQL server for integration tests:
// a temporary data directory, a free port on 127.0.0.1, wal_level=logical,
// plenty of slots and WAL senders, fsync off. One cluster serves a whole test
// binary; each test gets a fresh database of its own.
//
// Use it from a package's TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and in a test:
//
//	db := pgtest.NewDB(t)
//	db.Exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
//
// Binaries are looked up in this order: $FLUSSO_PG_BIN; the cache filled by
// `make pg PG=<major>` (.cache/pg/<major>/bin, with FLUSSO_PG_VERSION choosing
// the major); pg_config --bindir; /usr/lib/postgresql/*/bin (newest first).
// When the process runs as root the server is started as the `postgres` user,
// since Postgres refuses to run as root.
//
// Integration tests never skip silently: without a usable server they fail
// with a message saying how to get one. `go test -short` skips them on purpose.
package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Cluster is a running throwaway server.
type Cluster struct {
	BinDir  string
	DataDir string
	Port    int
	Version int // server major version

	dir     string
	runAs   *user.User // nil: run as the current user
	logFile string
	mu      sync.Mutex
	started bool
}

var (
	once     sync.Once
	shared   *Cluster
	startErr error
	dbSeq    atomic.Int64
)

// Main runs the package's tests and stops the shared cluster afterwards.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Stop()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// Shared returns the test binary's cluster, starting it on first use. It
// fails the test (never skips it) when no server can be started, and skips
// it under -short.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped on purpose under -short")
	}
	once.Do(func() {
		shared, startErr = Start(Options{})
	})
	if startErr != nil {
		t.Fatalf("pgtest: %v", startErr)
	}
	return shared
}

// Options tune a cluster started with Start.
type Options struct {
	// Settings are extra postgresql.conf lines, such as "wal_level = replica".
	Settings []string
	// SSL turns on TLS with a self-signed certificate (DSNs then take
	// sslmode=require).
	SSL bool
	// BinDir holds the server binaries to use; "" is FindBinDir's choice.
	BinDir string
}

// Start initialises and starts a new cluster. Callers own it and must Stop it.
func Start(opts Options) (*Cluster, error) {
	bin, err := opts.BinDir, error(nil)
	if bin == "" {
		if bin, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{BinDir: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, and Postgres refuses to run as root; there is no `postgres` user to run it as: create one (useradd -r postgres) or run the tests as another user")
		}
		c.runAs = u
	}
	c.dir, err = os.MkdirTemp("", "flusso-pgtest-")
	if err != nil {
		return nil, err
	}
	c.DataDir = filepath.Join(c.dir, "data")
	c.logFile = filepath.Join(c.dir, "postgres.log")
	if c.runAs != nil {
		if err := chownToRunAs(c.dir, c.runAs); err != nil {
			return nil, err
		}
	}
	if out, err := c.run(filepath.Join(bin, "initdb"), "-D", c.DataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb (%s): %v\n%s", bin, err, out)
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + c.dir + "'",
		"wal_level = logical",
		"max_replication_slots = 40",
		"max_wal_senders = 40",
		"max_connections = 200",
		"fsync = off",
		"full_page_writes = off",
		"synchronous_commit = on",
		"shared_buffers = 128MB",
		"wal_sender_timeout = 60s",
		"logical_decoding_work_mem = 64kB",
		"log_min_messages = warning",
	}
	if opts.SSL {
		if err := c.writeCertificate(); err != nil {
			return nil, fmt.Errorf("ssl certificate: %w", err)
		}
		conf = append(conf, "ssl = on")
	}
	conf = append(conf, opts.Settings...)
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString("\n# pgtest\n" + strings.Join(conf, "\n") + "\n")
	f.Close()
	if err != nil {
		return nil, err
	}
	// A free port can be taken between probing and binding: try a few.
	for attempt := 0; attempt < 5; attempt++ {
		c.Port, err = freePort()
		if err != nil {
			return nil, err
		}
		if err = c.Restart(); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	v, err := c.serverVersion()
	if err != nil {
		return nil, err
	}
	c.Version = v
	return c, nil
}

// FindBinDir locates a directory holding initdb, pg_ctl and postgres.
func FindBinDir() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("FLUSSO_PG_BIN"); dir != "" {
		if ok(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("FLUSSO_PG_BIN=%s holds no initdb, pg_ctl and postgres", dir)
	}
	if root := repoRoot(); root != "" {
		if v := os.Getenv("FLUSSO_PG_VERSION"); v != "" {
			dir := filepath.Join(root, ".cache", "pg", v, "bin")
			if ok(dir) {
				return dir, nil
			}
			return "", fmt.Errorf("FLUSSO_PG_VERSION=%s but %s is missing: run `make pg PG=%s`", v, dir, v)
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); ok(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, dir := range dirs {
		if ok(dir) {
			return dir, nil
		}
	}
	if root := repoRoot(); root != "" {
		cached, _ := filepath.Glob(filepath.Join(root, ".cache", "pg", "*", "bin"))
		sort.Slice(cached, func(i, j int) bool { return majorOf(cached[i]) > majorOf(cached[j]) })
		for _, dir := range cached {
			if ok(dir) {
				return dir, nil
			}
		}
	}
	return "", errors.New("no PostgreSQL server binaries found: install them (apt-get install -y postgresql), " +
		"or run `make pg PG=17` to fetch one into .cache/pg, or point FLUSSO_PG_BIN at a bin directory " +
		"holding initdb, pg_ctl and postgres; use `go test -short` to skip the integration tests on purpose")
}

func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// repoRoot finds the module root (the folder holding go.mod) from the working directory.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeCertificate puts a self-signed server.crt and server.key (the
// defaults of ssl_cert_file and ssl_key_file) in the data directory, owned
// by the server's user, the key readable by it alone as Postgres requires.
func (c *Cluster) writeCertificate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, data := range files {
		path := filepath.Join(c.DataDir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
		if c.runAs != nil {
			if err := chownToRunAs(path, c.runAs); err != nil {
				return err
			}
		}
	}
	return nil
}

func chownToRunAs(dir string, u *user.User) error {
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
}

// run executes a server binary, as the postgres user when we are root.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if c.runAs != nil {
		uid, _ := strconv.Atoi(c.runAs.Uid)
		gid, _ := strconv.Atoi(c.runAs.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Env = append(os.Environ(), "HOME="+c.dir)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

// Restart (re)starts the server, waiting until it accepts connections. It is
// also how tests simulate a server restart after Stop.
func (c *Cluster) Restart() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		if out, err := c.run(filepath.Join(c.BinDir, "pg_ctl"), "-D", c.DataDir, "-m", "fast", "-w", "stop"); err != nil {
			return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
		}
		c.started = false
	}
	out, err := c.run(filepath.Join(c.BinDir, "pg_ctl"), "-D", c.DataDir, "-l", c.logFile, "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d", c.Port), "start")
	if err != nil {
		log, _ := os.ReadFile(c.logFile)
		return fmt.Errorf("pg_ctl start on port %d: %v\n%s\n%s", c.Port, err, out, tail(string(log), 2000))
	}
	c.started = true
	return nil
}

// Stop stops the server (fast mode); Restart starts it again.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return
	}
	c.run(filepath.Join(c.BinDir, "pg_ctl"), "-D", c.DataDir, "-m", "immediate", "-w", "stop")
	c.started = false
}

// StopFast stops the server in fast mode, as an administrator's restart would.
func (c *Cluster) StopFast() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return nil
	}
	out, err := c.run(filepath.Join(c.BinDir, "pg_ctl"), "-D", c.DataDir, "-m", "fast", "-w", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	c.started = false
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// DSN returns a connection string for database db as the superuser postgres.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// DSNAs returns a connection string for database db as role with password.
func (c *Cluster) DSNAs(db, role, password string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", role, password, c.Port, db)
}

func (c *Cluster) serverVersion() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var v int
	err = conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int / 10000").Scan(&v)
	return v, err
}

// DB is a fresh database in the shared cluster, dropped when the test ends.
type DB struct {
	Cluster *Cluster
	Name    string
	DSN     string
	Pool    *pgxpool.Pool
}

// NewDB creates a fresh database for the test and returns it with a pool.
// Replication slots created in it are dropped at the end of the test.
func NewDB(t testing.TB) *DB {
	t.Helper()
	c := Shared(t)
	return c.NewDB(t)
}

// NewDB creates a fresh database in c.
func (c *Cluster) NewDB(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	db := &DB{Cluster: c, Name: name, DSN: c.DSN(name)}
	db.Pool, err = pgxpool.New(ctx, db.DSN)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(func() {
		db.Pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			return // the cluster may have been stopped by the test
		}
		defer admin.Close(ctx)
		// Slots pin WAL for the whole cluster: drop this database's.
		admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
		admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return db
}

// Exec runs SQL (several statements allowed) and fails the test on error.
func (db *DB) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if len(args) == 0 {
		conn, err := db.Pool.Acquire(ctx)
		if err != nil {
			t.Fatalf("pgtest: acquire: %v", err)
		}
		defer conn.Release()
		// The simple protocol runs several statements in one call.
		if _, err := conn.Conn().PgConn().Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("pgtest: exec %q: %v", short(sql), err)
		}
		return
	}
	if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: exec %q: %v", short(sql), err)
	}
}

// LoadFile runs the SQL file at path, with psql-style :name variables
// replaced by vars (the blog workload's schema.sql takes authors, posts,
// comments).
func (db *DB) LoadFile(t testing.TB, path string, vars map[string]string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	db.Exec(t, SubstituteVars(string(data), vars))
}

// SubstituteVars replaces psql-style :name variables.
func SubstituteVars(sql string, vars map[string]string) string {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	// Longest first so :posts is not replaced inside :posts_extra.
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		sql = strings.ReplaceAll(sql, ":"+k, vars[k])
	}
	return sql
}

func short(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// RepoRoot returns the module root, for tests that read workloads/.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root := repoRoot()
	if root == "" {
		t.Fatal("pgtest: cannot find go.mod above the working directory")
	}
	return root
}
