package relay

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgerelay/edgerelay/cluster"
	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/bets"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/ingest"
	"github.com/edgerelay/edgerelay/relay/protocol"
	"github.com/edgerelay/edgerelay/relay/ratelimit"
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

	engine *engine.Engine

	mu    sync.Mutex
	conns map[*session]struct{}

	// draining: a drain started (drain.go); shuttingDown: past its
	// lb_delay, upgrades are refused.
	draining       atomic.Bool
	shuttingDown   atomic.Bool
	drainOnce      sync.Once
	drainRequested chan struct{} // closed by POST /v1/drain
	drainMetrics   *drainMetrics

	// overloaded: connections waited past overload.unready_after for a
	// writer in the last heartbeat period (/readyz says so).
	overloaded atomic.Bool
	// restLimits is the per-address rate limit of /v1/ (nil: none).
	restLimits *ratelimit.Limiter
	admission  *admission // WebSocket connection caps and upgrade rate
	// heartbeat goroutine only
	shedding      bool
	lastConflated uint64

	compressor *engine.Compressor // websocket.deflate: the encoder's and the replies'

	verifier *auth.Verifier // nil: tokens are not checked
	desk     *bets.Desk     // nil: bets are off

	tls                *tls.Config // the listener's TLS (tls.go); nil: plain TCP
	tlsHandshakeErrors prometheus.Counter
	tlsBridged         prometheus.Gauge
	tlsRefused         *prometheus.CounterVec
	tlsGate            *tlsGate

	cluster   *cluster.Node // membership (cluster.go); gossip off without cluster.bind
	presence  *presence     // presence and presence_stats (presence.go)
	publicURL string        // the WebSocket URL gossiped, set by Serve
}

// New validates cfg and builds a Server. It does not contact Kafka.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Node = DefaultNode(cfg.Node) // "" = the host name, as LoadConfig does
	s := &Server{cfg: cfg, log: log, conns: map[*session]struct{}{}, mux: http.NewServeMux(),
		drainRequested: make(chan struct{})}
	var err error
	if s.compressor, err = engine.NewCompressor(cfg.WebSocket.Deflate.Level, int(cfg.WebSocket.Deflate.MinBytes)); err != nil {
		return nil, err
	}
	s.hub = fanout.New(fanout.Config{
		Encoder:        s.encodeForm,
		MaxChannels:    cfg.Channels.MaxChannels,
		MaxCachedBytes: int64(cfg.Channels.MaxCachedBytes),
		IdleTTL:        cmp.Or(cfg.Channels.IdleTTL, -1), // 0: never
		MaxNameLength:  cfg.Channels.MaxNameLength,
		HistorySize:    cfg.Channels.HistorySize,
		Maps:           mapRules(cfg.Channels.Maps.Rules),
		MaxMaps:        cfg.Channels.Maps.MaxMaps,
		MaxMapEntries:  cfg.Channels.Maps.MaxEntries,
		MaxMapBytes:    int64(cfg.Channels.Maps.MaxBytes),
		OnMapFull:      s.mapFull,
	})
	s.metrics = newMetrics(s.hub, s.Ready)
	filesPerConn := 1
	if cfg.TLS.Enabled() {
		filesPerConn = tlsFilesPerConn
	}
	s.admission = newAdmission(cfg.WebSocket, filesPerConn)
	if err := s.newListenerTLS(); err != nil {
		return nil, err
	}
	s.drainMetrics = newDrainMetrics(s.metrics.reg)
	if s.cluster, err = s.newCluster(); err != nil {
		return nil, err
	}
	s.presence = s.newPresence()
	ws := cfg.WebSocket
	if s.engine, err = engine.New(engine.Config{
		Writers:            ws.Writers,
		MaxMessageBytes:    int(ws.MaxMessageBytes),
		SoftQueueBytes:     int(ws.SoftQueueBytes),
		MaxQueueBytes:      int(ws.MaxQueueBytes),
		StallTimeout:       ws.StallTimeout,
		WriteTimeout:       ws.WriteTimeout,
		ConflateAfter:      cfg.Overload.ConflateAfter,
		Slow:               engine.Close(protocol.DisconnectSlow),
		MaxFramesPerSecond: ws.MaxFramesPerSecond,
		Flood:              engine.Close(protocol.DisconnectTooManyReqs),
		Unencodable:        engine.Close(protocol.DisconnectInappropriate),
		Compressor:         s.compressor,
		Hooks:              s.metrics,
		Log:                log.With("component", "engine"),
	}); err != nil {
		return nil, err
	}
	if cfg.Auth.enabled() {
		if s.verifier, err = newVerifier(cfg.Auth); err != nil {
			return nil, err
		}
	}
	kopts, err := cfg.Kafka.Opts()
	if err != nil {
		return nil, err
	}
	cfg.Ingest.Conflate, cfg.Ingest.ConflateAfter = s.conflates, cfg.Overload.ConflateAfter
	s.ingest, err = ingest.New(cfg.Ingest, kopts, s.hub, s.metrics, cfg.Channels.MaxNameLength, log.With("component", "ingest"))
	if err != nil {
		return nil, err
	}
	if cfg.Bets.Enabled {
		if s.desk, err = bets.NewDesk(cfg.Bets, kopts, cfg.Node, &betHooks{m: s.metrics, log: log.With("component", "bets"), accepted: s.metrics.bets.WithLabelValues("accepted")}); err != nil {
			return nil, err
		}
		registerDeskMetrics(s.metrics.reg, s.desk)
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
// reachable and the node is not draining.
func (s *Server) Ready() bool { return !s.draining.Load() && s.ingest.Ready() }

// Serve runs the relay on ln until ctx is done or an operator asks for a
// drain (POST /v1/drain), then drains (drain.go): it says it is draining,
// waits cluster.drain.lb_delay, tells every client to reconnect elsewhere
// (disconnect 3001 "shutdown") in waves over cluster.drain.period, leaves
// the cluster, waits for the clients to go (all of it within
// shutdown_timeout), stops Kafka ingest and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.startCluster(ln.Addr()); err != nil {
		return err
	}
	defer s.cluster.Shutdown() // after leaveCluster: nothing left to do
	if err := s.engine.Start(); err != nil {
		return err
	}

	bg, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	var wg sync.WaitGroup
	wg.Go(func() { s.ingest.Run(bg) })
	wg.Go(func() { s.hub.Run(bg) })
	wg.Go(func() { s.heartbeat(bg) })
	wg.Go(func() { s.presence.busiest(bg) })
	if s.desk != nil {
		wg.Go(func() { s.desk.Run(bg) }) // the dedup reader
	}

	hl := newHTTPListener(ln.Addr())
	acc := &acceptor{srv: s, ln: ln, http: hl}
	h := s.cfg.HTTP
	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout, WriteTimeout: h.WriteTimeout,
		IdleTimeout: h.IdleTimeout, MaxHeaderBytes: int(h.MaxHeaderBytes), ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	served := make(chan error, 2)
	go func() { served <- hs.Serve(hl) }()
	go func() { served <- acc.loop() }()
	pollers, writers := s.engine.Size()
	s.log.Info("relay listening", "addr", ln.Addr().String(), "node", s.cfg.Node, "websocket", s.cfg.WebSocket.Path,
		"pollers", pollers, "writers", writers)

	var err error
	select {
	case <-ctx.Done():
	case <-s.drainRequested:
	case err = <-served:
	}
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.drain(err == nil, deadline)
	s.leaveCluster()
	ln.Close()
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	hs.Shutdown(sctx)
	hl.Close()
	if left := s.waitConns(time.Until(deadline)); left > 0 {
		s.log.Warn("shutdown timeout with connections still open", "count", left)
	}
	s.engine.CloseAll()
	s.waitConns(time.Second)
	s.engine.Stop()
	stopBg()
	wg.Wait()
	if s.desk != nil {
		s.desk.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// waitConns waits up to d for all connections to be gone and returns how
// many are left.
func (s *Server) waitConns(d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET "+s.cfg.WebSocket.Path, func(w http.ResponseWriter, r *http.Request) {
		if s.shuttingDown.Load() { // the acceptor hands upgrades here while draining
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, errorView{"draining: connect to another node"})
			return
		}
		// Upgrades are taken by the acceptor on fresh connections only.
		writeJSON(w, http.StatusBadRequest, errorView{"open a new connection for the WebSocket upgrade"})
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	if s.cfg.HTTP.RatePerAddress > 0 {
		s.restLimits = ratelimit.New(s.cfg.HTTP.RatePerAddress, s.cfg.HTTP.BurstPerAddress, maxRateAddresses)
	}
	s.mux.HandleFunc("GET /v1/channels/{name}", s.limitREST(s.handleChannel))
	s.mux.HandleFunc("GET /v1/channels", s.limitREST(s.handleChannels))
	s.mux.HandleFunc("GET /v1/maps/{name}", s.limitREST(s.handleMap))
	s.mux.HandleFunc("GET /v1/cluster", s.limitREST(s.handleCluster))
	s.mux.HandleFunc("POST /v1/drain", s.limitREST(s.handleDrain))
	if s.cfg.Debug {
		s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		s.mux.HandleFunc("POST /debug/gc", func(w http.ResponseWriter, r *http.Request) {
			runtime.GC()
			debug.FreeOSMemory()
			writeJSON(w, http.StatusOK, map[string]string{"status": "collected"})
		})
	}
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

// addConn registers an upgraded connection, its engine.Conn made, and
// starts it. It reports false if the server is shutting down or epoll
// refused the socket; the caller then closes it.
func (s *Server) addConn(c *session, initial []byte) bool {
	s.mu.Lock()
	if s.shuttingDown.Load() {
		s.mu.Unlock()
		return false
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.metrics.accepted.WithLabelValues(c.codec.Encoding().String()).Inc()
	s.metrics.connections.Inc()
	if err := c.ec.Start(initial); err != nil {
		s.log.Warn("registering connection", "err", err)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.metrics.connections.Dec()
		return false
	}
	return true
}

func (s *Server) removeConn(c *session) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.metrics.connections.Dec()
	s.admission.release(c.addr)
}

// heartbeat sends server pings and enforces the pong and connect timeouts,
// and has the engine enforce its stall and close timeouts
// (engine.Conn.CheckTimeouts), with one ticker for all connections
// instead of a timer per connection.
func (s *Server) heartbeat(ctx context.Context) {
	cfg := s.cfg.WebSocket
	tick := time.Second
	if cfg.PingInterval > 0 && cfg.PingInterval < 4*tick {
		tick = cfg.PingInterval / 4
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var pings [2][]byte // by protocol.Encoding
	for _, codec := range []protocol.Codec{protocol.JSON, protocol.Protobuf} {
		pings[codec.Encoding()] = engine.MessageFrame(messageHead(codec), codec.Ping())
	}
	var batch []*session
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
		s.engine.Tick(now)
		for _, c := range batch {
			s.checkConn(c, now, pings[c.codec.Encoding()])
		}
		clear(batch)
		s.checkOverload(tick)
		if s.desk != nil {
			s.desk.Sweep(time.Unix(0, now))
		}
		if s.restLimits != nil {
			s.restLimits.Sweep(time.Unix(0, now))
		}
		s.admission.sweep(time.Unix(0, now))
		if s.tlsGate != nil {
			s.tlsGate.sweep(time.Unix(0, now))
		}
	}
}

// checkOverload takes the writers' longest run-list wait of the last
// period, publishes it, flips readiness past overload.unready_after and logs
// when conflation under overload starts and stops.
func (s *Server) checkOverload(period time.Duration) {
	wait := s.engine.MaxWriteWait()
	s.metrics.writeWaitMax.Set(wait.Seconds())
	conflated := s.metrics.overloadConflatedN.Load()
	shedding := conflated > s.lastConflated
	skipped := conflated - s.lastConflated
	s.lastConflated = conflated
	switch {
	case shedding && !s.shedding:
		// Conflation can start in the hub (a later record of a channel in
		// the same Kafka batch) with no writer waiting, so the wait is
		// named for what it is and the skipped count comes first.
		s.log.Warn("overloaded: conflating channel updates (latest value wins)", "updates_skipped", skipped, "writer_wait_max_last_period", wait)
	case !shedding && s.shedding:
		s.log.Info("overload over: delivering every update again", "max_write_wait", wait)
	}
	s.shedding = shedding
	over := s.cfg.Overload.UnreadyAfter > 0 && wait > s.cfg.Overload.UnreadyAfter
	if over != s.overloaded.Load() {
		s.overloaded.Store(over)
		if over {
			s.log.Warn("overloaded: /readyz answers 503", "max_write_wait", wait, "unready_after", s.cfg.Overload.UnreadyAfter)
		}
	}
}

func (s *Server) checkConn(c *session, now int64, ping []byte) {
	cfg := &s.cfg.WebSocket
	if c.ec.CheckTimeouts(now) {
		return // closing, or closed as slow
	}
	exp := c.expiresAt.Load()
	switch {
	case !c.isConnected.Load():
		if now-c.born > int64(cfg.ConnectTimeout) {
			c.disconnect(protocol.DisconnectStale)
		}
	case exp != 0 && now > exp+int64(s.cfg.Auth.Leeway):
		// The token expired and no refresh came: the SDK gets a new
		// token and reconnects.
		c.disconnect(protocol.DisconnectExpired)
	case c.subExpiresAt.Load() != 0 && now > c.subExpiresAt.Load()+int64(s.cfg.Auth.Leeway):
		c.disconnect(protocol.DisconnectSubExpired) // a subscription token, likewise
	case cfg.PingInterval <= 0:
	case c.pongDeadline.Load() != 0 && now > c.pongDeadline.Load():
		c.disconnect(protocol.DisconnectNoPong)
	case now-c.lastPing.Load() >= int64(cfg.PingInterval):
		c.lastPing.Store(now)
		c.pongDeadline.CompareAndSwap(0, now+int64(cfg.PongTimeout))
		c.ec.Send(ping)
	}
}
