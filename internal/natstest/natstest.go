// Package natstest starts throwaway NATS servers with JetStream for
// integration tests, as internal/pgtest does for Postgres: a temporary store
// directory, free ports on 127.0.0.1, one server or a three-node cluster, and
// the faults tests need (a node killed with SIGKILL, then restarted on the
// same ports and store).
//
//	s := natstest.Start(t, natstest.Options{})
//	c := natstest.StartCluster(t, 3, natstest.Options{})
//	c.Servers[1].Kill(t); ...; c.Servers[1].Restart(t)
//
// The binary is $FLUSSO_NATS_SERVER, else /usr/sbin/nats-server (Debian's
// nats-server package), else nats-server on $PATH. Tests never skip silently:
// without a binary they fail saying how to get one; `go test -short` skips
// them on purpose. Servers are stopped when the test ends.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options shape the servers' config.
type Options struct {
	// MaxPayload is the server's max_payload in bytes; 0 keeps the default (1 MiB).
	MaxPayload int
	// User and Password, or Token, require clients to authenticate.
	User, Password, Token string
}

// Server is one running (or killed) nats-server.
type Server struct {
	Name        string
	Port        int // client port
	ClusterPort int // 0 for a single server
	HTTPPort    int // monitoring (/healthz)
	Dir         string

	bin  string
	conf string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Cluster is a set of clustered servers.
type Cluster struct {
	Servers []*Server
}

// Binary returns the nats-server binary or fails t saying how to get it.
func Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	if b := os.Getenv("FLUSSO_NATS_SERVER"); b != "" {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("FLUSSO_NATS_SERVER=%s: %v", b, err)
		}
		return b
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	if b, err := exec.LookPath("nats-server"); err == nil {
		return b
	}
	t.Fatalf("no nats-server found: install Debian's package (apt-get install -y nats-server, as .ci/run does) or set FLUSSO_NATS_SERVER to the binary")
	return ""
}

// Start runs one JetStream server.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Binary(t)
	ports := freePorts(t, 2)
	s := &Server{Name: "n1", Port: ports[0], HTTPPort: ports[1], Dir: t.TempDir(), bin: bin}
	s.writeConf(t, o, "")
	s.start(t)
	t.Cleanup(s.stop)
	s.WaitReady(t)
	return s
}

// StartCluster runs n clustered JetStream servers and waits until each is
// ready (JetStream up, a meta leader elected).
func StartCluster(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	bin := Binary(t)
	ports := freePorts(t, 3*n)
	c := &Cluster{}
	var routes []string
	for i := 0; i < n; i++ {
		s := &Server{Name: fmt.Sprintf("n%d", i+1), Port: ports[3*i], ClusterPort: ports[3*i+1], HTTPPort: ports[3*i+2],
			Dir: t.TempDir(), bin: bin}
		c.Servers = append(c.Servers, s)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", s.ClusterPort))
	}
	for _, s := range c.Servers {
		s.writeConf(t, o, fmt.Sprintf("cluster {\n  name: flusso\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
			s.ClusterPort, strings.Join(routes, ", ")))
		s.start(t)
		t.Cleanup(s.stop)
	}
	for _, s := range c.Servers {
		s.WaitReady(t)
	}
	return c
}

// URL is the server's client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.Port) }

// URLs are the cluster's client URLs, comma-separated (as nats.Connect and
// output.jetstream.url take them).
func (c *Cluster) URLs() string {
	var u []string
	for _, s := range c.Servers {
		u = append(u, s.URL())
	}
	return strings.Join(u, ",")
}

func (s *Server) writeConf(t testing.TB, o Options, cluster string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", s.Name, s.Port, s.HTTPPort)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n", filepath.Join(s.Dir, "js"))
	if o.MaxPayload > 0 {
		fmt.Fprintf(&b, "max_payload: %d\n", o.MaxPayload)
	}
	switch {
	case o.Token != "":
		fmt.Fprintf(&b, "authorization {\n  token: %q\n}\n", o.Token)
	case o.User != "":
		fmt.Fprintf(&b, "authorization {\n  user: %q\n  password: %q\n}\n", o.User, o.Password)
	}
	b.WriteString(cluster)
	s.conf = filepath.Join(s.Dir, "nats.conf")
	s.log = filepath.Join(s.Dir, "nats.log")
	if err := os.WriteFile(s.conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "-c", s.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start nats-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
}

// WaitReady polls the server's /healthz until JetStream is up (and, in a
// cluster, current with the meta leader), for up to a minute.
func (s *Server) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", s.HTTPPort)
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		select {
		case <-done:
			t.Fatalf("nats-server %s exited; its log:\n%s", s.Name, s.Log())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			var body [512]byte
			n, _ := resp.Body.Read(body[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body[:n])
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nats-server %s not ready after 60s (%s); its log:\n%s", s.Name, last, s.Log())
}

// Kill ends the server with SIGKILL (no clean shutdown) and waits for it.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill nats-server %s: %v", s.Name, err)
	}
	<-done
}

// Running reports whether the server process is up (not killed).
func (s *Server) Running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Restart starts a killed server again, on the same ports and store, and
// waits until it is ready.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.start(t)
	s.WaitReady(t)
}

// RestartKilled starts every killed node of the cluster again, then waits
// until each is ready (a node alone cannot be: it needs a quorum).
func (c *Cluster) RestartKilled(t testing.TB) {
	t.Helper()
	var started []*Server
	for _, s := range c.Servers {
		if !s.Running() {
			s.start(t)
			started = append(started, s)
		}
	}
	for _, s := range started {
		s.WaitReady(t)
	}
}

// Log returns the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

func (s *Server) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// freePorts returns n distinct free loopback ports (held open together while
// they are picked, so none is handed out twice).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
