package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgerelay/edgerelay/delta"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// CeilingConfig is edgebench ceiling: the bare writer edgerelay's CPU per
// delivery is compared against (docs/performance.md, "A ceiling").
type CeilingConfig struct {
	Brokers []string
	Topic   string // the topic edgebench fanout feeds
	// Header names the record header holding the channel, as the relay's
	// ingest reads it; a record without it goes to the channel named by
	// its key.
	Header string
}

// ceilingLastRecords is how many of each partition's last records the
// ceiling reads at start: the relay's default ingest.start.last_records.
const ceilingLastRecords = 10_000

// maxCeilingMessage bounds a client message; a larger one is answered
// with close 1009.
const maxCeilingMessage = 64 << 10

// Close codes the ceiling sends: 3501 (the relay's "bad request") for
// anything it does not do, so that a client asking for more fails
// visibly instead of measuring something else.
const (
	ceilingBadRequest = 3501
	ceilingTooBig     = 1009
)

// ceiling holds the subscribers of each channel. One lock guards the
// lists and every write to a subscribed socket: the Kafka loop holds it
// while it writes an update to a channel's subscribers, a connection's
// goroutine while it writes its replies and (un)registers.
type ceiling struct {
	mu    sync.Mutex
	chans map[string][]*ceilingSub
	// last is each channel's latest value: the base of the next patch,
	// and what a delta subscribe reply carries. Written by the Kafka loop
	// under mu (which alone writes it, so it reads it without).
	last       map[string]*ceilingValue
	conns      int
	deliveries uint64
	dropped    int // connections closed because a write failed or was short
}

// ceilingValue is a channel's latest value and its protocol offset.
type ceilingValue struct {
	data   []byte
	offset uint64
}

// ceilingPeer is one client connection; fd is conn's socket, written with
// plain write(2) by the Kafka loop.
type ceilingPeer struct {
	conn   net.Conn
	fd     int
	subs   []*ceilingSub
	closed bool
}

// subscribed reports whether p is subscribed to ch.
func (p *ceilingPeer) subscribed(ch string) bool {
	return slices.ContainsFunc(p.subs, func(s *ceilingSub) bool { return s.ch == ch })
}

// ceilingSub is a peer's place in a channel's list. A delta subscriber
// (delta "fossil") gets the channel's previous value patched once it holds
// it (base), the whole value before.
type ceilingSub struct {
	peer  *ceilingPeer
	ch    string
	idx   int
	delta bool
	base  bool
}

// RunCeiling serves ln until ctx is done: it upgrades every connection to
// WebSocket, answers the JSON Centrifugo connect and subscribe commands
// with minimal replies, and writes each record of cfg.Topic, as the
// relay's JSON publication push in one prepared text frame, to every
// subscriber of its channel with one write(2) each, from the goroutine
// that polls Kafka. No hub, no queues, no heartbeat, no history: a
// subscriber whose socket does not take the whole frame at once is
// closed (counted as dropped). JSON only; a subscribe may ask for fossil
// delta, and then gets what the relay sends (relay/protocol
// AppendDeltaPush): the channel's latest value in the subscribe reply,
// then patches against the channel's previous value, computed once per
// record for all (the whole value when the patch is not smaller or not
// UTF-8, and to a subscriber that holds no value). Like the relay it
// first reads each partition's last 10,000 records, and accepts clients
// once it has (at most 10 s). Recovery, Protobuf and every other command
// get close 3501.
func RunCeiling(ctx context.Context, cfg CeilingConfig, ln net.Listener, log io.Writer) error {
	if cfg.Header == "" {
		cfg.Header = "channel"
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ClientID("edgebench-ceiling"),
		kgo.ConsumeTopics(cfg.Topic),
		// As the relay's ingest starts (ingest.start.last_records): the
		// last records, so that each channel's latest value is known
		// before the first client subscribes.
		kgo.ConsumeStartOffset(kgo.NewOffset().AtEnd().Relative(-ceilingLastRecords)),
		// The relay's ingest fetch options (relay/ingest).
		kgo.FetchMaxWait(time.Second), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.MetadataMaxAge(30*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, cfg.Topic)
	if err != nil {
		return fmt.Errorf("ceiling: listing %s's end offsets: %w", cfg.Topic, err)
	}
	behind := map[int32]int64{} // partition → its end offset, until read up to it
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			behind[o.Partition] = o.Offset
		}
	})
	c := &ceiling{chans: map[string][]*ceilingSub{}, last: map[string]*ceilingValue{}}
	go func() { <-ctx.Done(); ln.Close() }()
	primed := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { c.consume(ctx, cl, cfg.Header, behind, primed) })
	// Clients only once the latest values are in, as the relay is ready
	// only then.
	select {
	case <-primed:
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		fmt.Fprintf(log, "edgebench: ceiling: still reading %s's last records after 10 s; serving anyway\n", cfg.Topic)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(log, "edgebench: ceiling: accept: %v\n", err) // e.g. out of file descriptors
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go c.serve(conn)
	}
	wg.Wait()
	c.mu.Lock()
	fmt.Fprintf(log, "edgebench: ceiling: %d deliveries, %d connections open, %d dropped (a write short or failed)\n", c.deliveries, c.conns, c.dropped)
	c.mu.Unlock()
	return nil
}

// consume writes every record to its channel's subscribers. It closes
// primed once it has read every partition of behind up to its offset
// (at once if behind is empty).
func (c *ceiling) consume(ctx context.Context, cl *kgo.Client, header string, behind map[int32]int64, primed chan struct{}) {
	if len(behind) == 0 {
		close(primed)
	}
	// Each record's three frames, built as the relay builds its own
	// (relay/protocol, then engine.FinishFrame in front): the full value,
	// the value for delta subscribers, and the patch against the channel's
	// previous value.
	plainBuf, wholeBuf, patchedBuf := frameBuf(), frameBuf(), frameBuf()
	var patch []byte
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if end, ok := behind[r.Partition]; ok && r.Offset+1 >= end {
				delete(behind, r.Partition)
				if len(behind) == 0 {
					close(primed)
				}
			}
			ch := string(r.Key)
			for _, h := range r.Headers {
				if h.Key == header {
					ch = string(h.Value)
				}
			}
			off := uint64(r.Offset) + 1
			plainBuf = protocol.JSON.AppendPublicationPush(plainBuf[:engine.MaxHeader], ch, 0, r.Value, off)
			plain := engine.FinishFrame(plainBuf, engine.HeadText)
			wholeBuf = protocol.JSON.AppendDeltaPush(wholeBuf[:engine.MaxHeader], ch, 0, r.Value, off, false)
			whole := engine.FinishFrame(wholeBuf, engine.HeadText)
			var patched []byte // nil: the whole value for every delta subscriber
			v := c.last[ch]    // only this goroutine writes c.last
			if v != nil {
				patch = delta.Encode(patch[:0], v.data, r.Value)
				if len(patch) < len(r.Value) && utf8.Valid(patch) { // else the relay sends the whole value
					patchedBuf = protocol.JSON.AppendDeltaPush(patchedBuf[:engine.MaxHeader], ch, 0, patch, off, true)
					patched = engine.FinishFrame(patchedBuf, engine.HeadText)
				}
			}
			c.mu.Lock()
			if v == nil {
				v = &ceilingValue{}
				c.last[ch] = v
			}
			v.data, v.offset = append(v.data[:0], r.Value...), off
			subs := c.chans[ch]
			for i := len(subs) - 1; i >= 0; i-- { // backwards: a drop moves an entry already written to
				s := subs[i]
				p := s.peer
				b := plain
				switch {
				case s.delta && s.base && patched != nil:
					b = patched
				case s.delta:
					b, s.base = whole, true
				}
				n, err := syscall.Write(p.fd, b)
				for err == syscall.EINTR {
					n, err = syscall.Write(p.fd, b)
				}
				if err != nil || n != len(b) {
					c.dropped++
					c.dropLocked(p)
					continue
				}
				c.deliveries++
			}
			c.mu.Unlock()
		})
	}
}

// frameBuf is a buffer for one frame: MaxHeader bytes for the header,
// then the payload (engine.FinishFrame).
func frameBuf() []byte { return make([]byte, engine.MaxHeader, 1024) }

// dropLocked takes p out of every channel and closes it; c.mu held.
func (c *ceiling) dropLocked(p *ceilingPeer) {
	if p.closed {
		return
	}
	p.closed = true
	if len(p.subs) > 0 {
		c.conns--
	}
	for _, s := range p.subs {
		list := c.chans[s.ch]
		last := list[len(list)-1]
		list[s.idx], last.idx = last, s.idx
		list[len(list)-1] = nil
		c.chans[s.ch] = list[:len(list)-1]
	}
	p.conn.Close()
}

// ceilingCommand is what the ceiling reads of a client command.
type ceilingCommand struct {
	ID        uint32           `json:"id"`
	Connect   *json.RawMessage `json:"connect"`
	Subscribe *struct {
		Channel string `json:"channel"`
		Delta   string `json:"delta"` // "" or "fossil"
		Recover bool   `json:"recover"`
	} `json:"subscribe"`
}

// serve upgrades conn, then reads client messages until it closes.
func (c *ceiling) serve(conn net.Conn) {
	p := &ceilingPeer{conn: conn}
	defer func() {
		c.mu.Lock()
		c.dropLocked(p)
		c.mu.Unlock()
	}()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ws.Upgrade(conn); err != nil {
		return // gobwas answered 400 (e.g. edgebench asking for /metrics)
	}
	conn.SetDeadline(time.Time{})
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) { p.fd = int(fd) })
	var reply []byte
	for {
		h, err := ws.ReadHeader(conn)
		if err != nil {
			return
		}
		if h.Length > maxCeilingMessage {
			c.closeWith(p, ceilingTooBig, "message too big")
			return
		}
		msg := make([]byte, h.Length)
		if _, err := io.ReadFull(conn, msg); err != nil {
			return
		}
		ws.Cipher(msg, h.Mask, 0)
		switch {
		case h.OpCode == ws.OpClose:
			return
		case h.OpCode.IsControl():
			continue // no pings are sent; a client's own are not answered
		case h.OpCode != ws.OpText || !h.Fin:
			c.closeWith(p, ceilingBadRequest, "ceiling: JSON messages in one frame only")
			return
		}
		var cmds []ceilingCommand
		var channels []string
		for line := range bytes.SplitSeq(msg, []byte{'\n'}) {
			var cmd ceilingCommand
			switch {
			case len(bytes.TrimSpace(line)) == 0 || bytes.Equal(line, []byte("{}")):
				continue
			case json.Unmarshal(line, &cmd) != nil:
			case cmd.Connect != nil:
				cmds = append(cmds, cmd)
				continue
			case cmd.Subscribe != nil && (cmd.Subscribe.Delta == "" || cmd.Subscribe.Delta == "fossil") && !cmd.Subscribe.Recover &&
				cmd.Subscribe.Channel != "" && !p.subscribed(cmd.Subscribe.Channel) && !slices.Contains(channels, cmd.Subscribe.Channel):
				cmds = append(cmds, cmd)
				channels = append(channels, cmd.Subscribe.Channel)
				continue
			}
			c.closeWith(p, ceilingBadRequest, "ceiling: connect and subscribe (plain or fossil delta) only")
			return
		}
		if len(cmds) == 0 {
			continue
		}
		c.mu.Lock()
		// Replies and registration under the lock: no push can come
		// before its subscribe reply or into the middle of a reply, and a
		// delta subscriber's reply holds the value the next patch is
		// against.
		var subs []*ceilingSub
		reply = reply[:0]
		for _, cmd := range cmds {
			if cmd.Connect != nil {
				reply = fmt.Appendf(reply, `{"id":%d,"connect":{"client":"ceiling","version":"ceiling"}}`+"\n", cmd.ID)
				continue
			}
			s := &ceilingSub{peer: p, ch: cmd.Subscribe.Channel, delta: cmd.Subscribe.Delta != ""}
			subs = append(subs, s)
			if v := c.last[s.ch]; s.delta && v != nil {
				// As the relay: the channel's latest value, the base of
				// the first patch.
				reply = fmt.Appendf(reply, `{"id":%d,"subscribe":{"delta":true,"publications":[{"data":`, cmd.ID)
				reply = protocol.AppendJSONString(reply, v.data)
				reply = fmt.Appendf(reply, `,"offset":%d}]}}`+"\n", v.offset)
				s.base = true
			} else if s.delta {
				reply = fmt.Appendf(reply, `{"id":%d,"subscribe":{"delta":true}}`+"\n", cmd.ID)
			} else {
				reply = fmt.Appendf(reply, `{"id":%d,"subscribe":{}}`+"\n", cmd.ID)
			}
		}
		err = ws.WriteFrame(conn, ws.NewTextFrame(reply[:len(reply)-1]))
		if err == nil && !p.closed {
			if p.subs == nil && len(subs) > 0 {
				c.conns++
			}
			for _, s := range subs {
				s.idx = len(c.chans[s.ch])
				c.chans[s.ch] = append(c.chans[s.ch], s)
				p.subs = append(p.subs, s)
			}
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// closeWith sends a close frame with code and reason; the caller then
// closes the connection.
func (c *ceiling) closeWith(p *ceilingPeer, code ws.StatusCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !p.closed {
		ws.WriteFrame(p.conn, ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
	}
}
