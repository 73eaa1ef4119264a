package cluster

import "time"

// MemberState is a member's membership as this node sees it.
type MemberState string

const (
	// Alive: memberlist counts it a member and its metadata is fresh.
	Alive MemberState = "alive"
	// Suspect: memberlist still counts it a member, but no metadata
	// update has come from it for three update intervals: it is slow,
	// cut off from this node, or dying. Memberlist's probes settle it.
	Suspect MemberState = "suspect"
	// Dead: memberlist declared it failed (it stopped answering probes
	// without leaving). Listed for Config.ForgetAfter.
	Dead MemberState = "dead"
	// Left: it left gracefully (Node.Leave). Listed for
	// Config.ForgetAfter.
	Left MemberState = "left"
)

// Member is one node of the cluster as this node sees it: a copy, safe to
// keep.
type Member struct {
	Name    string
	Address string // gossip ip:port
	State   MemberState
	// Since is when State last changed on this node.
	Since time.Time
	// Heard is when this node last received the member's metadata.
	Heard time.Time
	// Meta is the member's last metadata; zero if none was readable.
	Meta Meta
}

// Draining reports whether the member announced it is draining or about
// to leave: new clients should go elsewhere.
func (m *Member) Draining() bool {
	return m.Meta.State == StateDraining || m.Meta.State == StateLeaving || m.State == Left
}

// EventKind names a membership event.
type EventKind string

const (
	EventJoin    EventKind = "join"    // a member appeared, or came back
	EventLeave   EventKind = "leave"   // a member left gracefully
	EventFailed  EventKind = "failed"  // memberlist declared a member dead
	EventSuspect EventKind = "suspect" // a member's metadata went stale
	EventUpdate  EventKind = "update"  // a member gossiped new metadata
)

// Event is a change to another member (the local node's own changes are
// not events).
type Event struct {
	Kind   EventKind
	Member Member // after the change
}

// Counts are the members by state, the local node included, and whether
// the local node is alone: gossip is on but no other member is alive or
// suspect.
type Counts struct {
	Alive, Suspect, Dead, Left int
	Alone                      bool
}

// Hooks observe a Node; the relay's metrics implement them. They are
// called one at a time, in order, with the Node's lock held, from
// memberlist's goroutines and the Node's own: they must not block and must
// not call the Node.
type Hooks interface {
	// OnEvent is called once per membership event.
	OnEvent(Event)
	// OnCounts is called when the counts change, and once when gossip
	// starts.
	OnCounts(Counts)
}

type nopHooks struct{}

func (nopHooks) OnEvent(Event)   {}
func (nopHooks) OnCounts(Counts) {}
