package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// TestTopicRecreatedNewEpoch (issue 17): the odds topic is deleted and
// created again while the relay reads it. The relay notices, counts it,
// and delivers the new topic's records to subscribers under a new epoch;
// a client recovering from a position of the old topic gets the latest
// value, recovered:false — not "up to date", which the smaller offsets of
// the new topic would otherwise claim.
func TestTopicRecreatedNewEpoch(t *testing.T) {
	k := newKafka(t)
	cfg := testConfig(k.ListenAddrs())
	cfg.Ingest.LagInterval = 100 * time.Millisecond
	cfg.Channels.HistorySize = 10
	r := startRelay(t, cfg)
	r.waitReady(t)
	const ch = "odds:football:epl:m1:1x2"
	prod := newProducer(t, k.ListenAddrs())
	var off int64
	for i := range 3 {
		off = produce(t, prod, "odds", ch, fmt.Sprintf(`{"old":%d}`, i))
	}
	r.waitCached(t, ch, off)
	oldEpoch := r.srv.Hub().Last(ch).Epoch

	live := dial(t, r.url())
	live.connect()
	live.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch))
	if rep := live.mustNext(); rep["subscribe"] == nil {
		t.Fatalf("subscribe reply %v", rep)
	}

	adm := kadm.NewClient(newProducer(t, k.ListenAddrs()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := adm.DeleteTopic(ctx, "odds"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		_, err := adm.CreateTopic(ctx, 3, 1, nil, "odds")
		return err
	})
	// A new producer: the old one holds the deleted topic's ID.
	newOff := produce(t, newProducer(t, k.ListenAddrs()), "odds", ch, `{"new":0}`)
	if newOff >= off {
		t.Fatalf("new topic's offset %d not below the old %d: the test proves nothing", newOff, off)
	}

	// The subscriber gets the new record (within the deadline).
	rep := live.mustNext()
	if _, data, _, ok := pubOf(rep); !ok || data["new"] != 0.0 {
		t.Fatalf("live subscriber got %v, want the new topic's record", rep)
	}
	last := r.srv.Hub().Last(ch)
	if last.Epoch == oldEpoch || last.Pos.Offset != newOff {
		t.Fatalf("cached %s at offset %d, epoch %q (old %q)", last.Data, last.Pos.Offset, last.Epoch, oldEpoch)
	}

	// Recovering from the old topic's last position: not recovered.
	c := dial(t, r.url())
	c.connect()
	c.send(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q,"recover":true,"epoch":%q,"offset":%d}}`, ch, oldEpoch, off+1))
	sub, _ := c.mustNext()["subscribe"].(map[string]any)
	pubs, _ := sub["publications"].([]any)
	if sub == nil || sub["recovered"] == true || sub["epoch"] != last.Epoch || len(pubs) != 1 {
		t.Fatalf("recover from the old topic: %v; want the latest value, recovered:false, epoch %q", sub, last.Epoch)
	}

	// The watch's series for the new topic's partition: no lag, a record age.
	lag := fmt.Sprintf(`edgerelay_kafka_lag_records{partition="%d",topic="odds"}`, last.Pos.Partition)
	age := fmt.Sprintf(`edgerelay_kafka_last_record_age_seconds{partition="%d",topic="odds"}`, last.Pos.Partition)
	checkFor(t, 10*time.Second, func() error {
		_, body := r.get(t, "/metrics")
		if metric(body, `edgerelay_kafka_topic_recreated_total{topic="odds"}`) != 1 || metric(body, lag) != 0 || metric(body, age) < 0 {
			return fmt.Errorf("want recreated_total 1, %s 0, %s >= 0:\n%s", lag, age, grepLines(body, "edgerelay_kafka_"))
		}
		return nil
	})
}
