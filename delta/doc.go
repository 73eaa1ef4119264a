// Package delta holds edgerelay's payload compression: Fossil deltas
// (the format the Centrifugo SDKs decode for delta:"fossil" subscriptions).
//
// # Model
//
// Fossil encodes a target as copies of ranges of a source plus literal
// inserts, prefixed by the target length and ending with a checksum of the
// target. Encode builds a patch once per channel update (source: the
// previous publication, target: the new one); Decode applies one. Both are
// pure functions of their arguments.
//
// # Concurrency
//
// Everything here is safe for concurrent use. Encode and Decode never keep
// or modify their inputs; the returned slices belong to the caller (they
// are appended to dst).
//
// This package imports only the standard library (a test in package fanout
// enforces the rule).
package delta
