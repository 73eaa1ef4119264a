package fanout

import (
	"sync/atomic"
	"time"
)

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
	// Binary says Data is opaque bytes, not known to be JSON: an encoder
	// that needs JSON must check it and may have no form for it.
	Binary bool
	// Key and Removed: in a map's publication (see MapRule), the entry's
	// key, and that the change removes it. Empty in a channel's.
	Key     string
	Removed bool
	// Tags are the publication's tags (from Kafka headers the relay is
	// configured to read), sent to clients with it and matched by
	// subscribers' Filters. Nil: none.
	Tags map[string]string
}

// Filter decides which publications a subscriber takes, by their tags (a
// client's tag filter). Match must be safe for concurrent use, must not
// block and should not allocate: it runs once per subscriber and
// publication, under the channel's lock.
type Filter interface {
	Match(tags map[string]string) bool
}

// size is what a cached publication is charged against Config.MaxCachedBytes.
func (p *Publication) size() int64 {
	if p == nil {
		return 0
	}
	const overhead = 160 // struct, strings' headers, map entry
	n := len(p.Channel) + len(p.Key) + len(p.Data) + len(p.Pos.Stream) + len(p.Epoch) + overhead
	for k, v := range p.Tags {
		n += len(k) + len(v) + 48 // and the tag's map entry
	}
	return int64(n)
}

// Frame is one update encoded once for the wire and shared by every
// subscriber it is delivered to. Bytes must not be modified after the Frame
// is created.
type Frame struct {
	Bytes []byte
	Pub   *Publication
	// Form is the encoding the Frame holds, as the Encoder labelled it;
	// the Hub does not interpret it.
	Form Form
}

// Form names one encoding of an update: the caller's choice of envelope,
// delta and compression. Forms are small integers below MaxForms, defined
// by whoever supplies the Encoder.
type Form uint8

// MaxForms bounds the forms an Update can hold.
const MaxForms = 32

// Encoder builds form f of u, on the first Update.Frame(f). It runs on
// the goroutine that asks: the Hub's Publish, with the channel's lock held,
// or a subscriber that kept the Update to write it later; two asking at the
// same moment may both run it (see Update). So it must be safe for concurrent use, must not block and must
// not call into the Hub. It may build on other forms of the same update
// with u.Frame, but must not ask for f itself. It returns nil when u has no
// such form (say, a patch that would not be smaller than the full
// payload). The returned Frame is shared by every subscriber that asks for
// f; the Hub and then the subscribers own it, read-only.
type Encoder func(u *Update, f Form) *Frame

// Update is one publication on its way to a channel's subscribers. Every
// form is encoded on first use and shared; subscribers that want nothing
// new cost no encoding.
//
// A subscriber may keep the Update past Deliver and ask it for forms later
// from any goroutine: a subscriber that is behind keeps only the newest
// Update of a channel and encodes what it needs when it can write it.
// Frame is safe for concurrent use; two goroutines asking for a form
// nobody has built at the same moment may both encode it, and then both
// get the one stored first.
type Update struct {
	Pub *Publication
	// Prev is the channel's previous publication (nil if none): what a
	// patch in this update applies to.
	Prev *Publication
	// ChannelID is the channel's node-local numeric id (see
	// Hub.Subscribe).
	ChannelID uint32
	// Seq numbers the channel's publications on this node, one apart, so
	// a subscriber that kept an older Update knows how many came since.
	Seq uint64

	enc    Encoder
	frames [MaxForms]atomic.Pointer[Frame] // noFrame: built, no such form
}

// noFrame marks a form the Encoder returned nil for.
var noFrame = new(Frame)

// Frame returns form f of the update, encoding it on first use (nil if the
// update has no such form).
func (u *Update) Frame(f Form) *Frame {
	if f >= MaxForms {
		panic("fanout: form out of range")
	}
	fr := u.frames[f].Load()
	if fr == nil {
		if fr = u.enc(u, f); fr == nil {
			fr = noFrame
		}
		if !u.frames[f].CompareAndSwap(nil, fr) {
			fr = u.frames[f].Load()
		}
	}
	if fr == noFrame {
		return nil
	}
	return fr
}

// Subscriber receives the updates of the channels it subscribed to.
type Subscriber interface {
	// Deliver hands over one update. It is called with the channel's lock
	// held, so it must not block and must not call into the Hub; a
	// subscriber that cannot take the update now must queue it or apply its
	// own slow-consumer policy. It picks the form it needs with u.Frame.
	Deliver(u *Update)
}
