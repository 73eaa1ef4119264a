package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procSampler reads a relay's memory and CPU from /proc when it runs on
// this machine: the process listening on the WebSocket URL's port.
type procSampler struct{ pid int }

// relayProc finds the process listening on wsURL's loopback port, or
// returns nil (remote relay, no /proc, not found): callers then use the
// relay's /metrics.
func relayProc(wsURL string) *procSampler {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil
	}
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		return nil
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			pid, err := strconv.Atoi(strings.Split(fd, "/")[2])
			if err == nil {
				return &procSampler{pid: pid}
			}
		}
	}
	return nil
}

// listeningInodes are the socket inodes listening on port (IPv4 and IPv6).
func listeningInodes(port int) map[string]bool {
	out := map[string]bool{}
	want := fmt.Sprintf(":%04X", port)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" { // 0A: LISTEN
				out[fields[9]] = true
			}
		}
		f.Close()
	}
	return out
}

// clockTicks is USER_HZ: Linux reports /proc CPU times in 1/100 s on every
// architecture Go supports.
const clockTicks = 100

// sample returns the process's resident set and CPU time so far.
func (p *procSampler) sample() (rssBytes int64, cpuSeconds float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may contain spaces: fields start after its ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 22 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", p.pid, len(fields))
	}
	utime, _ := strconv.ParseFloat(fields[11], 64) // field 14 of the line
	stime, _ := strconv.ParseFloat(fields[12], 64) // field 15
	pages, _ := strconv.ParseInt(fields[21], 10, 64)
	return pages * int64(os.Getpagesize()), (utime + stime) / clockTicks, nil
}
