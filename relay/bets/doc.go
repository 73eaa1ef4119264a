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
// acknowledged the repeat gets the same position at once; a repeat with
// another request (its SHA-256 differs) gets ErrIDReused. A failed bet is
// forgotten, so its retry produces again.
//
// Across nodes: Run reads the topic back (every partition, no group), from
// DedupWindow ago, and remembers each record's answer from its headers
// (user, bet-id, bet-sha256) as if this node had produced it; values are
// not kept. A retry reaches another node on a connection opened after the
// original was acknowledged, so the first unknown bet of a connection is
// held until the reader has read up to the end offsets listed after it
// arrived (a sync round: one ListOffsets for all bets held meanwhile, at
// most Config.DedupSyncTimeout), then looked up again. What stays open — a
// retry while the original is still in flight on a live node — is what the
// record's idempotency-key header is for.
//
// # Concurrency
//
// Desk methods are safe for concurrent use. Place never blocks: Kafka's
// answer comes on a franz-go goroutine, a held bet is produced from Run's
// sync goroutine, and either calls the callback; the callback must not
// block. Run is called once, on its own goroutine, before Close. Memory is
// bounded by Config.MaxInFlight (records waiting for Kafka or for a sync
// round) and Config.DedupMaxEntries (remembered answers, this node's and
// those read back).
package bets
