// Package engine is edgerelay's socket engine: WebSocket connections on
// epoll, with no goroutine and no buffer per idle connection. It frames,
// queues and writes what the relay sends, reads and reassembles what
// clients send, and speaks permessage-deflate; it knows nothing of the
// Centrifugo protocol (the relay's session does, as each Conn's Handler).
//
// # Model
//
// An Engine runs a few pollers (epoll instances, each with a goroutine)
// and one writer per core. An idle poller parks in the Go runtime's
// netpoller on its epoll descriptor rather than blocking a thread in
// epoll_wait, so it never holds a P that the writers, the Kafka client or
// timers are waiting for (poller_linux.go). The relay upgrades a socket itself (gobwas/ws),
// then makes it a Conn with NewConn and Conn.Start; from then on a poller
// reads it when it is readable, turns the bytes into WebSocket frames
// (wsread.go), answers pings, echoes a close, and hands each complete
// message, reassembled and inflated, to the Conn's Handler. Protocol
// violations close with the WebSocket codes (1002, 1007, 1009); a message
// of the other frame type (ConnConfig.Binary) closes with the code and
// reason the session gave (ConnConfig.WrongFrameType). Once a connection
// is closing, whoever closed it, its input is no longer handled: the
// poller leaves it in the kernel until the client hangs up or the close
// deadline shuts the socket (see Timeouts), and serves its other
// connections meanwhile.
//
// Input is bounded per client: a poller reads at most readBudget (256
// KiB) of one connection per turn, then serves the others before it comes
// back, so that a client sending without pause cannot stall its poller;
// past Config.MaxFramesPerSecond frames of any kind in a second the
// connection is closed with Config.Flood. A frame arriving in pieces is
// kept in one growing buffer (linear in its size however it is cut); close
// frames and frame lengths are checked as RFC 6455 asks (1002, 1007).
//
// Outbound, a Conn has a bounded queue of shared frames (fanout.Frame).
// The session queues replies and pings with Send and SendMessage; the hub
// delivers channel updates into a Sink, the Conn's fanout.Subscriber for
// one channel, which picks the form the client can use: a patch
// (FormPatch) only when the client will hold the publication it applies
// to, else the full payload (FormPlain, FormDeltaFull); compressed
// (FormDeflate) unless the message is past the client's window. The
// other form bits are the encoder's, carried through (the relay's
// Protobuf and channel compaction bits). A Sink with a filter
// (Sink.SetFilter, a client's tag filter) drops the updates it does not
// match before any of this, without taking a form. Queueing wakes the Conn's
// writer, which sends the whole queue with one writev, without blocking,
// serving connections with a reply or priority publication queued first;
// what the socket does not take waits for EPOLLOUT.
//
// Slow consumers never hold others back: past Config.SoftQueueBytes a
// channel's queued, unwritten update gives way to its newest (latest value
// wins; priority publications are never conflated away; a map entry's
// newest change gives way per key and goes last, in offset order); past
// Config.MaxQueueBytes, or with no write for Config.StallTimeout, the
// connection is closed with Config.Slow. When the node itself is behind
// (a connection waited Config.ConflateAfter for its writer), a connection
// holds one unwritten frame per channel and later updates only swap into
// its Sink, without the connection's lock; the writer puts the newest in
// the held frame's place as it writes (sink.go).
//
// Frames the relay builds use the helpers in frame.go (MaxHeader,
// FinishFrame, MessageFrame) and Compressor, which compresses each message
// on its own (no context takeover), so that one compressed frame serves
// every connection.
//
// # Timeouts
//
// The engine has no timer. Whoever sweeps the connections (the relay's
// heartbeat, which also sends protocol pings and enforces the protocol's
// pong and connect timeouts) calls Engine.Tick with the time, then
// Conn.CheckTimeouts for each connection: that enforces the engine's own
// deadlines, the stall timeout and the close deadline (Config.WriteTimeout
// for the close frame to go out, then 2s for the client to close).
// Engine.MaxWriteWait reports how far behind the writers are.
//
// # Concurrency
//
// Engine.Start, Stop, Tick and MaxWriteWait are for one goroutine (the
// owner's); everything else is safe for concurrent use. Handler methods
// run on the Conn's poller goroutine, one at a time, with no engine lock
// held; they must not block. Sink.Deliver runs on the hub's publishing
// goroutine under the channel's lock and does not block. Hooks run on any
// of these goroutines, often under Conn.mu.
//
// Lock order: the hub's channel lock (around Sink.Deliver and the
// Subscribe callback), then Conn.mu, then writer.mu. A poller's lock is
// never held with another. No engine lock is held while calling a
// Handler; Hooks are called with Conn.mu held and must not call back.
//
// Buffers: frames given to Send, and fanout.Frame bytes, are read until
// written and never modified; SendMessage copies its payload; the msg a
// Handler gets is the engine's and valid only during the call.
//
// This package imports fanout, gobwas/ws, klauspost/compress and x/sys,
// nothing of the relay, Kafka, Prometheus or memberlist
// (fanout/deps_test.go enforces it): metrics come through Hooks.
package engine
