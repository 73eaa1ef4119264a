package relay

import (
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgerelay/edgerelay/relay/protocol"
)

// The graceful drain (cluster.drain, docs/operations.md "Drain timing"),
// started by SIGTERM (Serve's ctx) or POST /v1/drain, one path for both:
//
//  1. announce: /readyz answers 503 "draining", the gossiped state is
//     draining; upgrades are still accepted for cluster.drain.lb_delay,
//     while the load balancer notices;
//  2. close: upgrades are answered 503, and every drainTick a wave of
//     clients, picked at random, gets close 3001 "shutdown" (the SDKs
//     reconnect elsewhere and recover), left / waves left of them (see
//     waves), so that the closes are even over cluster.drain.period;
//  3. stop: Serve leaves the cluster, stops HTTP and ingest, and returns.
//
// A connection with a bet awaiting Kafka's answer is passed over by the
// waves while it has one, so that the answer reaches it; it is closed when
// its bets are answered (bets.timeout bounds that) or, at the latest, a
// second before shutdown_timeout ends. A bet sent in the instant between
// that check and the close frame, or still unanswered then, loses its reply
// (the bet itself is in Kafka if Kafka took it): the SDK fails the call on
// the disconnect and the client retries with the same bet_id elsewhere.

// drainTick is the interval between waves.
const drainTick = 100 * time.Millisecond

// waves paces the drain's closes, one wave every tick until the end of
// the period. A wave's share is remaining / waves left, carried as credit
// from wave to wave and closed in whole connections, so that fewer
// connections than waves are spaced out over the period (the credit starts
// at half a connection: each close sits mid-slot); a late tick spreads
// what it missed over the waves left rather than closing it in a burst;
// and the last wave, within a tick of the end, closes every one left.
// The zero value is not ready: use newWaves. One goroutine.
type waves struct {
	tick   time.Duration
	end    time.Time
	credit float64
}

func newWaves(end time.Time, tick time.Duration) *waves {
	return &waves{tick: tick, end: end, credit: 0.5}
}

// size is how many of remaining connections to close at now.
func (w *waves) size(remaining int, now time.Time) int {
	left := w.end.Sub(now)
	if remaining <= 0 || left <= w.tick {
		return max(remaining, 0)
	}
	wavesLeft := int((left + w.tick - 1) / w.tick) // this one included
	w.credit += float64(remaining) / float64(wavesLeft)
	n := min(int(w.credit), remaining)
	w.credit -= float64(n)
	return n
}

// drainMetrics are the drain's Prometheus collectors.
type drainMetrics struct {
	draining    prometheus.Gauge
	disconnects prometheus.Counter
}

func newDrainMetrics(reg prometheus.Registerer) *drainMetrics {
	m := &drainMetrics{
		draining: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "edgerelay", Name: "draining",
			Help: "1 from the start of a graceful drain (SIGTERM or POST /v1/drain) until the process stops."}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "edgerelay", Name: "drain_disconnects_total",
			Help: "Clients closed with 3001 shutdown by the drain's waves."}),
	}
	reg.MustRegister(m.draining, m.disconnects)
	return m
}

// requestDrain starts the drain from POST /v1/drain; false if one runs
// already. Any goroutine.
func (s *Server) requestDrain() bool {
	started := false
	s.drainOnce.Do(func() {
		started = !s.draining.Load()
		close(s.drainRequested)
	})
	return started
}

// drain runs steps 1 and 2 (see above) on Serve's goroutine; accepting
// says whether the listener still takes connections (worth an lb_delay).
// deadline is the end of shutdown_timeout.
func (s *Server) drain(accepting bool, deadline time.Time) {
	d := s.cfg.Cluster.Drain
	s.draining.Store(true)
	s.drainMetrics.draining.Set(1)
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	s.log.Info("draining: /readyz answers 503, the cluster is told", "connections", n, "lb_delay", d.LBDelay, "period", d.Period)
	if accepting && d.LBDelay > 0 {
		time.Sleep(d.LBDelay)
	}
	s.shuttingDown.Store(true) // upgrades refused from here on
	start := time.Now()
	end, hardEnd := start.Add(d.Period), deadline.Add(-time.Second)
	if hardEnd.Before(end) {
		hardEnd = end
	}
	closed := s.closeInWaves(end, hardEnd)
	s.log.Info("drain: every client told to reconnect elsewhere", "closed", closed, "took", time.Since(start).Round(time.Millisecond))
}

// closeInWaves closes the clients in waves until end (see above), the
// ones with bets in flight at the latest at hardEnd, and returns how
// many it closed. Connections registered meanwhile are closed too.
func (s *Server) closeInWaves(end, hardEnd time.Time) int {
	t := time.NewTicker(drainTick)
	defer t.Stop()
	pace := newWaves(end, drainTick)
	told := map[*session]struct{}{}
	var idle, betting []*session
	for {
		idle, betting = idle[:0], betting[:0]
		s.mu.Lock()
		for c := range s.conns {
			if _, ok := told[c]; ok {
				continue
			}
			if c.betsInFlight.Load() > 0 {
				betting = append(betting, c)
			} else {
				idle = append(idle, c)
			}
		}
		s.mu.Unlock()
		if len(idle)+len(betting) == 0 {
			return len(told)
		}
		now := time.Now()
		n := pace.size(len(idle)+len(betting), now)
		rand.Shuffle(len(idle), func(i, j int) { idle[i], idle[j] = idle[j], idle[i] })
		wave := idle[:min(n, len(idle))]
		if !now.Before(hardEnd) {
			wave = append(idle, betting...)
		}
		for _, c := range wave {
			told[c] = struct{}{}
			c.disconnect(protocol.DisconnectShutdown)
		}
		s.drainMetrics.disconnects.Add(float64(len(wave)))
		clear(idle)
		clear(betting)
		<-t.C
	}
}

// handleDrain serves POST /v1/drain (operator): the drain SIGTERM starts,
// after which the process exits 0. 202 at once; the drain goes on after
// the reply.
func (s *Server) handleDrain(w http.ResponseWriter, r *http.Request) {
	if !s.operator(w, r) {
		return
	}
	status := "draining"
	if s.requestDrain() {
		s.log.Warn("drain requested by an operator (POST /v1/drain)", "remote", r.RemoteAddr)
	} else {
		status = "already draining"
	}
	d := s.cfg.Cluster.Drain
	writeJSON(w, http.StatusAccepted, map[string]string{"status": status, "lb_delay": d.LBDelay.String(), "period": d.Period.String()})
}
