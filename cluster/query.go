package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Queries: a node asks every other alive member a question and collects
// their answers (the relay's cluster-wide presence). A query and each
// answer are one memberlist reliable message (TCP, encrypted with
// Config.SecretKey like the rest of the gossip):
//
//	query:  'q' id(uint64) len(origin)(uint16) origin body
//	answer: 'a' id(uint64) body
//
// Bounds: at most maxPendingQueries of this node's queries wait for
// answers at once (more get ErrBusy); at most maxQueryHandlers answers
// are being computed at once (a query beyond that is dropped: the asker
// counts the member as not answering); a query body is at most
// MaxQueryBytes and an answer at most MaxAnswerBytes (larger ones are
// dropped on both sides).

// Query sizes and concurrency.
const (
	MaxQueryBytes     = 4 << 10
	MaxAnswerBytes    = 1 << 20
	maxPendingQueries = 256
	maxQueryHandlers  = 16
)

// ErrBusy: too many of this node's queries are waiting for answers.
var ErrBusy = errors.New("cluster: too many queries in flight")

// QueryFunc answers another member's query. It runs on a goroutine of the
// node's own, at most maxQueryHandlers at once; it owns req and may block
// briefly; the answer it returns is sent and not kept (nil: no answer).
type QueryFunc func(req []byte) []byte

// queries is a Node's query state.
type queries struct {
	handler QueryFunc     // set before Start
	slots   chan struct{} // handler concurrency

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan []byte
}

// SetQueryHandler sets what answers other members' queries; call it
// before Start. Without one, queries from others are not answered.
func (n *Node) SetQueryHandler(fn QueryFunc) { n.q.handler = fn }

// Query sends req to every other member that is alive, and returns the
// answers that arrive before ctx is done or all have answered, and how
// many members were asked. With gossip off, or alone, it asks nobody and
// returns at once.
func (n *Node) Query(ctx context.Context, req []byte) (answers [][]byte, asked int, err error) {
	if len(req) > MaxQueryBytes {
		return nil, 0, errors.New("cluster: query too large")
	}
	if n.ml == nil {
		return nil, 0, nil
	}
	var targets []*memberlist.Node
	for _, m := range n.Members() {
		if m.Name != n.cfg.Name && m.State == Alive {
			targets = append(targets, gossipNode(m))
		}
	}
	if len(targets) == 0 {
		return nil, 0, nil
	}
	q := &n.q
	q.mu.Lock()
	if len(q.pending) >= maxPendingQueries {
		q.mu.Unlock()
		return nil, len(targets), ErrBusy
	}
	q.next++
	id := q.next
	ch := make(chan []byte, len(targets))
	q.pending[id] = ch
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
	}()

	msg := make([]byte, 0, 11+len(n.cfg.Name)+len(req))
	msg = append(msg, 'q')
	msg = binary.BigEndian.AppendUint64(msg, id)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(n.cfg.Name)))
	msg = append(msg, n.cfg.Name...)
	msg = append(msg, req...)
	sent := 0
	for _, t := range targets {
		if err := n.ml.SendReliable(t, msg); err != nil {
			n.log.Debug("cluster query not sent", "member", t.Name, "err", err)
			continue
		}
		sent++
	}
	for len(answers) < sent {
		select {
		case a := <-ch:
			answers = append(answers, a)
		case <-ctx.Done():
			return answers, len(targets), nil
		}
	}
	return answers, len(targets), nil
}

// notifyMsg handles a query or an answer; msg is memberlist's buffer,
// valid only during the call.
func (n *Node) notifyMsg(msg []byte) {
	if len(msg) < 9 {
		return
	}
	id := binary.BigEndian.Uint64(msg[1:9])
	switch msg[0] {
	case 'a':
		if len(msg)-9 > MaxAnswerBytes {
			return
		}
		n.q.mu.Lock()
		ch := n.q.pending[id]
		n.q.mu.Unlock()
		if ch != nil {
			select {
			case ch <- append([]byte(nil), msg[9:]...):
			default: // more answers than members asked: a duplicate
			}
		}
	case 'q':
		if len(msg) < 11 || n.q.handler == nil {
			return
		}
		nameLen := int(binary.BigEndian.Uint16(msg[9:11]))
		if len(msg) < 11+nameLen || len(msg)-11-nameLen > MaxQueryBytes {
			return
		}
		origin := string(msg[11 : 11+nameLen])
		req := append([]byte(nil), msg[11+nameLen:]...)
		select {
		case n.q.slots <- struct{}{}:
		default:
			n.log.Debug("cluster query dropped: handlers busy", "from", origin)
			return
		}
		go func() {
			defer func() { <-n.q.slots }()
			n.answer(origin, id, n.q.handler(req))
		}()
	}
}

// answer sends body to the member called origin, if it is still known.
func (n *Node) answer(origin string, id uint64, body []byte) {
	if body == nil || len(body) > MaxAnswerBytes {
		return
	}
	for _, m := range n.Members() {
		if m.Name != origin || m.State == Dead || m.State == Left {
			continue
		}
		msg := append(binary.BigEndian.AppendUint64([]byte{'a'}, id), body...)
		if err := n.ml.SendReliable(gossipNode(m), msg); err != nil {
			n.log.Debug("cluster answer not sent", "member", origin, "err", err)
		}
		return
	}
}

// gossipNode is what SendReliable needs of m: its name and address.
// (memberlist's own Members share Node structs it goes on writing to, so
// the node's copies are used instead.)
func gossipNode(m Member) *memberlist.Node {
	host, port, _ := splitHostPort(m.Address)
	return &memberlist.Node{Name: m.Name, Addr: net.ParseIP(host), Port: uint16(port)}
}
