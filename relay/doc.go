// Package relay is the edgerelay server: configuration, wiring, the
// WebSocket endpoint speaking the Centrifugo client protocol, the HTTP
// surface (/metrics, /healthz, /readyz, /v1/channels, /v1/maps, /v1/cluster,
// /v1/drain) and the graceful drain (drain.go). Kafka ingest lives in relay/ingest, the protocol encoding in
// relay/protocol, the socket engine (epoll, queues, writers, WebSocket
// framing) in relay/engine, channels and fan-out in package fanout.
//
// # Model
//
// One Server is one relay node. It consumes every partition of the ingest
// topics (relay/ingest) into a fanout.Hub. A client connects over
// WebSocket, sends "connect", then subscribes to channels; each subscribe
// reply carries the channel's cached latest publication, and every later
// publication of the channel is pushed as one shared, pre-encoded frame.
// docs/protocol.md is the contract with clients.
//
// With cluster.bind set the node is also a member of a gossip cluster
// (package cluster; the wiring is cluster.go): it gossips its state, URL
// and load (draining, from the start of a drain), lists the members at
// /v1/cluster, and leaves once the drain has closed its clients. Nothing
// on the data path depends on it.
//
// # Concurrency
//
// No connection has a goroutine or a buffer of its own: the socket engine
// (relay/engine) watches all sockets with a few epoll pollers and writes
// with one writer per core; its doc says how queues, conflation and
// slow-consumer closes work. The relay sits on top: accept.go upgrades a
// socket (gobwas/ws, choosing the encoding and negotiating
// permessage-deflate) and hands it to the engine as an engine.Conn whose
// Handler is a session (session.go, bet.go): the protocol session runs on
// the connection's poller goroutine, one message at a time, and answers
// through the Conn (Send, SendMessage, Close), never touching the socket
// or the queue. A subscription is an engine.Sink, created by the Conn and
// handed to the hub, which delivers into the connection's bounded queue
// under the channel's lock, without blocking. The relay's encoder
// (frame.go) builds each form of an update once, with the engine's frame
// helpers and form bits. A subscription with a client's tag filter
// (tagfilter.go, relay/tagfilter) has it on its Sink, which only decides
// whether the subscriber takes an update's frames. The relay's metrics
// are the engine's Hooks.
//
// One heartbeat goroutine (server.go) serves all connections: it sends
// protocol pings and enforces the pong and connect timeouts itself, and
// has the engine enforce its stall and close timeouts
// (engine.Conn.CheckTimeouts). Server methods are safe for concurrent use.
//
// Lock order: Server.mu (the connection set), then the engine's locks
// (engine.Conn's, then its writer's). The hub's channel lock is held while
// the engine takes a connection's lock in hub callbacks (Sink.Deliver, the
// Subscribe callback); neither Server.mu nor an engine lock is held while
// calling into the hub.
package relay
