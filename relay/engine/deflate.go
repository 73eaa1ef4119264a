package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"

	"github.com/edgerelay/edgerelay/fanout"
)

// permessage-deflate (RFC 7692).
//
// The engine accepts the extension only with server_no_context_takeover and
// client_no_context_takeover. Every message is then compressed on its own,
// so one compressed update is built once (a fanout form) and the same bytes
// go to every connection that negotiated deflate, and no connection holds a
// compressor or a 32 KiB window: memory per connection does not change.
// The price is a worse ratio on small messages than a per-connection
// context would give; docs/performance.md has the figures.
//
// A client that limits the server's window (server_max_window_bits=N) is
// sent compressed only messages of at most 2^N bytes: without context
// takeover no back-reference reaches further back than the message itself.

var errInflate = errors.New("permessage-deflate data is corrupt")

// DeflateNegotiation is the state of one handshake's extension offers;
// its zero value has accepted nothing. Pass Negotiate as
// ws.Upgrader.Negotiate, then the value, once the upgrade is done, in
// ConnConfig.Deflate. One handshake's goroutine only.
type DeflateNegotiation struct {
	Accepted bool // permessage-deflate was negotiated
	Window   int  // the largest message the client takes compressed, in bytes; 0: any
}

// Negotiate is ws.Upgrader.Negotiate: it accepts the first
// permessage-deflate offer whose parameters are valid, and declines the
// rest (RFC 7692 section 5: at most one).
func (n *DeflateNegotiation) Negotiate(opt httphead.Option) (httphead.Option, error) {
	if n.Accepted || !bytes.Equal(opt.Name, wsflate.ExtensionNameBytes) {
		return httphead.Option{}, nil
	}
	var offer wsflate.Parameters
	if err := offer.Parse(opt); err != nil {
		return httphead.Option{}, nil // an invalid offer is declined, not an error
	}
	n.Accepted = true
	if offer.ServerMaxWindowBits.Defined() {
		n.Window = offer.ServerMaxWindowBits.Bytes()
	}
	return wsflate.Parameters{
		ServerNoContextTakeover: true,
		ClientNoContextTakeover: true,
		ServerMaxWindowBits:     offer.ServerMaxWindowBits,
	}.Option(), nil
}

// Compressor compresses whole messages, each on its own (no context
// takeover), with pooled flate writers. Safe for concurrent use.
type Compressor struct {
	minBytes  int
	level     int
	deflaters sync.Pool // *deflater at level
}

// NewCompressor returns a Compressor at flate level (1 fastest to 9
// smallest) that leaves messages below minBytes uncompressed.
func NewCompressor(level, minBytes int) (*Compressor, error) {
	if level < 1 || level > 9 {
		return nil, fmt.Errorf("engine: deflate level %d is outside 1..9", level)
	}
	return &Compressor{minBytes: minBytes, level: level}, nil
}

// deflater compresses one message at a time; pooled per Compressor.
type deflater struct {
	w   *flate.Writer
	buf bytes.Buffer
}

// Frame returns payload as one compressed frame (RSV1 set) with header
// byte head (HeadText or HeadBinary), in new memory, or nil when payload
// is below the minimum size or compressing would not make it smaller.
func (z *Compressor) Frame(head byte, payload []byte) []byte {
	if len(payload) < z.minBytes {
		return nil
	}
	d, _ := z.deflaters.Get().(*deflater)
	if d == nil {
		d = &deflater{}
		d.w, _ = flate.NewWriter(&d.buf, z.level) // level checked by NewCompressor
	}
	defer z.deflaters.Put(d)
	d.buf.Reset()
	d.w.Reset(&d.buf)
	d.w.Write(payload) // writes to a bytes.Buffer do not fail
	d.w.Flush()
	// A sync flush ends with an empty stored block, 00 00 ff ff, which the
	// RFC says to leave out.
	c := d.buf.Bytes()
	c = c[:len(c)-4]
	if len(c) >= len(payload) {
		return nil
	}
	b := make([]byte, MaxHeader+len(c))
	copy(b[MaxHeader:], c)
	return FinishFrame(b, head|HeadCompressed)
}

// DeflateFrame is the encoder of the FormDeflate forms: plain, a message
// frame, compressed and labelled f, or plain itself (shared, and still
// labelled uncompressed) when it is below the minimum size or would not
// shrink. nil for nil.
func (z *Compressor) DeflateFrame(plain *fanout.Frame, f fanout.Form) *fanout.Frame {
	if plain == nil {
		return nil
	}
	c := z.Frame(plain.Bytes[0], FramePayload(plain.Bytes))
	if c == nil {
		return plain
	}
	return &fanout.Frame{Bytes: c, Pub: plain.Pub, Form: f}
}

// inflateTail ends a message's compressed data: the 00 00 ff ff the sender
// left out, then an empty final block so the reader stops cleanly.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflater decompresses client messages; pooled across connections.
type inflater struct {
	r   io.ReadCloser
	src sliceReader
	out bytes.Buffer
}

var inflaters sync.Pool

// inflate decompresses one client message. It returns errFrameTooLarge if
// the result would pass limit bytes (a small message may inflate to a
// huge one) and errInflate if the data is corrupt. The result is a new
// slice owned by the caller.
func inflate(compressed []byte, limit int) ([]byte, error) {
	in, _ := inflaters.Get().(*inflater)
	if in == nil {
		in = &inflater{r: flate.NewReader(nil)}
	}
	defer inflaters.Put(in)
	in.src = sliceReader{compressed, inflateTail}
	if err := in.r.(flate.Resetter).Reset(&in.src, nil); err != nil {
		return nil, errInflate
	}
	in.out.Reset()
	n, err := in.out.ReadFrom(io.LimitReader(in.r, int64(limit)+1))
	switch {
	case err != nil:
		return nil, errInflate
	case n > int64(limit):
		return nil, errFrameTooLarge
	}
	return bytes.Clone(in.out.Bytes()), nil
}

// sliceReader reads a, then b; it is an io.ByteReader so that flate reads
// it directly instead of wrapping it in a bufio.Reader.
type sliceReader struct{ a, b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.a) == 0 {
		r.a, r.b = r.b, nil
		if len(r.a) == 0 {
			return 0, io.EOF
		}
	}
	n := copy(p, r.a)
	r.a = r.a[n:]
	return n, nil
}

func (r *sliceReader) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := r.Read(b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}
