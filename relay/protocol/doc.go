// Package protocol encodes and decodes the Centrifugo client protocol v2
// as edgerelay speaks it, in both its encodings: JSON and Protobuf (see
// docs/protocol.md, which is the contract).
//
// # Model
//
// The session (package relay) works with Commands and Replies, the
// encoding-free form of the protocol; a Codec turns them into the bytes of
// one WebSocket message and back. JSON travels in text frames: commands
// and replies are JSON objects separated by '\n'. Protobuf travels in
// binary frames: each Command or Reply is preceded by its length as a
// varint (json.go and protobuf.go say the details). The client picks the
// encoding at the handshake: the "centrifuge-protobuf" WebSocket
// subprotocol or "?format=protobuf" selects Protobuf; the default is JSON.
//
// Commands are rare next to pushes: JSON commands are decoded with
// encoding/json, Protobuf commands by a small hand-written decoder on
// protowire. The exception is a bet storm, an rpc per bet: the rpc
// command as the SDKs send it, and its reply, take a scan without
// reflection (jsonscan.go) that leaves anything else to encoding/json
// and gives what it would. Publication pushes are the hot path: AppendPublicationPush
// and AppendDeltaPush write them in one pass, with no reflection and no
// allocation beyond growing the destination, once per update and form;
// the same bytes then go to every subscriber.
//
// # Concurrency
//
// Everything here is pure: functions and stateless values without shared
// state, safe for concurrent use.
package protocol
