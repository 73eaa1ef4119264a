// Package bench is edgebench, the load harness that drives an edgerelay
// deployment through its public surfaces only: Kafka (a feed with send
// timestamps and sequence numbers), WebSocket (a swarm of protocol clients)
// and the relay's /metrics (memory and CPU).
//
// # Model
//
// A run has one parent and several swarm worker processes. The parent
// starts the workers (each opens its share of the connections from its own
// 127.0.0.x source address, so neither the per-process open-file cap nor the
// ephemeral port range is the limit), waits until every client is
// subscribed, samples the relay's memory, then produces the feed at a fixed
// rate for a fixed time and merges what the workers measured. A cluster
// run names several relays: connections go round-robin over them per
// connection, run-wide, every relay is sampled alike, and the report has
// a part per relay besides the totals (FanoutConfig.URLs).
//
// Latency is measured from the time a record was meant to be sent (its
// place in the fixed-rate schedule, written into the payload) to the time a
// client read it, so a stalled producer shows up as latency instead of
// hiding it (no coordinated omission). Parent and workers share the
// machine's clock.
//
// Clients speak the JSON or the Protobuf encoding of the Centrifugo
// protocol (protobuf.go holds the client side of the latter, written here
// on protowire: package bench talks to the relay only over the wire and
// imports it in tests alone), with the same checks in both.
//
// The ceiling (RunCeiling, edgebench ceiling) is the other side: a bare
// writer those clients can subscribe to, the bound the relay's CPU per
// delivery is compared against.
//
// # Concurrency
//
// A worker runs one goroutine per client connection (the load generator
// may spend memory; the relay may not). Histograms are per connection and
// merged at the end, so the read path takes no shared lock. The ceiling
// runs one goroutine per connection for the upgrade and the client's
// messages, and writes every update from the goroutine polling Kafka;
// one mutex covers the subscriber lists and every write to a subscribed
// socket.
package bench
