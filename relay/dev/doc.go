// Package dev runs edgerelay with everything it needs in one process, for
// trying it out and for tests: an embedded Kafka broker (franz-go's kfake,
// real protocol on a real port, optionally persisted to a data directory),
// a simulator producing a realistic odds and scores feed into it, and the
// relay itself with a live odds board at "/".
//
// Nothing here is meant for production: the broker keeps its data in
// memory unless given a data directory, and has no replication.
//
// Concurrency: Simulator.Run produces from one goroutine; Run blocks until
// its context is done. All exported functions are safe to call from any
// goroutine.
package dev
