package ingest

import (
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// errorLogEvery is how often one kind of recurring Kafka error is logged
// (the first always is; later ones say how many were not logged).
const errorLogEvery = 30 * time.Second

// logEvery rate-limits one kind of log line; safe for concurrent use.
type logEvery struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were suppressed
// since the last one logged.
func (l *logEvery) allow() (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && time.Since(l.last) < errorLogEvery {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = time.Now(), 0
	return n, true
}

func (in *Ingester) kafkaError(op ErrorOp) {
	if in.health != nil {
		in.health.OnKafkaError(op)
	}
}

// connectHook counts and logs failed broker connections (dial, TLS,
// SASL) of the ingest client: a broker that fails while others answer
// does not show in the reachability probe.
type connectHook struct{ in *Ingester }

var _ kgo.HookBrokerConnect = connectHook{}

// OnBrokerConnect is called from the client's goroutines.
func (h connectHook) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	h.in.kafkaError(OpConnect)
	if n, ok := h.in.connectLog.allow(); ok {
		h.in.log.Warn("kafka broker connection failed; retrying", "broker", net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), "node", meta.NodeID, "err", err, "suppressed", n)
	}
}
