package cluster

import (
	"encoding/json"
	"math"
)

// Status is what a node says about itself in its metadata. The embedder
// reports it through the StatusFunc given to New.
type Status struct {
	State   NodeState
	Version string // the embedder's build version (at most 64 bytes are sent)
	// PublicURL is the WebSocket URL the embedder derived for itself;
	// Config.PublicURL, when set, wins.
	PublicURL     string
	Connections   int
	Subscriptions int
	// Load is the embedder's load figure: 0 idle, 1 at capacity (it may
	// exceed 1).
	Load float64
}

// StatusFunc reports the local node's Status. It is called from the
// node's own goroutine about once a second; it must be safe to call
// concurrently with the embedder's work and must not block.
type StatusFunc func() Status

// NodeState is a node's own account of whether it takes new clients.
type NodeState string

const (
	StateReady      NodeState = "ready"      // serving, takes new clients
	StateUnready    NodeState = "unready"    // serving its clients, but should get no new ones (e.g. Kafka unreachable)
	StateOverloaded NodeState = "overloaded" // behind on writes: send new clients elsewhere
	StateDraining   NodeState = "draining"   // shutting down: its clients are moving elsewhere
	StateLeaving    NodeState = "leaving"    // announced just before a graceful leave
)

// Meta is a member's metadata as last gossiped by it.
type Meta struct {
	// Format is the metadata format version the member sent (1 today).
	// Later formats only add fields; a reader ignores fields it does not
	// know.
	Format        int
	PublicURL     string
	Version       string
	State         NodeState
	Connections   int
	Subscriptions int
	Load          float64
	// Seq counts the member's metadata updates since it started.
	Seq uint64
}

// metaFormat is the format this package writes.
const metaFormat = 1

// maxVersionBytes bounds Status.Version in the metadata.
const maxVersionBytes = 64

// wireMeta is Meta on the wire: JSON with short keys, well under
// memberlist.MetaMaxSize (512 bytes) with a 256-byte URL.
type wireMeta struct {
	Format        int       `json:"f"`
	PublicURL     string    `json:"u,omitempty"`
	Version       string    `json:"v,omitempty"`
	State         NodeState `json:"s"`
	Connections   int       `json:"c"`
	Subscriptions int       `json:"n"`
	Load          float64   `json:"l"`
	Seq           uint64    `json:"q"`
}

func encodeMeta(m Meta) []byte {
	if len(m.Version) > maxVersionBytes {
		m.Version = m.Version[:maxVersionBytes]
	}
	if math.IsNaN(m.Load) || math.IsInf(m.Load, 0) {
		m.Load = 0
	}
	b, _ := json.Marshal(wireMeta{metaFormat, m.PublicURL, m.Version, m.State,
		m.Connections, m.Subscriptions, math.Round(m.Load*1000) / 1000, m.Seq})
	return b
}

// decodeMeta decodes a member's metadata; ok is false for metadata this
// package cannot read (none, or not format 1 or later).
func decodeMeta(b []byte) (m Meta, ok bool) {
	var w wireMeta
	if len(b) == 0 || json.Unmarshal(b, &w) != nil || w.Format < 1 {
		return Meta{}, false
	}
	return Meta(w), true
}
