package relay

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// Inflating permessage-deflate client messages (RFC 7692); negotiation and
// compression are in relay/engine.

var errInflate = errors.New("permessage-deflate data is corrupt")

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
