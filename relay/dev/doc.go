// Package dev runs edgerelay with everything it needs in one process, for
// trying it out and for tests: an embedded Kafka broker (franz-go's kfake,
// real protocol on a real port, optionally persisted to a data directory),
// a simulator producing a realistic odds and scores feed into it, a
// simulated bookmaker that answers bets on the results topic, demo tokens
// at /v1/dev/token, and the relay itself with a live odds board at "/"
// where a click places a bet. The board is a client of the npm centrifuge
// SDK (its browser build, vendored as centrifuge.js and served at
// /centrifuge.js): one map subscription per match (dev mode's map rule
// DevMapRule), so the markets the simulator opens and closes in play
// (SimConfig.PopUpEvery) come and go on the page.
//
// Nothing here is meant for production: the broker keeps its data in
// memory unless given a data directory, and has no replication.
//
// Concurrency: Simulator.Run produces from one goroutine; Bookmaker.Run
// consumes on one goroutine and settles on a second one it starts; Run blocks until
// its context is done. All exported functions are safe to call from any
// goroutine.
package dev
