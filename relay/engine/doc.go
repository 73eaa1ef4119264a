// Package engine is edgerelay's socket engine: WebSocket connections on
// epoll, with no goroutine and no buffer per idle connection. It frames,
// queues and writes what the relay sends, reads and reassembles what
// clients send, and speaks permessage-deflate; it knows nothing of the
// Centrifugo protocol.
package engine
