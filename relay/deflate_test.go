package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"
)

// deflateClient is a raw client that offers permessage-deflate and reads
// frames itself, so a test sees exactly which frames were compressed.
type deflateClient struct {
	t    *testing.T
	conn net.Conn
	ext  string // the extension the server accepted, as name;param=value
}

func dialDeflate(t *testing.T, url, offer string) *deflateClient {
	t.Helper()
	c := &deflateClient{t: t}
	var d ws.Dialer
	if offer != "" {
		opts, ok := httphead.ParseOptions([]byte(offer), nil)
		if !ok {
			t.Fatalf("bad offer %q", offer)
		}
		d.Extensions = opts
	}
	conn, _, hs, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hs.Extensions {
		c.ext += string(e.Name)
		e.Parameters.ForEach(func(k, v []byte) bool {
			c.ext += ";" + string(k)
			if len(v) > 0 {
				c.ext += "=" + string(v)
			}
			return true
		})
	}
	t.Cleanup(func() { conn.Close() })
	c.conn = conn
	return c
}

// write sends one frame with the given first-byte bits (FIN, RSV, opcode).
func (c *deflateClient) write(first byte, payload []byte) {
	c.t.Helper()
	h := ws.Header{Fin: first&0x80 != 0, Rsv: (first >> 4) & 7, OpCode: ws.OpCode(first & 0xf), Length: int64(len(payload)), Masked: true, Mask: ws.NewMask()}
	p := bytes.Clone(payload)
	ws.Cipher(p, h.Mask, 0)
	if err := ws.WriteHeader(c.conn, h); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(p); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next data frame's text (decompressed) and whether it
// came compressed; a close frame is returned as "close <code>".
func (c *deflateClient) read() (string, bool) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := ws.ReadFrame(c.conn)
		if err != nil {
			c.t.Fatal(err)
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return fmt.Sprintf("close %d", code), false
		case ws.OpText:
			if f.Header.Rsv&4 == 0 {
				return string(f.Payload), false
			}
			r := flate.NewReader(io.MultiReader(bytes.NewReader(f.Payload), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
			out, err := io.ReadAll(r)
			if err != nil {
				c.t.Fatalf("server sent corrupt deflate data: %v", err)
			}
			return string(out), true
		}
	}
}

func compress(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	w.Write([]byte(s))
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// TestDeflateNegotiation: the relay answers permessage-deflate offers with
// no context takeover on both sides, honours a limit on its window, and
// does not negotiate when configured off.
func TestDeflateNegotiation(t *testing.T) {
	kafka := newKafka(t)
	on := startRelay(t, testConfig(kafka.ListenAddrs()))
	offCfg := testConfig(kafka.ListenAddrs())
	offCfg.WebSocket.Deflate.Enabled = false
	off := startRelay(t, offCfg)
	for _, tt := range []struct {
		name, url, offer, want string
	}{
		{"browser offer", on.url(), "permessage-deflate; client_max_window_bits", "permessage-deflate;server_no_context_takeover;client_no_context_takeover"},
		{"window limit", on.url(), "permessage-deflate; server_max_window_bits=10", "permessage-deflate;server_no_context_takeover;client_no_context_takeover;server_max_window_bits=10"},
		{"first valid offer wins", on.url(), "permessage-deflate; server_max_window_bits=99, permessage-deflate", "permessage-deflate;server_no_context_takeover;client_no_context_takeover"},
		{"no offer", on.url(), "", ""},
		{"unknown extension", on.url(), "x-webkit-deflate-frame", ""},
		{"configured off", off.url(), "permessage-deflate", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialDeflate(t, tt.url, tt.offer)
			if got := c.ext; got != tt.want {
				t.Fatalf("Sec-WebSocket-Extensions %q, want %q", c.ext, tt.want)
			}
		})
	}
}

// TestDeflateMessages: compressed commands are understood, large frames go
// out compressed, small ones and those past the client's window plain, and
// every misuse of RSV1 or corrupt data gets its close code.
func TestDeflateMessages(t *testing.T) {
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch = "odds:tennis:atp:deflate-1:winner"
	big := fmt.Sprintf(`{"seq":1,"names":%q}`, strings.Repeat("Alcaraz Sinner ", 40)) // ~600 B, compressible
	r.waitCached(t, ch, produce(t, prod, "odds", ch, big))

	t.Run("compressed command, compressed reply", func(t *testing.T) {
		c := dialDeflate(t, r.url(), "permessage-deflate")
		c.write(0xc1, compress(t, `{"id":1,"connect":{}}`+"\n"+fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch)))
		if msg, _ := c.read(); !strings.Contains(msg, `"connect"`) || !strings.Contains(msg, `"Alcaraz Sinner`) {
			t.Fatalf("reply %s", msg)
		}
		produce(t, prod, "odds", ch, strings.Replace(big, `"seq":1`, `"seq":2`, 1))
		msg, z := c.read()
		if !z || !strings.Contains(msg, `"seq":2`) {
			t.Fatalf("push compressed=%v: %.80s", z, msg)
		}
		c.write(0xc1, compress(t, `{"id":3,"ping":{}}`)) // small: compressed by the client anyway
		if msg, z := c.read(); z || msg != `{"id":3,"ping":{}}` {
			t.Fatalf("ping reply compressed=%v: %s", z, msg)
		}
	})
	t.Run("window limit", func(t *testing.T) {
		c := dialDeflate(t, r.url(), "permessage-deflate; server_max_window_bits=9") // 512 bytes
		c.write(0x81, []byte(`{"id":1,"connect":{}}`+"\n"+fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, ch)))
		if _, z := c.read(); z {
			t.Fatal("a reply over the client's 512-byte window was compressed")
		}
	})

	ping := compress(t, `{"id":1,"connect":{}}`)
	bomb := compress(t, `{"id":1,"connect":{"name":"`+strings.Repeat("a", 200<<10)+`"}}`) // over 128 KiB inflated, ~200 B on the wire
	for _, tt := range []struct {
		name   string
		offer  string
		frames [][]byte // first byte, then payload
		want   string
	}{
		{"RSV1 without negotiation", "", [][]byte{{0xc1}, ping}, "close 1002"},
		{"RSV1 on a continuation", "permessage-deflate", [][]byte{{0x41}, ping[:2], {0xc0}, ping[2:]}, "close 1002"},
		{"RSV1 on a ping", "permessage-deflate", [][]byte{{0xc9}, nil}, "close 1002"},
		{"RSV2", "permessage-deflate", [][]byte{{0xa1}, ping}, "close 1002"},
		{"corrupt data", "permessage-deflate", [][]byte{{0xc1}, {0xff, 0xff, 0xff, 0xff}}, "close 1007"},
		{"inflates past max_message_bytes", "permessage-deflate", [][]byte{{0xc1}, bomb}, "close 1009"},
		{"invalid UTF-8 once inflated", "permessage-deflate", [][]byte{{0xc1}, compress(t, "\xff\xfe")}, "close 1007"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bystander := dial(t, r.url())
			bystander.connect()
			c := dialDeflate(t, r.url(), tt.offer)
			for i := 0; i < len(tt.frames); i += 2 {
				c.write(tt.frames[i][0], tt.frames[i+1])
			}
			if got, _ := c.read(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			bystander.send(`{"id":9,"ping":{}}`)
			if rep := bystander.mustNext(); rep["id"] != 9.0 {
				t.Fatalf("bystander got %v", rep)
			}
		})
	}
}

// TestDeflatePythonWebsockets: Debian's python3-websockets, a client
// nobody here wrote, negotiates permessage-deflate with the relay and reads
// every value produced into Kafka intact.
func TestDeflatePythonWebsockets(t *testing.T) {
	const python = "/usr/bin/python3" // Debian's, where python3-websockets lives
	if err := exec.Command(python, "-c", "import websockets").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3-websockets missing (scripts/test installs it): %v", err)
		}
		t.Skip("python3-websockets missing; run scripts/test")
	}
	kafka := newKafka(t)
	r := startRelay(t, testConfig(kafka.ListenAddrs()))
	prod := newProducer(t, kafka.ListenAddrs())
	const ch, live = "odds:football:epl:py-1:1x2", 30
	var want []string
	want = append(want, sdkValue(0))
	r.waitCached(t, ch, produce(t, prod, "odds", ch, want[0]))

	script, _ := filepath.Abs("../tests/python/deflate_check.py")
	cmd := exec.Command(python, script)
	cmd.Env = append(os.Environ(), "EDGERELAY_URL="+r.url(), "CHANNEL="+ch, fmt.Sprintf("COUNT=%d", live+1))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	lines.Buffer(nil, 1<<20)
	if !lines.Scan() || !strings.Contains(lines.Text(), "PerMessageDeflate") {
		t.Fatalf("python client did not negotiate permessage-deflate: %s", lines.Text())
	}
	if !lines.Scan() { // the cached value: the subscription is live
		t.Fatal("no cached value")
	}
	got := []string{lines.Text()}
	for i := 1; i <= live; i++ {
		want = append(want, sdkValue(i))
		produce(t, prod, "odds", ch, want[i])
	}
	for lines.Scan() {
		got = append(got, lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("deflate_check.py: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d publications, want %d", len(got), len(want))
	}
	for i := range want {
		var p struct{ Data json.RawMessage }
		if err := json.Unmarshal([]byte(got[i]), &p); err != nil {
			t.Fatal(err)
		}
		if !jsonEqual(p.Data, []byte(want[i])) {
			t.Fatalf("publication %d: got %s, want %s", i, p.Data, want[i])
		}
	}
	_, body := r.get(t, "/metrics")
	if metric(body, `edgerelay_publication_bytes_written_total{compression="deflate",encoding="json",variant="full"}`) <= 0 {
		t.Fatalf("nothing went compressed:\n%s", grep(body, "publication_bytes"))
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}
