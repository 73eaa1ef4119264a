// Package sdkgo tests edgerelay with the stock Go SDK of the Centrifugo
// protocol, github.com/centrifugal/centrifuge-go (v0.12.1), in its JSON and
// Protobuf encodings, with and without Fossil deltas: connect with a JWT,
// the cached value on subscribe, live updates, recovery after a dropped
// socket, history, and the bet RPC into Kafka. Everything runs in-process:
// a kfake Kafka cluster, the relay (relay.New, Server.Serve) and a franz-go
// producer.
//
// It is a module of its own (tests/go/go.mod, with a replace directive to
// the repository root) so that the SDK and its dependencies stay out of
// the main module's go.mod: the relay does not depend on them. See
// README.md.
package sdkgo
