package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/ingest"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// Version is the relay's version, reported in connect replies; set at build
// time with -ldflags "-X github.com/edgerelay/edgerelay/relay.Version=...".
var Version = "dev"

// Server is one relay node: Kafka ingest, channel hub, WebSocket clients and
// the HTTP surface, all on one listener.
type Server struct {
	cfg     Config
	log     *slog.Logger
	hub     *fanout.Hub
	ingest  *ingest.Ingester
	metrics *metrics
	mux     *http.ServeMux

	mu    sync.Mutex
	conns map[*conn]struct{}

	shuttingDown atomic.Bool
}

// New validates cfg and builds a Server. It does not contact Kafka.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, conns: map[*conn]struct{}{}, mux: http.NewServeMux()}
	s.hub = fanout.New(fanout.Config{
		Encoder:        encodePush,
		MaxChannels:    cfg.Channels.MaxChannels,
		MaxCachedBytes: int64(cfg.Channels.MaxCachedBytes),
		IdleTTL:        cfg.Channels.IdleTTL,
		MaxNameLength:  cfg.Channels.MaxNameLength,
	})
	s.metrics = newMetrics(s.hub, s.Ready)
	kopts, err := cfg.Kafka.Opts()
	if err != nil {
		return nil, err
	}
	s.ingest, err = ingest.New(cfg.Ingest, kopts, s.hub, s.metrics, cfg.Channels.MaxNameLength, log.With("component", "ingest"))
	if err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// Hub returns the server's channel hub.
func (s *Server) Hub() *fanout.Hub { return s.hub }

// Handle registers an extra HTTP handler (dev mode adds its demo page).
// Call it before Serve.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Ready reports whether the node should receive new clients: Kafka is
// reachable and the node is not shutting down.
func (s *Server) Ready() bool { return !s.shuttingDown.Load() && s.ingest.Ready() }

// Serve runs the relay on ln until ctx is done, then shuts down gracefully:
// it stops accepting, tells every client to reconnect elsewhere (disconnect
// 3001 "shutdown"), waits for them to go (at most shutdown_timeout) and stops
// Kafka ingest.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	bg, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	var wg sync.WaitGroup
	wg.Go(func() { s.ingest.Run(bg) })
	wg.Go(func() { s.hub.Run(bg) })
	wg.Go(func() { s.heartbeat(bg) })

	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	s.log.Info("relay listening", "addr", ln.Addr().String(), "node", s.cfg.Node, "websocket", s.cfg.WebSocket.Path)

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	s.shuttingDown.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	hs.Shutdown(sctx)
	s.drain(sctx)
	stopBg()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// drain disconnects every client with "shutdown" and waits until they are
// gone or ctx is done.
func (s *Server) drain(ctx context.Context) {
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.disconnect(protocol.DisconnectShutdown)
	}
	s.mu.Unlock()
	s.log.Info("draining connections", "count", n)
	for {
		s.mu.Lock()
		n = len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			s.log.Warn("shutdown timeout with connections still open", "count", n)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET "+s.cfg.WebSocket.Path, s.handleWebSocket)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	s.mux.HandleFunc("GET /v1/channels/{name}", s.handleChannel)
	s.mux.HandleFunc("GET /v1/channels", s.handleChannels)
}

var upgrader = ws.HTTPUpgrader{}

func (s *Server) handleWebSocket(w http.ResponseWriter, r *http.Request) {
	if s.shuttingDown.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if !s.originAllowed(r.Header.Get("Origin")) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	nc, rw, _, err := upgrader.Upgrade(r, w)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := newConn(s, nc, newClientID())
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.metrics.accepted.Inc()
	s.metrics.connections.Inc()
	go c.writeLoop()
	go c.readLoop(rw.Reader)
}

func (s *Server) originAllowed(origin string) bool {
	if origin == "" || len(s.cfg.WebSocket.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range s.cfg.WebSocket.AllowedOrigins {
		if o == "*" || o == origin {
			return true
		}
	}
	return false
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.metrics.connections.Dec()
}

// heartbeat sends server pings, enforces pong and connect timeouts, with
// one ticker for all connections instead of a timer per connection.
func (s *Server) heartbeat(ctx context.Context) {
	cfg := s.cfg.WebSocket
	tick := time.Second
	if cfg.PingInterval > 0 && cfg.PingInterval < 4*tick {
		tick = cfg.PingInterval / 4
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	ping := textFrame(protocol.Ping)
	var batch []*conn
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		batch = batch[:0]
		for c := range s.conns {
			batch = append(batch, c)
		}
		s.mu.Unlock()
		now := time.Now().UnixNano()
		for _, c := range batch {
			if !c.isConnected.Load() {
				if now-c.accepted.UnixNano() > int64(cfg.ConnectTimeout) {
					c.disconnect(protocol.DisconnectStale)
				}
				continue
			}
			if cfg.PingInterval <= 0 {
				continue
			}
			if d := c.pongDeadline.Load(); d != 0 && now > d {
				c.disconnect(protocol.DisconnectNoPong)
				continue
			}
			if now-c.lastPing.Load() >= int64(cfg.PingInterval) {
				c.lastPing.Store(now)
				c.pongDeadline.CompareAndSwap(0, now+int64(cfg.PongTimeout))
				c.send(ping)
			}
		}
		clear(batch)
	}
}

func newClientID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:])
}
