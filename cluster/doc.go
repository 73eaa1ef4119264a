// Package cluster is relay membership by gossip (hashicorp/memberlist):
// which nodes exist, whether each takes new clients, its public WebSocket
// URL and its load. It carries no data: every relay node reads every Kafka
// partition itself, so a node cut off from the others keeps serving its
// clients; only what the nodes know of each other goes stale.
//
// # Model
//
// A Node is the local member. New validates a Config; Start binds the
// gossip address (TCP and UDP), joins the seeds in the background and
// returns. Seeds are host:port; a host name is resolved to every address
// it has (a Kubernetes headless service), the node's own address left
// out. A node that reaches no seed is alone: it says so (Alone, Counts,
// a warning) and joins its seeds again every Config.RetryInterval. It
// also retries the addresses of members it saw fail, which rejoins the
// two sides of a healed partition before memberlist forgets them.
//
// Each node gossips its metadata (Meta: format version, public URL,
// version, NodeState, connections, subscriptions, load) as memberlist
// node metadata, a few hundred bytes of JSON with short keys under
// memberlist's 512-byte limit. The StatusFunc is sampled every second;
// a change of NodeState goes out at once, load figures at most every
// Config.UpdateInterval, so the gossip rate does not follow the load.
// Since the metadata is refreshed every UpdateInterval even when nothing
// changed, a member not heard from for three intervals is listed as
// Suspect (memberlist itself does not tell its suspicions). Memberlist's
// probes declare members Dead; a member that announced StateLeaving
// before leaving (Node.Leave) is Left. Dead and left members stay listed
// for Config.ForgetAfter.
//
// Query asks every other alive member a question and collects the
// answers until a deadline (query.go): the relay's cluster-wide presence.
// The answers come from a QueryFunc set before Start; queries waiting,
// answers being computed and message sizes are bounded.
//
// With Config.Bind empty gossip is off: Start opens nothing, Members
// lists the local node alone and Alone is true.
//
// # Concurrency
//
// Node's methods are safe for concurrent use; call Start once, before
// the others matter, and Leave or Shutdown once at the end (later calls
// do nothing). One goroutine per node refreshes the metadata and sweeps
// the member table every second; joins run in a goroutine of their own,
// one at a time, since a join can wait memberlist's TCP timeout per
// address.
//
// Memberlist calls the node's event delegate with its own node lock held;
// the delegate then takes Node.mu. So the lock order is memberlist's,
// then Node.mu, and Node never calls memberlist with Node.mu held. Hooks
// run with Node.mu held, one at a time and in order: they must not block
// and must not call the Node. The StatusFunc is called without locks,
// from the node's goroutine. A QueryFunc runs on a goroutine per query,
// without locks; Query blocks its caller until its context is done or
// every member asked has answered.
package cluster
