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
}

// MeasureWire subscribes one client per WireMode to every cached channel
// whose name starts with prefix, for d, and reports the bytes on the wire
// per delivered update. All clients see the same updates, so the figures
// compare directly.
func MeasureWire(ctx context.Context, wsURL, prefix string, d time.Duration) ([]WireResult, error) {
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
	results := make([]WireResult, len(WireModes))
	var wg sync.WaitGroup
	errs := make(chan error, len(WireModes))
	for i, mode := range WireModes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := wireClient(ctx, wsURL, mode, list.Channels, d)
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

func wireClient(ctx context.Context, url string, mode WireMode, channels []struct{ Channel string }, d time.Duration) (WireResult, error) {
	res := WireResult{Mode: mode.Name}
	var dialer ws.Dialer
	dialer.Extensions = deflateOffer(mode.Deflate)
	conn, _, hs, err := dialer.Dial(ctx, url)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	if mode.Deflate && len(hs.Extensions) == 0 {
		return res, fmt.Errorf("the relay did not accept permessage-deflate")
	}
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
	if err := wsutil.WriteClientText(conn, []byte(strings.Join(cmds, "\n"))); err != nil {
		return res, err
	}
	conn.SetReadDeadline(time.Now().Add(d))
	br := bufio.NewReader(conn)
	var inf inflater
	subscribed := 0
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			break // the deadline ends the run
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(br, payload); err != nil {
			break
		}
		if h.OpCode != ws.OpText {
			continue
		}
		text := payload
		if h.Rsv&4 != 0 { // RSV1: compressed
			if text, err = inf.inflate(payload); err != nil {
				return res, err
			}
		}
		switch {
		case bytes.HasPrefix(text, []byte(`{"push"`)):
			if subscribed == len(channels) { // count only after all subscribe replies
				res.Updates++
				res.WireBytes += int64(ws.HeaderSize(h)) + h.Length
			}
		case string(text) == "{}":
			wsutil.WriteClientText(conn, text)
		default:
			subscribed += bytes.Count(text, []byte(`"subscribe":{`))
		}
	}
	if res.Updates > 0 {
		res.PerUpdate = float64(res.WireBytes) / float64(res.Updates)
	}
	return res, nil
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
