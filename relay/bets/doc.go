// Package bets takes bets from connected users and writes them to Kafka,
// answering only once Kafka has them.
//
// # Model
//
// A Desk is a node's single bet producer: one franz-go client, idempotent,
// acks=all, records keyed by user (or market) so one user's bets stay in
// order on one partition. Place validates a bet's shape (Parse), checks the
// market's cached state (suspended markets are refused before Kafka), the
// user's rate, the connection's and node's bets in flight, and then
// produces. Its callback runs once, with the Kafka position of the record
// or an Error saying why not and whether a retry may succeed.
//
// A bet is identified by (user, bet id). A repeat of a bet id from the same
// user within Config.DedupWindow gets the original answer without a second
// record: while the first is in flight the repeat waits for it; once it is
// acknowledged the repeat gets the same position at once. A failed bet is
// forgotten, so its retry produces again. The window is per node; the
// record's idempotency-key header lets consumers deduplicate across nodes.
//
// # Concurrency
//
// Desk methods are safe for concurrent use. Place never blocks: Kafka's
// answer comes on a franz-go goroutine, which calls the callback; the
// callback must not block either. Memory is bounded by Config.MaxInFlight
// (records waiting for Kafka) and by the rate limits times the dedup
// window (remembered answers).
package bets
