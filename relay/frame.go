package relay

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/edgerelay/edgerelay/delta"
	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// messageHead is the first header byte of an uncompressed message in the
// codec's frames: text for JSON, binary for Protobuf.
func messageHead(codec protocol.Codec) byte { return engine.MessageHead(codec.Binary()) }

// Forms of a publication frame (fanout.Form). A subscription asks for the
// form its client negotiated; each form is built on first use, once per
// update (rarely twice, see fanout.Update), and shared by every subscriber
// asking for it. The engine defines the bits it chooses between (kind and
// deflate) and carries the relay's through:
//
//	bit 4     formProtobuf: the Protobuf encoding (else JSON)
//	bits 2-3  kind: engine.FormPlain, engine.FormDeltaFull, engine.FormPatch
//	bit 1     engine.FormDeflate: permessage-deflate compressed
//	bit 0     formCompact: the channel's id instead of its name (channel compaction)
//
// In JSON a delta subscription's full payload travels as a JSON string,
// so delta full is a form of its own; in Protobuf data is raw bytes
// either way, and the delta full form is the plain frame itself (shared,
// labelled plain). A map's changes have the same forms, per entry: a
// patch applies to the key's previous value (fanout.Update.Prev).
//
// formRawPatch, the fourth kind, is not sent: it holds the bare Fossil
// patch, which every patch envelope (both encodings, named and compact) is
// built from. formJSONData is not sent either: for a publication of a
// "payload: binary" topic, its data as a JSON client may get it (checked,
// compacted), or no such form when it is not JSON; the JSON forms build on
// it, so the check runs once per update and only if a JSON client asks.
const (
	formCompact  fanout.Form = 1 << 0
	formProtobuf fanout.Form = 1 << 4

	formRawPatch fanout.Form = 3 << 2
	formJSONData fanout.Form = formProtobuf | formRawPatch
)

// formCodec returns the codec form f is encoded with.
func formCodec(f fanout.Form) protocol.Codec {
	if f&formProtobuf != 0 {
		return protocol.Protobuf
	}
	return protocol.JSON
}

// subscriptionForm is the form a subscription asks for: the codec's
// encoding, the full payload (delta full for a fossil delta subscription,
// for the engine to swap for a patch when it can) and the channel's id for
// channel compaction. The engine adds engine.FormDeflate itself.
func subscriptionForm(codec protocol.Codec, delta, compact bool) fanout.Form {
	f := engine.FormPlain
	if codec.Binary() {
		f |= formProtobuf
	}
	if delta {
		f |= engine.FormDeltaFull
	}
	if compact {
		f |= formCompact
	}
	return f
}

// encodeForm is the hub's Encoder.
func (s *Server) encodeForm(u *fanout.Update, f fanout.Form) *fanout.Frame {
	switch {
	case f == formRawPatch:
		return s.encodePatch(u)
	case f == formJSONData:
		return s.jsonData(u.Pub)
	case f&engine.FormDeflate != 0:
		return s.compressor.DeflateFrame(u.Frame(f&^engine.FormDeflate), f)
	}
	p := u.Pub
	codec := formCodec(f)
	data := p.Data
	if p.Binary && !codec.Binary() && !p.Removed {
		jd := u.Frame(formJSONData)
		if jd == nil {
			return nil // the engine closes this client: 3506
		}
		data = jd.Bytes
	}
	// payload goes as data: the value, or a patch; in JSON as a string
	// for a delta subscription.
	payload, patch := data, false
	switch f & engine.FormKinds {
	case engine.FormPlain:
	case engine.FormDeltaFull:
		if codec.Binary() {
			return u.Frame(f&^engine.FormKinds | engine.FormPlain)
		}
	default:
		raw := u.Frame(formRawPatch)
		if raw == nil || !codec.Binary() && (p.Binary || u.Prev.Binary) {
			// (A JSON client may hold a compacted form of a binary
			// topic's value: the raw bytes' patch need not apply.)
			return nil
		}
		if !codec.Binary() && !utf8.Valid(raw.Bytes) {
			// JSON carries patches in strings; this client gets the
			// full payload.
			s.metrics.patchesSkipped.Inc()
			return nil
		}
		payload, patch = raw.Bytes, true
	}
	asString := f&engine.FormKinds != engine.FormPlain && !codec.Binary()
	if p.Key != "" {
		return mapFrame(codec, p, payload, asString, patch, f)
	}
	var id uint32
	if f&formCompact != 0 {
		id = u.ChannelID
	}
	push := protocol.PubPush{Channel: p.Channel, ID: id, Data: payload, Offset: protoOffset(p), Tags: p.Tags, Delta: asString || patch, Patch: patch}
	size := engine.MaxHeader + len(payload) + len(p.Channel) + tagsLen(p.Tags) + 64
	if push.Delta {
		size += len(payload) + tagsLen(p.Tags) // quoting in a JSON string
	}
	b := codec.AppendPush(make([]byte, engine.MaxHeader, size), push)
	return &fanout.Frame{Bytes: engine.FinishFrame(b, messageHead(codec)), Pub: p, Form: f}
}

// mapFrame is the push of one change of a map entry, built as a reply push
// by the codec: payload is the value, or with patch its Fossil patch to
// the key's previous value; asString sends it as a JSON string (a delta
// subscription's JSON). A map has no channel compaction.
func mapFrame(codec protocol.Codec, p *fanout.Publication, payload []byte, asString, patch bool, f fanout.Form) *fanout.Frame {
	pub := mapPublication(p, payload)
	if asString && !p.Removed {
		pub.Data = protocol.AppendJSONString(nil, payload)
	}
	pub.Delta = patch
	b := make([]byte, engine.MaxHeader, engine.MaxHeader+2*len(payload)+len(p.Channel)+len(p.Key)+2*tagsLen(p.Tags)+64)
	b = append(b, codec.AppendReply(nil, &protocol.Reply{Push: &protocol.Push{Channel: p.Channel, Pub: pub}})...)
	return &fanout.Frame{Bytes: engine.FinishFrame(b, messageHead(codec)), Pub: p, Form: f}
}

// mapPublication is a map entry's change as the client sees it.
func mapPublication(p *fanout.Publication, data []byte) *protocol.Publication {
	if p.Removed {
		data = nil
	}
	return &protocol.Publication{Data: data, Offset: protoOffset(p), Tags: p.Tags, Key: p.Key, Removed: p.Removed, Binary: p.Binary}
}

// tagsLen is about what tags add to a push: their bytes and quoting.
func tagsLen(tags map[string]string) int {
	n := 0
	for k, v := range tags {
		n += len(k) + len(v) + 8
	}
	return n
}

// jsonData is formJSONData: p's data for a JSON client, compacted if it
// holds a newline (JSON messages are '\n'-separated), or nil (counted)
// when it is not JSON.
func (s *Server) jsonData(p *fanout.Publication) *fanout.Frame {
	if !json.Valid(p.Data) {
		s.metrics.notJSON.Inc()
		return nil
	}
	data := p.Data
	if bytes.IndexByte(data, '\n') >= 0 {
		var b bytes.Buffer
		json.Compact(&b, data)
		data = b.Bytes()
	}
	return &fanout.Frame{Bytes: data, Pub: p, Form: formJSONData}
}

// encodePatch returns the Fossil patch from the previous publication to
// this one, or nil when there is none to make (no previous publication, or
// one from another stream) or it would not help (not smaller than the
// payload).
func (s *Server) encodePatch(u *fanout.Update) *fanout.Frame {
	prev, p := u.Prev, u.Pub
	if prev == nil || prev.Epoch != p.Epoch {
		return nil
	}
	start := time.Now()
	d := delta.Encode(nil, prev.Data, p.Data)
	s.metrics.deltaEncode.Observe(time.Since(start).Seconds())
	if len(d) >= len(p.Data) {
		s.metrics.patchesSkipped.Inc()
		return nil
	}
	return &fanout.Frame{Bytes: d, Pub: p, Form: formRawPatch}
}
