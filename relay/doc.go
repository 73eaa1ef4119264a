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
// Each connection has a reader goroutine, which owns its protocol session,
// and a writer goroutine, which drains a bounded byte queue and writes all
// queued frames in one writev. The hub delivers into that queue under the
// channel's lock, without blocking: a connection whose queue would pass
// websocket.max_queue_bytes is disconnected as slow (3008, reconnect). One
// heartbeat goroutine serves pings and timeouts for all connections.
// Server methods are safe for concurrent use.
//
// Lock order: Server.mu (the connection set), then conn.mu. The hub's locks
// are never taken while either is held, except that conn.mu is taken inside
// hub callbacks (Deliver, the Subscribe callback).
package relay
