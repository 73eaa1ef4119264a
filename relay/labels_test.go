package relay_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestMetricCardinality: channel names a client makes up never become
// label values: subscribing to (and leaving) many made-up namespaces, or
// to invalid names, leaves /metrics as it was; a namespace Kafka brings
// gets its own label.
func TestMetricCardinality(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	r.waitCached(t, "scores:m1", produce(t, prod, "odds", "scores:m1", `{"v":1}`))

	c := dial(t, r.url())
	c.connect()
	c.send(`{"id":2,"subscribe":{"channel":"scores:m1"}}`)
	c.mustNext()
	_, before := r.get(t, "/metrics")
	for i := 0; i < 300; i++ {
		ch := fmt.Sprintf("made-up-%d:x", i)
		c.send(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, 10+2*i, ch), fmt.Sprintf(`{"id":%d,"unsubscribe":{"channel":%q}}`, 11+2*i, ch))
		c.mustNext()
		c.mustNext()
	}
	for i := 0; i < 20; i++ { // rejected names: too long, bad characters
		c.send(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":"%s%d*"}}`, 1000+i, strings.Repeat("n", 2000), i))
		if rep := c.mustNext(); errorCode(rep) != 107 {
			t.Fatalf("invalid name: %v", rep)
		}
	}
	_, after := r.get(t, "/metrics")
	if strings.Contains(after, "made-up-") || strings.Contains(after, "nnnnnnnn") {
		t.Errorf("client-made channel names became label values:\n%s", grep(after, "made-up-"))
	}
	if !strings.Contains(after, `namespace="scores"`) {
		t.Errorf("the namespace Kafka brought has no label:\n%s", grep(after, "namespace="))
	}
	if grow := len(after) - len(before); grow > 4<<10 {
		t.Errorf("/metrics grew by %d bytes", grow)
	}
}
