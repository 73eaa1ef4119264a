// Package relay is the edgerelay server: configuration, wiring, the
// WebSocket endpoint speaking the Centrifugo client protocol, the HTTP
// surface (/metrics, /healthz, /readyz, /v1/channels) and graceful
// shutdown. Kafka ingest lives in relay/ingest, the protocol encoding in
// relay/protocol, channels and fan-out in package fanout.
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
// # Concurrency
//
// No connection has a goroutine or a buffer of its own (engine_linux.go).
// A few pollers watch all sockets with epoll and handle input, including
// the protocol session, on their own goroutine; one writer per core sends
// each connection's queued frames with a single writev, serving connections
// with a reply or priority publication queued first. The hub delivers
// into a connection's bounded queue under the channel's lock, without
// blocking; past websocket.soft_queue_bytes updates are conflated, past
// websocket.max_queue_bytes the client is closed as slow (3008). When the
// node is behind, a connection holds one unwritten frame per channel and
// later updates only swap into its subscription, without conn.mu; the
// writer puts the newest in the held frame's place as it writes (conn.go,
// subscription). One
// heartbeat goroutine serves pings and timeouts for all connections.
// Server methods are safe for concurrent use.
//
// Lock order: Server.mu (the connection set), then conn.mu, then writer.mu.
// The hub's channel lock is held while conn.mu is taken in hub callbacks
// (Deliver, the Subscribe callback); neither Server.mu nor conn.mu is held
// while calling into the hub.
package relay
