package relay

import (
	"errors"
	"strings"
	"time"

	"github.com/edgerelay/edgerelay/relay/auth"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// Who may read what: user ids, personal channels and namespace rules, one
// rule for every surface. docs/bets.md and docs/protocol.md ("Access") are
// the contract.

// maxUserIDLength leaves room in a channel name for the namespace.
const maxUserIDLength = 128

// validUserID says whether a token's sub can be a user: 1 to
// maxUserIDLength of A-Z a-z 0-9 _ - . @ = + , — the channel-name
// characters without ':' and '#', so that "<namespace>:#<user>" names
// exactly one user (docs/bets.md).
func validUserID(u string) bool {
	if len(u) == 0 || len(u) > maxUserIDLength {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_-.@=+,", c) >= 0) {
			return false
		}
	}
	return true
}

// personalOwner returns the user a personal channel belongs to, the part
// after its '#' (Centrifugo's user boundary), or ok=false for a public
// channel. A channel with more than one '#' is personal to nobody: it
// names no valid user, so nobody may read it.
func personalOwner(channel string) (user string, ok bool) {
	i := strings.IndexByte(channel, '#')
	if i < 0 {
		return "", false
	}
	user = channel[i+1:]
	if !validUserID(user) {
		return "", true
	}
	return user, true
}

// Read rules of a namespace (channels.namespaces).
const (
	readAnyone        = "anyone"
	readAuthenticated = "authenticated"
	readOwner         = "owner"
	readToken         = "token"
)

// namespaceOf returns the configuration of channel's namespace; an
// unlisted namespace is readable by anyone and has no presence.
func (s *Server) namespaceOf(channel string) NamespaceConfig {
	ns := namespace(channel)
	for _, n := range s.cfg.Channels.Namespaces {
		if n.Name == ns {
			return n
		}
	}
	return NamespaceConfig{Name: ns, Read: readAnyone}
}

// readRule is the rule of channel's namespace: anyone when not listed.
func (s *Server) readRule(channel string) string { return s.namespaceOf(channel).Read }

// mayRead is the one access rule for every surface (WebSocket subscribe
// and history, REST, server-side subscriptions): may user ("" anonymous)
// read channel? granted says a subscription token (or the connection
// token's channels claim) names the channel for this user. A personal
// channel is its owner's, whatever the namespace says; otherwise the
// namespace's rule holds. It returns the error to answer with (103).
func (s *Server) mayRead(user, channel string, granted bool) *protocol.Error {
	owner, personal := personalOwner(channel)
	if personal {
		if user == "" || owner == "" || owner != user {
			return protocol.ErrPermissionDenied.WithMessage("a personal channel is readable only by its user")
		}
		return nil
	}
	switch s.readRule(channel) {
	case readAuthenticated:
		if user == "" && !granted {
			return protocol.ErrPermissionDenied.WithMessage("this namespace is for authenticated connections")
		}
	case readOwner:
		return protocol.ErrPermissionDenied.WithMessage("this namespace holds personal channels only (<namespace>:#<user>)")
	case readToken:
		if !granted {
			return protocol.ErrPermissionDenied.WithMessage("this namespace needs a subscription token for the channel")
		}
	}
	return nil
}

// verifySubToken checks a subscription token for user's subscribe (or
// sub_refresh) to channel and returns its exp, or the error to answer
// with: 109 when expired (the SDKs get a new one), 103 when it does not
// verify or names another channel or user.
func (s *Server) verifySubToken(token, user, channel string) (time.Time, *protocol.Error) {
	if s.verifier == nil {
		return time.Time{}, protocol.ErrPermissionDenied.WithMessage("subscription tokens are not checked on this relay (no auth keys)")
	}
	claims, err := s.verifier.Verify(token, time.Now())
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		s.metrics.authFailures.WithLabelValues("sub_expired").Inc()
		return time.Time{}, protocol.ErrTokenExpired
	case err != nil, claims.Channel != channel, claims.Subject != user:
		s.metrics.authFailures.WithLabelValues("sub_invalid").Inc()
		return time.Time{}, protocol.ErrPermissionDenied.WithMessage("the subscription token does not verify for this user and channel")
	}
	return claims.ExpiresAt, nil
}
