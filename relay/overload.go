package relay

import (
	"strings"

	"github.com/edgerelay/edgerelay/relay/engine"
)

// Which channels give way under overload (overload.deliver_all), and how
// their conflation is counted.

// conflatedCounter is the counter of channel's updates replaced in a write
// queue because the node fell behind, or nil if they never are
// (overload.deliver_all). fromKafka: the channel has a Kafka record (see
// namespaceLabels).
func (s *Server) conflatedCounter(channel string, fromKafka bool) engine.Counter {
	if !s.conflates(channel) {
		return nil
	}
	return s.metrics.overloadConflated.WithLabelValues(s.metrics.namespaces.of(channel, fromKafka), "connection")
}

// conflates says whether updates of channel may replace each other when
// the node falls behind: not under overload.deliver_all.
func (s *Server) conflates(channel string) bool {
	for _, p := range s.cfg.Overload.DeliverAll {
		if strings.HasPrefix(channel, p) {
			return false
		}
	}
	return true
}
