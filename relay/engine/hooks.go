package engine

import (
	"time"

	"github.com/edgerelay/edgerelay/fanout"
)

// Hooks observe the engine, for metrics; Config.Hooks injects them. The
// engine calls them from its pollers and writers and from the goroutines
// that call Conn and Sink methods (the hub's publishers among them), often
// with a connection's lock held: they must be safe for concurrent use,
// must not block and must not call back into the engine.
type Hooks interface {
	// OnClose: the engine queued a close frame with code (or found the
	// connection already dead); cause says who chose to close.
	OnClose(code uint16, cause CloseCause)
	// OnQueueConflated: n queued updates gave way to a newer one of their
	// channel, because the client is slow (behind false) or the node is
	// behind (true: the sink's Counter counts them as well).
	OnQueueConflated(n int, behind bool)
	// OnWriteWait: a connection waited d on a writer's run list.
	OnWriteWait(d time.Duration)
	// OnWrite: one write of n bytes at now finished frames, oldest first.
	// frames is the engine's: read it during the call only.
	OnWrite(n int, frames []*fanout.Frame, now time.Time)
}

// CloseCause says why the engine closes a connection.
type CloseCause uint8

const (
	// CloseRequested: Conn.Close, or a WebSocket protocol violation.
	CloseRequested CloseCause = iota
	// CloseEcho: the answer to the client's close frame, with its code.
	CloseEcho
	// CloseSlow: the client did not read (Config.MaxQueueBytes or
	// Config.StallTimeout); the code is Config.Slow's.
	CloseSlow
)

// Counter counts one sink's updates conflated because the node was
// behind; a prometheus.Counter is one. Add must be safe for concurrent
// use and must not block.
type Counter interface{ Add(float64) }

type nopHooks struct{}

func (nopHooks) OnClose(uint16, CloseCause)              {}
func (nopHooks) OnQueueConflated(int, bool)              {}
func (nopHooks) OnWriteWait(time.Duration)               {}
func (nopHooks) OnWrite(int, []*fanout.Frame, time.Time) {}

var _ Hooks = nopHooks{}
