package relay

import (
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgerelay/edgerelay/cluster"
)

// The relay's side of cluster membership (package cluster): the node's
// status for its gossiped metadata, the metrics behind cluster.Hooks, GET
// /v1/cluster, and the leave on shutdown.

// newCluster builds the cluster member (gossip off without cluster.bind);
// its metrics are registered only with gossip on.
func (s *Server) newCluster() (*cluster.Node, error) {
	cfg := s.cfg.Cluster
	if cfg.Name == "" {
		cfg.Name = s.cfg.Node
	}
	var hooks cluster.Hooks
	if cfg.Enabled() {
		m := newClusterMetrics()
		s.metrics.reg.MustRegister(m.members, m.events, m.alone)
		hooks = m
	}
	return cluster.New(cfg, s.clusterStatus, hooks, s.log)
}

// clusterStatus is what the node gossips about itself.
func (s *Server) clusterStatus() cluster.Status {
	state := cluster.StateReady
	switch {
	case s.draining.Load():
		state = cluster.StateDraining
	case s.overloaded.Load():
		state = cluster.StateOverloaded
	case !s.ingest.Ready():
		state = cluster.StateUnready
	}
	s.mu.Lock()
	conns := len(s.conns)
	s.mu.Unlock()
	return cluster.Status{State: state, Version: Version, PublicURL: s.publicURL, Connections: conns,
		Subscriptions: int(s.hub.Stats().Subscriptions), Load: float64(conns) / float64(max(s.admission.maxConns, 1))}
}

// startCluster derives the public URL from the listener (unless
// cluster.public_url says it) and starts gossip.
func (s *Server) startCluster(addr net.Addr) error {
	host, port, _ := net.SplitHostPort(s.cfg.Listen)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host, _, _ = net.SplitHostPort(s.cfg.Cluster.Advertise)
		if host == "" {
			host, _ = os.Hostname()
		}
	}
	if tcp, ok := addr.(*net.TCPAddr); ok {
		port = strconv.Itoa(tcp.Port)
	}
	scheme := "ws://"
	if s.tls != nil {
		scheme = "wss://"
	}
	s.publicURL = scheme + net.JoinHostPort(host, port) + s.cfg.WebSocket.Path
	return s.cluster.Start()
}

// leaveCluster leaves gracefully, so the other members list this node as
// left rather than failed, before the clients are closed.
func (s *Server) leaveCluster() {
	if err := s.cluster.Leave(min(2*time.Second, s.cfg.ShutdownTimeout/2)); err != nil {
		s.log.Warn("leaving the cluster", "err", err)
	}
}

// memberView is the REST form of a cluster member.
type memberView struct {
	Name          string    `json:"name"`
	Address       string    `json:"address,omitempty"`
	State         string    `json:"state"`
	Draining      bool      `json:"draining"`
	NodeState     string    `json:"node_state,omitempty"`
	PublicURL     string    `json:"public_url,omitempty"`
	Version       string    `json:"version,omitempty"`
	Connections   int       `json:"connections"`
	Subscriptions int       `json:"subscriptions"`
	Load          float64   `json:"load"`
	Since         time.Time `json:"since,omitzero"`
	Heard         time.Time `json:"heard,omitzero"`
}

// handleCluster serves GET /v1/cluster: the members this node knows.
func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	members := s.cluster.Members()
	out := make([]memberView, 0, len(members))
	for _, m := range members {
		out = append(out, memberView{Name: m.Name, Address: m.Address, State: string(m.State), Draining: m.Draining(),
			NodeState: string(m.Meta.State), PublicURL: m.Meta.PublicURL, Version: m.Meta.Version,
			Connections: m.Meta.Connections, Subscriptions: m.Meta.Subscriptions, Load: m.Meta.Load,
			Since: m.Since.UTC(), Heard: m.Heard.UTC()})
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"self": s.cluster.Name(), "gossip": s.cfg.Cluster.Enabled(),
		"alone": s.cluster.Alone(), "members": out})
}

// clusterMetrics are the cluster's Prometheus collectors (cluster.Hooks).
type clusterMetrics struct {
	members *prometheus.GaugeVec
	events  *prometheus.CounterVec
	alone   prometheus.Gauge
}

var _ cluster.Hooks = (*clusterMetrics)(nil)

func newClusterMetrics() *clusterMetrics {
	return &clusterMetrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "edgerelay", Name: "cluster_members",
			Help: "Cluster members this node knows, itself included, by state: alive, suspect, dead, left (dead and left ones for cluster.forget_after)."}, []string{"state"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edgerelay", Name: "cluster_events_total",
			Help: "Membership events about other members: join, leave, failed, suspect, update."}, []string{"event"}),
		alone: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "edgerelay", Name: "cluster_alone",
			Help: "1 while gossip is on but no other member is alive: no seed reachable, or every other member gone."}),
	}
}

func (m *clusterMetrics) OnEvent(e cluster.Event) { m.events.WithLabelValues(string(e.Kind)).Inc() }

func (m *clusterMetrics) OnCounts(c cluster.Counts) {
	for state, n := range map[cluster.MemberState]int{cluster.Alive: c.Alive, cluster.Suspect: c.Suspect, cluster.Dead: c.Dead, cluster.Left: c.Left} {
		m.members.WithLabelValues(string(state)).Set(float64(n))
	}
	alone := 0.0
	if c.Alone {
		alone = 1
	}
	m.alone.Set(alone)
}
