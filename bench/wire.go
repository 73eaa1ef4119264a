package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// WireResult is what one client mode received in a wire-size run.
type WireResult struct {
	Mode      string  `json:"mode"`
	Updates   int     `json:"updates"`    // publication pushes received
	WireBytes int64   `json:"wire_bytes"` // frame headers and payloads of those pushes
	PerUpdate float64 `json:"bytes_per_update"`
}

// MeasureWire subscribes one client per mode ("full", "delta") to every
// cached channel whose name starts with prefix, for d, and reports the
// bytes on the wire per delivered update. Both clients see the same
// updates, so the figures compare directly.
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
	modes := []string{"full", "delta"}
	results := make([]WireResult, len(modes))
	var wg sync.WaitGroup
	errs := make(chan error, len(modes))
	for i, mode := range modes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := wireClient(ctx, wsURL, mode, list.Channels, d)
			if err != nil {
				errs <- err
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

func wireClient(ctx context.Context, url, mode string, channels []struct{ Channel string }, d time.Duration) (WireResult, error) {
	res := WireResult{Mode: mode}
	conn, _, _, err := ws.Dial(ctx, url)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	cmds := []string{`{"id":1,"connect":{"name":"edgebench-wire"}}`}
	for i, c := range channels {
		delta := ""
		if mode == "delta" {
			delta = `,"delta":"fossil"`
		}
		cmds = append(cmds, fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q%s}}`, i+2, c.Channel, delta))
	}
	if err := wsutil.WriteClientText(conn, []byte(strings.Join(cmds, "\n"))); err != nil {
		return res, err
	}
	conn.SetReadDeadline(time.Now().Add(d))
	br := bufio.NewReader(conn)
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
		switch {
		case strings.HasPrefix(string(payload), `{"push"`):
			if subscribed == len(channels) { // count only after all subscribe replies
				res.Updates++
				res.WireBytes += int64(ws.HeaderSize(h)) + h.Length
			}
		case string(payload) == "{}":
			wsutil.WriteClientText(conn, payload)
		default:
			subscribed += strings.Count(string(payload), `"subscribe":{`)
		}
	}
	if res.Updates > 0 {
		res.PerUpdate = float64(res.WireBytes) / float64(res.Updates)
	}
	return res, nil
}
