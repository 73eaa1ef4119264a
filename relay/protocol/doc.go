// Package protocol encodes and decodes the Centrifugo client protocol v2 in
// its JSON form, as edgerelay speaks it (see docs/protocol.md, which is the
// contract).
//
// A WebSocket text frame from a client holds one or more commands, each a
// JSON object, separated by '\n'. An empty object ("{}") is the client's
// pong. Replies to several commands may share one frame, again separated by
// '\n'. Pushes (publications, unsubscribes) are frames of their own.
//
// Commands are rare next to pushes, so they are decoded with encoding/json.
// Publication pushes are the hot path: AppendPublicationPush writes them with
// no reflection and no allocation beyond growing the destination.
//
// Everything here is pure: functions and types without shared state, safe
// for concurrent use.
package protocol
