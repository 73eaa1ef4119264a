package fanout

import "time"

// Position locates a publication in the log it came from. For Kafka, Stream
// is the topic. A Position means the same thing on every relay node because
// every node reads the same log.
type Position struct {
	Stream    string
	Partition int32
	Offset    int64
}

// Publication is one update of a channel. It is immutable once passed to
// Hub.Publish: the Hub and every subscriber may hold and read it
// concurrently.
type Publication struct {
	Channel string
	// Data is the payload as produced into the source log.
	Data []byte
	Pos  Position
	// Epoch names the stream Pos belongs to, so that a client can tell
	// whether two offsets are comparable.
	Epoch string
	// Time is the source timestamp (the Kafka record timestamp).
	Time time.Time
	// Priority marks updates that must never be conflated away
	// (suspensions, scores, settlements).
	Priority bool
}

// size is what a cached publication is charged against Config.MaxCachedBytes.
func (p *Publication) size() int64 {
	if p == nil {
		return 0
	}
	const overhead = 160 // struct, strings' headers, map entry
	return int64(len(p.Channel) + len(p.Data) + len(p.Pos.Stream) + len(p.Epoch) + overhead)
}

// Frame is one update encoded once for the wire and shared by every
// subscriber it is delivered to. Bytes must not be modified after the Frame
// is created.
type Frame struct {
	Bytes   []byte
	Pub     *Publication
	Variant Variant
}

// Variant says which encoding of an update a Frame holds.
type Variant uint8

// Frame variants.
const (
	VariantFull       Variant = iota // Encoder's plain encoding
	VariantDeltaFull                 // DeltaEncoder's full payload
	VariantDeltaPatch                // DeltaEncoder's patch against the previous update
)

// Encoder turns a publication into the bytes written to subscribers. It is
// called at most once per Publish, with the channel's lock held; it must not
// block. The returned slice is owned by the Hub and then by the Frame.
type Encoder func(p *Publication) []byte

// DeltaEncoder encodes a publication for delta subscribers, once per
// Publish and only when the channel has some: full carries the whole
// payload in delta form, patch a delta against prev (nil when there is no
// prev or the patch would not be smaller). Same rules as Encoder.
type DeltaEncoder func(prev, p *Publication) (full, patch []byte)

// Update is one publication encoded in every variant its subscribers need.
// Frames are shared and read-only.
type Update struct {
	Full *Frame // the plain encoding (Encoder)
	// DeltaFull and DeltaPatch are set when the channel has delta
	// subscribers; DeltaPatch may be nil. DeltaPatch applies to Prev.
	DeltaFull, DeltaPatch *Frame
	Prev                  *Publication
}

// Subscriber receives the updates of the channels it subscribed to.
type Subscriber interface {
	// Deliver hands over one update. It is called with the channel's lock
	// held, so it must not block and must not call into the Hub; a
	// subscriber that cannot take the update now must queue it or apply its
	// own slow-consumer policy.
	Deliver(u *Update)
}

// DeltaSubscriber is a Subscriber that wants delta variants.
type DeltaSubscriber interface {
	Subscriber
	WantsDelta() bool
}
