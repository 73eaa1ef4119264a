package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/gobwas/ws/wsutil"
	"github.com/klauspost/compress/flate"
)

// WireResult is what one client mode received in a wire-size run.
type WireResult struct {
	Mode      string  `json:"mode"`
	Updates   int     `json:"updates"`    // publication pushes received
	WireBytes int64   `json:"wire_bytes"` // frame headers and payloads of those pushes
	PerUpdate float64 `json:"bytes_per_update"`
}

// WireMode is one way a client can subscribe.
type WireMode struct {
	Name    string
	Delta   bool // subscribe with delta:"fossil"
	Compact bool // subscribe with flag 1: pushes carry the channel id
	Deflate bool // offer permessage-deflate
	// Protobuf: the Protobuf encoding (subprotocol centrifuge-protobuf,
	// binary frames); else JSON.
	Protobuf bool
}

// WireModes are the modes MeasureWire compares; the first is the baseline.
// The SDKs always ask for channel compaction, so every mode after the
// first uses it.
var WireModes = []WireMode{
	{Name: "full JSON"},
	{Name: "full JSON, channel id", Compact: true},
	{Name: "deflate", Compact: true, Deflate: true},
	{Name: "delta", Compact: true, Delta: true},
	{Name: "delta + deflate", Compact: true, Delta: true, Deflate: true},
	{Name: "Protobuf full", Compact: true, Protobuf: true},
	{Name: "Protobuf full + deflate", Compact: true, Deflate: true, Protobuf: true},
	{Name: "Protobuf delta", Compact: true, Delta: true, Protobuf: true},
	{Name: "Protobuf delta + deflate", Compact: true, Delta: true, Deflate: true, Protobuf: true},
}

// MeasureWire subscribes one client per WireMode to every cached channel
// whose name starts with prefix, for d, and reports the bytes on the wire
// per delivered update. All clients see the same updates, so the figures
// compare directly.
func MeasureWire(ctx context.Context, wsURL, prefix string, d time.Duration) ([]WireResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return measureWire(ctx, wsURL, prefix, WireModes, nil)
}

// wireProbe lets a test follow a wire run: clients with every subscribe
// reply in, and updates counted, over all clients.
type wireProbe struct {
	subscribed, updates atomic.Int64
}

// measureWire is MeasureWire over modes, until ctx is done.
func measureWire(ctx context.Context, wsURL, prefix string, modes []WireMode, probe *wireProbe) ([]WireResult, error) {
	if probe == nil {
		probe = &wireProbe{}
	}
	base, err := metricsURLOf(wsURL)
	if err != nil {
		return nil, err
	}
	resp, err := http.Get(base + "/v1/channels?limit=10000&prefix=" + prefix)
	if err != nil {
		return nil, err
	}
	var list struct {
		Channels []struct{ Channel string } `json:"channels"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil || len(list.Channels) == 0 {
		return nil, fmt.Errorf("no cached channels with prefix %q (%v)", prefix, err)
	}
	results := make([]WireResult, len(modes))
	var wg sync.WaitGroup
	errs := make(chan error, len(modes))
	for i, mode := range modes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := wireClient(ctx, wsURL, mode, list.Channels, probe)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", mode.Name, err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	return results, nil
}

func wireClient(ctx context.Context, url string, mode WireMode, channels []struct{ Channel string }, probe *wireProbe) (WireResult, error) {
	res := WireResult{Mode: mode.Name}
	var dialer ws.Dialer
	dialer.Extensions = deflateOffer(mode.Deflate)
	if mode.Protobuf {
		dialer.Protocols = []string{pbSubprotocol}
	}
	conn, _, hs, err := dialer.Dial(ctx, url)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	if mode.Deflate && len(hs.Extensions) == 0 {
		return res, fmt.Errorf("the relay did not accept permessage-deflate")
	}
	if mode.Protobuf && hs.Protocol != pbSubprotocol {
		return res, fmt.Errorf("the relay did not accept the %s subprotocol", pbSubprotocol)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // the end of ctx ends the run
	defer stop()
	if mode.Protobuf {
		cmds := pbAppendConnect(nil, 1, "edgebench-wire")
		for i, c := range channels {
			cmds = pbAppendSubscribe(cmds, uint32(i+2), c.Channel, mode.Delta, mode.Compact)
		}
		err = wsutil.WriteClientBinary(conn, cmds)
	} else {
		cmds := []string{`{"id":1,"connect":{"name":"edgebench-wire"}}`}
		for i, c := range channels {
			opts := ""
			if mode.Delta {
				opts += `,"delta":"fossil"`
			}
			if mode.Compact {
				opts += `,"flag":1`
			}
			cmds = append(cmds, fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q%s}}`, i+2, c.Channel, opts))
		}
		err = wsutil.WriteClientText(conn, []byte(strings.Join(cmds, "\n")))
	}
	if err != nil {
		return res, err
	}
	br := bufio.NewReader(conn)
	var inf inflater
	subscribed := 0
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			break // the end of ctx ends the run
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(br, payload); err != nil {
			break
		}
		if h.OpCode != ws.OpText && h.OpCode != ws.OpBinary {
			continue
		}
		if (h.OpCode == ws.OpBinary) != mode.Protobuf {
			return res, fmt.Errorf("unexpected frame opcode %v", h.OpCode)
		}
		text := payload
		if h.Rsv&4 != 0 { // RSV1: compressed
			if text, err = inf.inflate(payload); err != nil {
				return res, err
			}
		}
		var push, ping bool
		var subs int
		if mode.Protobuf {
			if push, ping, subs, err = wireProtobuf(text); err != nil {
				return res, err
			}
		} else {
			push = bytes.HasPrefix(text, []byte(`{"push"`))
			ping = string(text) == "{}"
			if !push && !ping {
				subs = bytes.Count(text, []byte(`"subscribe":{`))
			}
		}
		switch {
		case push:
			if subscribed == len(channels) { // count only after all subscribe replies
				res.Updates++
				res.WireBytes += int64(ws.HeaderSize(h)) + h.Length
				probe.updates.Add(1)
			}
		case ping && mode.Protobuf:
			wsutil.WriteClientBinary(conn, pbPong)
		case ping:
			wsutil.WriteClientText(conn, text)
		default:
			before := subscribed
			subscribed += subs
			if before < len(channels) && subscribed >= len(channels) {
				probe.subscribed.Add(1)
			}
		}
	}
	if res.Updates > 0 {
		res.PerUpdate = float64(res.WireBytes) / float64(res.Updates)
	}
	return res, nil
}

// wireProtobuf reads one Protobuf message of a wire client: whether it is
// a push (relay pushes travel one per message), the server's ping, or how
// many subscribe replies it holds. An error reply is an error.
func wireProtobuf(msg []byte) (push, ping bool, subs int, err error) {
	for len(msg) > 0 {
		var r pbReply
		if msg, err = r.decode(msg); err != nil {
			return false, false, 0, fmt.Errorf("malformed Protobuf reply: %w", err)
		}
		switch {
		case r.HasError:
			return false, false, 0, fmt.Errorf("reply %d: error %d: %s", r.ID, r.ErrCode, r.ErrMessage)
		case r.Empty:
			ping = true
		case r.HasPush:
			push = true
		case r.HasSub:
			subs++
		}
	}
	return push, ping, subs, nil
}

// deflateOffer is the permessage-deflate offer, if on.
func deflateOffer(on bool) []httphead.Option {
	if !on {
		return nil
	}
	return []httphead.Option{wsflate.DefaultParameters.Option()}
}

// inflater decompresses permessage-deflate messages (no context takeover:
// each message on its own), reusing its buffers: the load generator
// inflates every delivery. The zero value is ready; the returned slice is
// valid until the next call.
type inflater struct {
	r   io.ReadCloser
	in  []byte
	src bytes.Reader
	out []byte
}

func (f *inflater) inflate(payload []byte) ([]byte, error) {
	f.in = append(append(f.in[:0], payload...), deflateTail...)
	f.src.Reset(f.in)
	if f.r == nil {
		f.r = flate.NewReader(&f.src)
	} else if err := f.r.(flate.Resetter).Reset(&f.src, nil); err != nil {
		return nil, err
	}
	f.out = f.out[:0]
	for {
		if len(f.out) == cap(f.out) {
			f.out = append(f.out, 0)[:len(f.out)]
		}
		n, err := f.r.Read(f.out[len(f.out):cap(f.out)])
		f.out = f.out[:len(f.out)+n]
		if err == io.EOF {
			return f.out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("inflating a frame: %w", err)
		}
	}
}

// deflateTail ends one permessage-deflate message for a flate reader: the
// 00 00 ff ff the sender strips, then an empty final block.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}
