package protocol

import "fmt"

// Error is a protocol error sent to the client in a reply's "error" field.
// It implements error so handlers can return it; the code is what the client
// sees.
type Error struct {
	Code      uint32 `json:"code"`
	Message   string `json:"message"`
	Temporary bool   `json:"temporary,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("protocol error %d: %s", e.Code, e.Message) }

// WithMessage returns a copy of e whose message has detail appended, so the
// client learns what exactly was wrong while the code stays the same.
func (e *Error) WithMessage(detail string) *Error {
	c := *e
	c.Message = e.Message + ": " + detail
	return &c
}

// Reply error codes, as the Centrifugo SDKs know them.
var (
	ErrInternal          = &Error{Code: 100, Message: "internal server error", Temporary: true}
	ErrUnauthorized      = &Error{Code: 101, Message: "unauthorized"}
	ErrUnknownChannel    = &Error{Code: 102, Message: "unknown channel"}
	ErrPermissionDenied  = &Error{Code: 103, Message: "permission denied"}
	ErrMethodNotFound    = &Error{Code: 104, Message: "method not found"}
	ErrAlreadySubscribed = &Error{Code: 105, Message: "already subscribed"}
	ErrLimitExceeded     = &Error{Code: 106, Message: "limit exceeded"}
	ErrBadRequest        = &Error{Code: 107, Message: "bad request"}
	ErrNotAvailable      = &Error{Code: 108, Message: "not available"}
	ErrTokenExpired      = &Error{Code: 109, Message: "token expired"}
	ErrExpired           = &Error{Code: 110, Message: "expired"}
	ErrTooManyRequests   = &Error{Code: 111, Message: "too many requests", Temporary: true}
	ErrUnrecoverable     = &Error{Code: 112, Message: "unrecoverable position"}
)

// Disconnect is why the server closes a connection. It travels as the
// WebSocket close frame's status code and reason. Codes 3000-3499 tell the
// SDKs to reconnect; 3500-3999 are terminal (the SDK stays disconnected).
type Disconnect struct {
	Code   uint16
	Reason string
}

func (d Disconnect) String() string { return fmt.Sprintf("%d %s", d.Code, d.Reason) }

// Reconnect reports whether a client SDK reconnects after d.
func (d Disconnect) Reconnect() bool {
	return d.Code < 3500 || (d.Code >= 4000 && d.Code < 4500)
}

// Disconnect reasons edgerelay uses. WebSocket-level closes (1002, 1003,
// 1007, 1009) are not listed here: the connection layer sends them.
var (
	DisconnectShutdown      = Disconnect{3001, "shutdown"}
	DisconnectServerError   = Disconnect{3004, "internal server error"}
	DisconnectExpired       = Disconnect{3005, "connection expired"}
	DisconnectSubExpired    = Disconnect{3006, "subscription expired"}
	DisconnectSlow          = Disconnect{3008, "slow"}
	DisconnectWriteError    = Disconnect{3009, "write error"}
	DisconnectNoPong        = Disconnect{3012, "no pong"}
	DisconnectTooManyReqs   = Disconnect{3013, "too many requests"}
	DisconnectInvalidToken  = Disconnect{3500, "invalid token"}
	DisconnectBadRequest    = Disconnect{3501, "bad request"}
	DisconnectStale         = Disconnect{3502, "stale"}
	DisconnectChannelLimit  = Disconnect{3505, "channel limit"}
	DisconnectInappropriate = Disconnect{3506, "inappropriate protocol"}
	DisconnectTooManyErrors = Disconnect{3509, "too many errors"}
)
