package sdkgo_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

// TestRecoveredFlag: the SDK's recovered flag tells the truth. Across a
// real gap with channels.history_size 0 the resubscribe says
// recovered:false and the latest value arrives; with history it says
// recovered:true and every missed publication arrives (TestGoSDK, step 4).
func TestRecoveredFlag(t *testing.T) {
	for _, protobuf := range []bool{false, true} {
		t.Run(fmt.Sprintf("protobuf=%v", protobuf), func(t *testing.T) {
			kafka := newKafka(t)
			brokers := kafka.ListenAddrs()
			cfg := testConfig(brokers)
			cfg.Channels.HistorySize = 0
			r := startRelay(t, cfg)
			prod := newProducer(t, brokers)
			channel := fmt.Sprintf("odds:football:epl:go-flag-%v:1x2", protobuf)
			var last sent
			produceSeq := func(seq int) {
				v := sdkValue(seq)
				last = sent{uint64(produce(t, prod, "odds", channel, v)) + 1, v}
			}
			produceSeq(0)
			r.waitCached(t, channel, int64(last.offset-1))

			d := &cuttableDialer{}
			h := newHarness(t, r.url(), protobuf, centrifuge.Config{
				Token: userToken(t, "flag-user"), NetDialContext: d.DialContext,
				MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond,
			})
			h.subscribe(channel, centrifuge.SubscriptionConfig{Recoverable: true})
			if err := h.client.Connect(); err != nil {
				t.Fatal(err)
			}
			h.waitConnected()
			if err := h.sub.Subscribe(); err != nil {
				t.Fatal(err)
			}
			h.waitSubscribed()
			h.expectPubs("cached", []sent{last})

			d.cut()
			checkFor(t, 30*time.Second, func() error {
				if d.refusedDials() == 0 {
					return fmt.Errorf("the SDK has not tried to reconnect yet")
				}
				return nil
			})
			for i := 1; i <= 5; i++ { // the gap
				produceSeq(i)
			}
			r.waitCached(t, channel, int64(last.offset-1))
			d.restore()
			sub := h.waitSubscribed()
			if sub.Recovered || !sub.WasRecovering {
				t.Errorf("resubscribed across a gap with history off: %s, want recovered:false, was_recovering", fmtSubscribed(sub))
			}
			h.expectPubs("the latest value", []sent{last})
		})
	}
}
