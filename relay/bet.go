package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/bets"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// This file is the session side of identity and bets: the connect token,
// personal channels and the "bet" RPC. docs/bets.md is the contract.

// identity is who a connection is, from its token.
type identity struct {
	user    string    // "" is anonymous
	expires time.Time // zero: never (tokens are not checked)
	// channels: the connection token's channels claim, server-side
	// subscriptions.
	channels []string
}

// authenticate checks a connect (or refresh) token and returns the
// identity, or the reply error or disconnect to answer with.
func (s *Server) authenticate(token string) (identity, *protocol.Error, *protocol.Disconnect) {
	if s.verifier == nil {
		return identity{}, nil, nil // tokens are not checked: everyone is anonymous
	}
	if token == "" {
		if s.cfg.Auth.Anonymous {
			return identity{}, nil, nil
		}
		s.metrics.authFailures.WithLabelValues("no_token").Inc()
		return identity{}, nil, &protocol.DisconnectInvalidToken
	}
	claims, err := s.verifier.Verify(token, time.Now())
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		// The SDKs answer 109 by fetching a new token and reconnecting.
		s.metrics.authFailures.WithLabelValues("expired").Inc()
		return identity{}, protocol.ErrTokenExpired, nil
	case err != nil:
		s.log.Debug("invalid connect token", "err", err)
		s.metrics.authFailures.WithLabelValues("invalid").Inc()
		return identity{}, nil, &protocol.DisconnectInvalidToken
	case claims.Channel != "":
		// A subscription token is not a connection token.
		s.metrics.authFailures.WithLabelValues("invalid").Inc()
		return identity{}, nil, &protocol.DisconnectInvalidToken
	case !validUserID(claims.Subject):
		// A user its personal channel could not name unambiguously.
		s.log.Debug("connect token with an unusable sub", "sub", claims.Subject)
		s.metrics.authFailures.WithLabelValues("bad_sub").Inc()
		return identity{}, nil, &protocol.DisconnectInvalidToken
	}
	return identity{user: claims.Subject, expires: claims.ExpiresAt, channels: claims.Channels}, nil, nil
}

// handleBet runs rpc "bet". Validation happens here, on the poller; the
// answer comes from the desk, on a Kafka client goroutine, and is sent
// with sendNow.
func (c *session) handleBet(id uint32, data json.RawMessage) {
	s := c.srv
	if s.desk == nil {
		c.replyError(id, protocol.ErrMethodNotFound.WithMessage("bets are not enabled on this relay"))
		return
	}
	s.metrics.betsReceived.Inc()
	reject := func(reason string, e *protocol.Error) {
		s.metrics.bets.WithLabelValues(reason).Inc()
		c.replyError(id, e)
	}
	if c.user == "" {
		reject("unauthorized", bets.ErrUnauthorized)
		return
	}
	req, err := bets.Parse(data, int(s.cfg.Bets.MaxBytes), s.cfg.Channels.MaxNameLength)
	if err != nil {
		reject("invalid", bets.ErrInvalid.WithMessage(err.Error()))
		return
	}
	if !s.cfg.Bets.IsMarket(req.Channel) {
		// Not even whether another channel (a user's personal one) has a
		// cached value may leak through the answer.
		reject("invalid", bets.ErrInvalid.WithMessage(fmt.Sprintf("channel: not a market channel (bets.market_prefixes: %s)", strings.Join(s.cfg.Bets.MarketPrefixes, ", "))))
		return
	}
	if c.betsInFlight.Add(1) > int32(s.cfg.Bets.MaxInFlightPerConnection) {
		c.betsInFlight.Add(-1)
		reject("connection_in_flight", bets.ErrTooManyBets)
		return
	}
	b := &bets.Bet{Request: req, User: c.user, ReceivedAt: time.Now(), ConnectedAt: time.Unix(0, c.born), Latest: s.hub.Last(req.Channel)}
	if i := c.findSub(req.Channel); i >= 0 {
		b.Seen = c.subs[i].Sent()
	}
	s.desk.Place(b, func(r bets.Result, e *protocol.Error) {
		c.betsInFlight.Add(-1)
		reply := &protocol.Reply{ID: id, Error: e}
		if e == nil {
			reply.RPC = &protocol.RPCResult{Data: r.AppendJSON(make([]byte, 0, 128))}
		}
		s.metrics.betReply.Observe(time.Since(b.ReceivedAt).Seconds())
		c.sendNow(c.codec.AppendReply(nil, reply))
	})
}

// betHooks feeds the desk's events to the metrics and the log.
type betHooks struct {
	m   *metrics
	log *slog.Logger
	// accepted is m.bets' accepted child, looked up once: every accepted
	// bet counts there.
	accepted prometheus.Counter
	// lastReaderLog rate-limits reader errors to one line per 10s.
	lastReaderLog atomic.Int64
}

func (h *betHooks) OnBet(reason string, ack time.Duration) {
	if reason == "" {
		h.accepted.Inc()
		h.m.betAck.Observe(ack.Seconds())
		return
	}
	h.m.bets.WithLabelValues(reason).Inc()
}

func (h *betHooks) OnInFlight(d int) { h.m.betsInFlight.Add(float64(d)) }

func (h *betHooks) OnReaderError(err error) {
	now := time.Now().UnixNano()
	if last := h.lastReaderLog.Load(); now-last > int64(10*time.Second) && h.lastReaderLog.CompareAndSwap(last, now) {
		h.log.Warn("bets dedup reader: reading the bets topic back failed; retrying (retries across nodes may produce twice meanwhile)", "err", err)
	}
}

// registerDeskMetrics registers the gauges and counters read from the desk.
func registerDeskMetrics(reg *prometheus.Registry, desk *bets.Desk) {
	f := func(name, help string, v func(bets.DedupStats) int64) prometheus.Collector {
		opts := prometheus.Opts{Namespace: "edgerelay", Name: name, Help: help}
		get := func() float64 { return float64(v(desk.DedupStats())) }
		if strings.HasSuffix(name, "_total") {
			return prometheus.NewCounterFunc(prometheus.CounterOpts(opts), get)
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts), get)
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "edgerelay", Name: "bets_remembered",
			Help: "Bets the retry memory holds: answers kept for retries (bounded by bets.dedup_max_entries) and bets waiting for Kafka (bets.max_in_flight)."}, func() float64 { return float64(desk.Remembered()) }),
		f("bets_dedup_records_total", "Records of the bets topic read back by the dedup reader.", func(s bets.DedupStats) int64 { return s.Read }),
		f("bets_dedup_lag_records", "Records of the bets topic the dedup reader is behind the high watermarks, over all partitions.", func(s bets.DedupStats) int64 { return s.Lag }),
		f("bets_dedup_waits_total", "Bets that waited for the dedup reader to catch up (the first new bet of a connection) and it did.", func(s bets.DedupStats) int64 { return s.CaughtUp }),
		f("bets_dedup_wait_timeouts_total", "Bets that waited for the dedup reader past bets.dedup_sync_timeout and were produced anyway.", func(s bets.DedupStats) int64 { return s.TimedOut }),
	)
}

// newVerifier builds the token verifier from the auth section.
func newVerifier(a AuthConfig) (*auth.Verifier, error) {
	cfg := auth.DefaultConfig()
	for _, s := range a.HMACSecrets {
		cfg.HMACSecrets = append(cfg.HMACSecrets, []byte(s))
	}
	cfg.PublicKeyFiles = a.PublicKeyFiles
	cfg.JWKSFile = a.JWKSFile
	cfg.Issuer = a.Issuer
	cfg.Audience = a.Audience
	cfg.Leeway = a.Leeway
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return auth.NewVerifier(cfg)
}
