package relay

import (
	"strings"
	"sync"
)

// maxNamespaceLabels bounds the namespace label of per-namespace metrics.
const maxNamespaceLabels = 64

// namespaceLabels gives per-namespace metrics their label without letting
// a client add series: a namespace gets a label of its own only once a
// Kafka record has been published in it (the backend, not a client, names
// it), and only the first maxNamespaceLabels of those do; everything else
// is "other". Safe for concurrent use.
type namespaceLabels struct {
	mu   sync.RWMutex
	seen map[string]bool
}

// of returns channel's label. fromKafka says the channel holds (or held)
// a Kafka record, so its namespace may be learned.
func (n *namespaceLabels) of(channel string, fromKafka bool) string {
	ns := namespace(channel)
	n.mu.RLock()
	known := n.seen[ns]
	n.mu.RUnlock()
	if known {
		return ns
	}
	if !fromKafka {
		return "other"
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]bool{}
	}
	if len(n.seen) >= maxNamespaceLabels {
		return "other"
	}
	ns = strings.Clone(ns) // not a reference into the channel name
	n.seen[ns] = true
	return ns
}

// namespace is a channel name's first segment.
func namespace(channel string) string {
	if i := strings.IndexByte(channel, ':'); i >= 0 {
		return channel[:i]
	}
	return channel
}
