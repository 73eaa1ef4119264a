package relay

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/bets"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// This file is the session side of identity and bets: the connect token,
// personal channels and the "bet" RPC. docs/bets.md is the contract.

// authenticate checks a connect token and returns the user ("" for an
// anonymous connection), or the reply error or disconnect to answer with.
func (s *Server) authenticate(token string) (user string, perr *protocol.Error, d *protocol.Disconnect) {
	if s.verifier == nil {
		return "", nil, nil // tokens are not checked: everyone is anonymous
	}
	if token == "" {
		if s.cfg.Auth.Anonymous {
			return "", nil, nil
		}
		s.metrics.authFailures.WithLabelValues("no_token").Inc()
		return "", nil, &protocol.DisconnectInvalidToken
	}
	claims, err := s.verifier.Verify(token, time.Now())
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		// The SDKs answer 109 by fetching a new token and reconnecting.
		s.metrics.authFailures.WithLabelValues("expired").Inc()
		return "", protocol.ErrTokenExpired, nil
	case err != nil:
		s.log.Debug("invalid connect token", "err", err)
		s.metrics.authFailures.WithLabelValues("invalid").Inc()
		return "", nil, &protocol.DisconnectInvalidToken
	}
	return claims.Subject, nil, nil
}

// personalOwner returns the user a personal channel belongs to: the part
// after the last '#' (Centrifugo's user boundary), or ok=false for a
// public channel.
func personalOwner(channel string) (user string, ok bool) {
	i := strings.LastIndexByte(channel, '#')
	if i < 0 {
		return "", false
	}
	return channel[i+1:], true
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
	if c.betsInFlight.Add(1) > int32(s.cfg.Bets.MaxInFlightPerConnection) {
		c.betsInFlight.Add(-1)
		reject("connection_in_flight", bets.ErrTooManyBets)
		return
	}
	b := &bets.Bet{Request: req, User: c.user, ReceivedAt: time.Now(), Latest: s.hub.Last(req.Channel)}
	if i := c.findSub(req.Channel); i >= 0 {
		b.Seen = c.subs[i].Sent()
	}
	s.desk.Place(b, func(r bets.Result, e *protocol.Error) {
		c.betsInFlight.Add(-1)
		reply := &protocol.Reply{ID: id, Error: e}
		if e == nil {
			data, _ := json.Marshal(r)
			reply.RPC = &protocol.RPCResult{Data: data}
		}
		c.sendNow(c.codec.AppendReply(nil, reply))
	})
}

// betHooks feeds the desk's events to the metrics.
type betHooks struct{ m *metrics }

func (h betHooks) OnBet(reason string, ack time.Duration) {
	if reason == "" {
		h.m.bets.WithLabelValues("accepted").Inc()
		h.m.betAck.Observe(ack.Seconds())
		return
	}
	h.m.bets.WithLabelValues(reason).Inc()
}

func (h betHooks) OnInFlight(d int) { h.m.betsInFlight.Add(float64(d)) }

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
