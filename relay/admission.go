package relay

import (
	"sync"
	"syscall"
	"time"

	"github.com/edgerelay/edgerelay/relay/ratelimit"
)

// admission decides, before the upgrade, whether a new WebSocket
// connection may open: at most websocket.max_connections on the node and
// websocket.max_connections_per_address from one client address (IPv6:
// per /64), and at most websocket.upgrades_per_second_per_address new ones
// per address. A refused client gets 503 with Retry-After before anything
// is read past its request line. Safe for concurrent use.
type admission struct {
	maxConns, maxPerAddr int
	rate                 *ratelimit.Limiter // nil: no rate bound

	mu      sync.Mutex
	total   int
	perAddr map[string]int
}

// Reasons admit refuses with, the label of connections_refused_total.
const (
	refusedNode    = "node_limit"
	refusedAddress = "address_limit"
	refusedRate    = "address_rate"
)

// reservedFiles is what the derived connection cap leaves of the open-file
// limit for Kafka, HTTP, the listener and the process itself: 128, or an
// eighth of a smaller limit.
const reservedFiles = 128

// newAdmission builds the caps; filesPerConn is what one connection holds
// of the open-file limit (1, or 3 for a TLS WebSocket: tls.go), for the
// cap derived when websocket.max_connections is 0.
func newAdmission(ws WebSocketConfig, filesPerConn int) *admission {
	a := &admission{maxConns: ws.MaxConnections, maxPerAddr: ws.MaxConnectionsPerAddress, perAddr: map[string]int{}}
	if n := fileLimitConns(); a.maxConns == 0 && n > 0 {
		a.maxConns = max(n/filesPerConn, 1)
	}
	if ws.UpgradesPerSecondPerAddress > 0 {
		a.rate = ratelimit.New(ws.UpgradesPerSecondPerAddress, ws.UpgradesBurstPerAddress, maxRateAddresses)
	}
	return a
}

// fileLimitConns is the open-file limit less what reservedFiles says (0:
// no limit known).
func fileLimitConns() int {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Cur > 1<<30 {
		return 0
	}
	return max(int(lim.Cur)-min(reservedFiles, int(lim.Cur)/8), 1)
}

// admit takes a slot for a connection from addr (an addressKey), or
// returns why not. Every admitted connection must be released.
func (a *admission) admit(addr string, now time.Time) string {
	if a.rate != nil && !a.rate.Allow(addr, now) {
		return refusedRate
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.maxConns > 0 && a.total >= a.maxConns:
		return refusedNode
	case a.maxPerAddr > 0 && a.perAddr[addr] >= a.maxPerAddr:
		return refusedAddress
	}
	a.total++
	a.perAddr[addr]++
	return ""
}

// release gives back addr's slot.
func (a *admission) release(addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perAddr[addr]--; a.perAddr[addr] <= 0 {
		delete(a.perAddr, addr)
	}
}

// sweep forgets refilled rate buckets.
func (a *admission) sweep(now time.Time) {
	if a.rate != nil {
		a.rate.Sweep(now)
	}
}
