package ingest

import (
	"context"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The watch: every Config.LagInterval (and once at start) it lists the
// topics' IDs (uncached metadata) and the partitions' committed end
// offsets (the last stable offsets), independently of fetching.
//
// Lag. A fetch reports lag only when it returns records, so a node whose
// fetches fail, or whose consumption is stuck, would keep reporting the
// lag it last had. The watch reports each partition's committed end minus
// the next offset Run will read (HealthHooks.OnPosition), so the lag
// keeps rising while ingest is stuck. A partition not read yet counts
// from where its start window begins (with start.last_records) or is not
// reported (start.since, and a restarted topic until its first batch).
//
// Recreated topics. franz-go never adopts a new topic ID for a topic it
// consumes: after a topic is deleted and created again its fetches fail
// with UNKNOWN_TOPIC_ID until the topic is purged from the client and
// added back. The watch remembers each topic's ID (from its first batch
// or listing); when the listing shows another ID, or fetches keep failing
// with UNKNOWN_TOPIC_ID for suspectFor while the listing shows the topic,
// the topic is purged and added back: it is read afresh from Config.Start. Its publications carry the
// new ID in their epoch (see Epoch), so a client recovering from a
// position of the old topic gets the latest value, recovered:false, never
// a "continuation" from offsets of another log. Batches of the old topic
// still buffered are dropped. On a broker without topic IDs the watch
// cannot tell; Run then notices offsets that go backwards (streamOf).

var noID [16]byte

// initStreams sets up the state the watch and Run share.
func (in *Ingester) initStreams() {
	in.pos, in.ids, in.gen = map[topicPartition]position{}, map[string][16]byte{}, map[topicPartition]int{}
	in.suspect, in.suspectSince = map[string]bool{}, map[string]time.Time{}
	in.health, _ = in.hooks.(HealthHooks)
}

// streamOf returns the epoch of a fetched batch, or false if the batch is
// of a topic's incarnation older than the one consumed now. A batch that
// starts below the partition's next offset under the same topic ID (the
// log was truncated, or a broker without topic IDs has the topic created
// again) starts a new epoch: offsets of the two runs mean different
// records. Run's goroutine.
func (in *Ingester) streamOf(topic string, id [16]byte, p *kgo.FetchPartition) (string, bool) {
	tp := topicPartition{topic, p.Partition}
	in.posMu.Lock()
	defer in.posMu.Unlock()
	switch known := in.ids[topic]; {
	case known == noID:
		in.ids[topic] = id
	case id != noID && id != known:
		return "", false
	}
	if at, ok := in.pos[tp]; ok && p.Records[0].Offset < at.next {
		in.gen[tp]++
		delete(in.pos, tp)
		in.log.Warn("kafka partition offsets went backwards (log truncated, or topic created again on a broker without topic IDs); new epoch",
			"topic", topic, "partition", p.Partition, "offset", p.Records[0].Offset, "expected", at.next)
		if id == noID && in.health != nil {
			in.health.OnTopicRecreated(topic)
		}
	}
	epoch := Epoch(topic, id, p.Partition)
	if g := in.gen[tp]; g > 0 {
		epoch += "." + strconv.Itoa(g)
	}
	return epoch, true
}

// advance records Run's position in a partition after a batch (at.last
// zero: the batch held only control records), unless the topic was
// restarted meanwhile. Run's goroutine.
func (in *Ingester) advance(topic string, id [16]byte, partition int32, at position) {
	tp := topicPartition{topic, partition}
	in.posMu.Lock()
	if id == noID || in.ids[topic] == id {
		if at.last.IsZero() {
			at.last = in.pos[tp].last
		}
		in.pos[tp] = at
	}
	in.posMu.Unlock()
}

// suspectRecreated marks topic for the watch's next listing.
func (in *Ingester) suspectRecreated(topic string) {
	in.posMu.Lock()
	in.suspect[topic] = true
	in.posMu.Unlock()
}

// watch runs watchOnce at start and then every LagInterval.
func (in *Ingester) watch(ctx context.Context) {
	adm := kadm.NewClient(in.client)
	t := time.NewTicker(in.cfg.LagInterval)
	defer t.Stop()
	for {
		// A partition being deleted keeps the listing retrying until this.
		wctx, cancel := context.WithTimeout(ctx, max(in.cfg.LagInterval, time.Second))
		in.watchOnce(wctx, adm)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (in *Ingester) watchOnce(ctx context.Context, adm *kadm.Client) {
	// Not kadm.Metadata: that answers from the client's metadata cache,
	// which holds an old topic ID for up to its minimum age.
	req := kmsg.NewPtrMetadataRequest()
	for _, name := range in.names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	meta, err := req.RequestWith(ctx, in.client)
	if err != nil {
		in.listFailed(err)
		return
	}
	for _, t := range meta.Topics {
		// Deleted and not created again yet, or a broker without IDs:
		// nothing to compare.
		if t.Topic == nil || t.ErrorCode != 0 || t.TopicID == noID {
			continue
		}
		if old, again := in.recreated(*t.Topic, t.TopicID); again {
			in.restart(*t.Topic, old, t.TopicID)
		}
	}
	// What read_committed can read: an open transaction is not lag.
	ends, err := adm.ListCommittedOffsets(ctx, in.names...)
	if err != nil {
		in.listFailed(err)
	}
	if in.health == nil {
		return
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		tp := topicPartition{o.Topic, o.Partition}
		in.posMu.Lock()
		at, ok := in.pos[tp]
		in.posMu.Unlock()
		if !ok {
			in.catchMu.Lock()
			at.next, ok = in.startAt[tp]
			in.catchMu.Unlock()
			if !ok {
				return
			}
		}
		in.health.OnPosition(o.Topic, o.Partition, max(o.Offset-at.next, 0), at.last)
	})
}

func (in *Ingester) listFailed(err error) {
	if errors.Is(err, context.Canceled) || !in.reachable.Load() {
		return // stopping, or Kafka is down: the probe says so
	}
	in.kafkaError(OpList)
	if n, ok := in.listLog.allow(); ok {
		in.log.Warn("listing kafka topics and end offsets for lag failed; retrying", "err", err, "suppressed", n)
	}
}

// suspectFor is how long listings must keep finding a topic whose
// fetches fail with UNKNOWN_TOPIC_ID, under the ID the watch knows,
// before it is restarted anyway: the watch learnt the new ID first (the
// topic was created again before this node read or listed it), while
// franz-go holds the old one. Shorter is a deletion the brokers have not
// all seen yet, or a new topic Kafka has not propagated.
const suspectFor = 30 * time.Second

// recreated reports whether topic, listed with id, is not the topic
// being consumed (and that one's ID, if known): another ID, or fetches
// failing with UNKNOWN_TOPIC_ID between every listing for suspectFor.
// The first ID seen is remembered. The watch's goroutine.
func (in *Ingester) recreated(topic string, id [16]byte) ([16]byte, bool) {
	in.posMu.Lock()
	defer in.posMu.Unlock()
	known, suspect := in.ids[topic], in.suspect[topic]
	delete(in.suspect, topic)
	if known == noID {
		in.ids[topic] = id
	}
	if known != noID && known != id {
		return known, true
	}
	since, ok := in.suspectSince[topic]
	switch {
	case !suspect:
		delete(in.suspectSince, topic)
	case !ok:
		in.suspectSince[topic] = time.Now()
	case time.Since(since) >= suspectFor:
		return known, true
	}
	return known, false
}

// restart consumes topic afresh, as created again with id: its positions
// and catch-up targets are forgotten, batches of the old topic dropped
// (streamOf), and franz-go reads it from Config.Start. The watch's
// goroutine.
func (in *Ingester) restart(topic string, old, id [16]byte) {
	in.log.Warn("kafka topic was deleted and created again; reading it afresh from ingest.start under a new epoch",
		"topic", topic, "old_id", hex.EncodeToString(old[:]), "new_id", hex.EncodeToString(id[:]))
	in.posMu.Lock()
	in.ids[topic] = id
	delete(in.suspectSince, topic)
	for tp := range in.pos {
		if tp.topic == topic {
			delete(in.pos, tp)
		}
	}
	in.posMu.Unlock()
	in.catchMu.Lock()
	for _, m := range []map[topicPartition]int64{in.targets, in.startAt, in.consumed} {
		for tp := range m {
			if tp.topic == topic {
				delete(m, tp)
			}
		}
	}
	in.catchMu.Unlock()
	in.client.PurgeTopicsFromConsuming(topic)
	in.client.AddConsumeTopics(topic)
	if in.health != nil {
		in.health.OnTopicRecreated(topic)
	}
	in.checkCaughtUp()
}
