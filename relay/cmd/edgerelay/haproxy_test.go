package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// haproxy is HAProxy in front of TestClusterInNetworkNamespaces's nodes;
// its stats socket tells the state of each backend server.
type haproxy struct {
	sock string
	log  *lockedBuffer
}

// startHAProxy runs haproxy in the lab's lb namespace, in HTTP mode on
// labLBIP:labLBPort, with the four nodes as backends health-checked on
// /readyz. These are the settings docs/operations.md ("Load balancer")
// documents.
func startHAProxy(t *testing.T, lab *netLab) *haproxy {
	t.Helper()
	dir := t.TempDir()
	h := &haproxy{sock: filepath.Join(dir, "haproxy.sock"), log: &lockedBuffer{}}
	var servers strings.Builder
	for _, n := range lab.nodes {
		fmt.Fprintf(&servers, "    server %s %s\n", n.name, net.JoinHostPort(n.ip, strconv.Itoa(labHTTPPort)))
	}
	cfg := fmt.Sprintf(`global
    stats socket %s mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # an upgraded WebSocket is a tunnel: this, not client/server, bounds its idle time
    timeout tunnel 1h
    timeout check 1s
    retries 2
    option redispatch 1
frontend relay
    bind %s
    default_backend relays
backend relays
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
%s`, h.sock, net.JoinHostPort(labLBIP, strconv.Itoa(labLBPort)), servers.String())
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", lab.lbNS, "haproxy", "-db", "-f", file)
	cmd.Stdout, cmd.Stderr = h.log, h.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy log:\n%s", tail(h.log.String(), 8<<10))
		}
	})
	return h
}

// stats returns the "show stat" row of each backend server, by column name
// (status: UP, DOWN, "DOWN 1/2", ...; wredis: redispatches away from it).
func (h *haproxy) stats() (map[string]map[string]string, error) {
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	rows := map[string]map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) != len(header) || f[0] != "relays" || f[1] == "BACKEND" {
			continue
		}
		row := map[string]string{}
		for i, col := range header {
			row[col] = f[i]
		}
		rows[f[1]] = row
	}
	return rows, nil
}

// status returns each backend server's status.
func (h *haproxy) status() (map[string]string, error) {
	rows, err := h.stats()
	st := map[string]string{}
	for name, row := range rows {
		st[name] = row["status"]
	}
	return st, err
}

func (h *haproxy) waitStatus(t *testing.T, want map[string]string) {
	t.Helper()
	pollUntil(t, 30*time.Second, func() error {
		st, err := h.status()
		if err != nil {
			return err
		}
		for name, s := range want {
			if st[name] != s {
				return fmt.Errorf("haproxy servers %v, want %v", st, want)
			}
		}
		return nil
	})
}

func (h *haproxy) waitServer(t *testing.T, server, status string, timeout time.Duration) time.Time {
	t.Helper()
	return pollUntil(t, timeout, func() error {
		st, err := h.status()
		if err == nil && st[server] != status {
			err = fmt.Errorf("haproxy lists %s as %q, want %q", server, st[server], status)
		}
		return err
	})
}
