package relay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// The accept path. One listener serves both WebSocket clients and plain
// HTTP (metrics, health, REST). The acceptor reads only the request line of
// each new connection: a GET of websocket.path is upgraded by gobwas/ws
// directly on the raw connection (no net/http objects), its socket handed to
// the engine; anything else goes to the net/http server through httpListener.

// acceptor runs the accept loop.
type acceptor struct {
	srv  *Server
	ln   net.Listener
	http *httpListener
}

// handshakeTimeout bounds how long a new connection may take to send its
// request line and headers.
const handshakeTimeout = 10 * time.Second

func (a *acceptor) loop() error {
	backoff := time.Duration(0)
	for {
		nc, err := a.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE/ENFILE and other temporary errors: pause, count,
			// log, carry on; never spin.
			reason := "other"
			switch {
			case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
				reason = "file_limit"
			case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
				reason = "memory"
			}
			a.srv.metrics.acceptErrors.WithLabelValues(reason).Inc()
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			if backoff == 5*time.Millisecond || backoff == time.Second {
				a.srv.log.Warn("accept failed; pausing", "err", err, "pause", backoff)
			}
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go a.handshake(nc)
	}
}

// peekRequestStart returns at least n buffered bytes of the request, or
// fewer once the first line is complete (short requests must not wait for
// bytes that never come), without consuming them.
func peekRequestStart(br *bufio.Reader, n int) ([]byte, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if len(b) >= n || bytes.IndexByte(b, '\n') >= 0 {
			return b, nil
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			b, _ = br.Peek(br.Buffered())
			return b, err
		}
	}
}

// prefixConn reads from r (which holds bytes already read from Conn) before
// reading from Conn.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (a *acceptor) handshake(nc net.Conn) {
	// One deadline for the TLS handshake, the request line and the headers.
	deadline := time.Now().Add(handshakeTimeout)
	if a.srv.tls != nil {
		tc, ok := a.handshakeTLS(nc, deadline)
		if !ok {
			return
		}
		nc = tc
	}
	nc.SetReadDeadline(deadline)
	br := bufio.NewReaderSize(nc, 4096)
	line, err := peekRequestStart(br, len("GET ")+len(a.srv.cfg.WebSocket.Path)+1)
	if err != nil && len(line) == 0 {
		nc.Close()
		return
	}
	wsPath := "GET " + a.srv.cfg.WebSocket.Path
	isWS := bytes.HasPrefix(line, []byte(wsPath)) && len(line) > len(wsPath) && (line[len(wsPath)] == ' ' || line[len(wsPath)] == '?')
	pc := &prefixConn{Conn: nc, r: br}
	if !isWS || a.srv.shuttingDown.Load() {
		nc.SetReadDeadline(time.Time{})
		if !a.http.deliver(pc) {
			nc.Close()
		}
		return
	}
	a.upgrade(nc, br)
}

// errHeadTooLarge: the upgrade request passed websocket.max_handshake_bytes.
var errHeadTooLarge = errors.New("upgrade request larger than websocket.max_handshake_bytes")

// readRequestHead reads the request line and headers, through the blank
// line that ends them, and no further: what follows is WebSocket frames,
// left in br. It holds at most limit bytes (plus br's buffer) whatever the
// client sends: a longer head is errHeadTooLarge.
func readRequestHead(br *bufio.Reader, limit int) ([]byte, error) {
	var head []byte
	lineStart := 0
	for {
		chunk, err := br.ReadSlice('\n')
		if len(head)+len(chunk) > limit {
			return nil, errHeadTooLarge
		}
		head = append(head, chunk...)
		switch {
		case err == bufio.ErrBufferFull:
			continue // a long line: keep reading it
		case err != nil:
			return nil, err
		}
		line := head[lineStart:]
		if len(line) <= 2 && (string(line) == "\r\n" || string(line) == "\n") {
			return head, nil
		}
		lineStart = len(head)
	}
}

// strictHead refuses what RFC 6455 and RFC 9110 do not allow in an
// upgrade request head and gobwas lets through: a control character in a
// header, and a Sec-WebSocket-Key that is repeated or not the base64 of 16
// bytes (RFC 6455 section 4.2.1). head ends with its blank line.
func strictHead(head []byte) error {
	lines := bytes.Split(bytes.TrimRight(head, "\r\n"), []byte("\n"))
	keys := 0
	for _, l := range lines[1:] {
		l = bytes.TrimSuffix(l, []byte("\r"))
		for _, c := range l {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return errors.New("control character in a header")
			}
		}
		name, value, _ := bytes.Cut(l, []byte(":"))
		if !strings.EqualFold(string(bytes.TrimSpace(name)), "Sec-WebSocket-Key") {
			continue
		}
		if keys++; keys > 1 {
			return errors.New("Sec-WebSocket-Key given twice")
		}
		if k, err := base64.StdEncoding.Strict().DecodeString(string(bytes.TrimSpace(value))); err != nil || len(k) != 16 {
			return errors.New("Sec-WebSocket-Key is not the base64 of 16 bytes")
		}
	}
	return nil
}

// headConn is what the upgrader reads and writes: the request head read
// already, then nothing; writes go to the socket.
type headConn struct {
	io.Reader
	io.Writer
}

func (a *acceptor) upgrade(nc net.Conn, br *bufio.Reader) {
	s := a.srv
	addr := addressKey(nc.RemoteAddr().String())
	if reason := s.admission.admit(addr, time.Now()); reason != "" {
		s.metrics.connectionsRefused.WithLabelValues(reason).Inc()
		io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n\r\nconnection refused: "+reason+"\n")
		nc.Close()
		return
	}
	registered := false
	defer func() {
		if !registered {
			s.admission.release(addr)
		}
	}()
	head, err := readRequestHead(br, int(s.cfg.WebSocket.MaxHandshakeBytes))
	status := "431 Request Header Fields Too Large"
	if err == nil {
		err, status = strictHead(head), "400 Bad Request"
	}
	if err != nil {
		s.metrics.handshakeErrors.Inc()
		if err != io.EOF && !errors.Is(err, os.ErrDeadlineExceeded) {
			io.WriteString(nc, "HTTP/1.1 "+status+"\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n"+err.Error()+"\n")
		}
		s.log.Debug("websocket upgrade failed", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	var originOK = true
	var deflate engine.DeflateNegotiation
	codec := protocol.JSON
	u := ws.Upgrader{
		// The encoding: the centrifuge-protobuf subprotocol (echoed in
		// the 101) or ?format=protobuf selects Protobuf; an unknown format
		// is refused with 400, so that a client does not speak one
		// encoding to a server speaking the other.
		Protocol: func(p []byte) bool {
			if string(p) == protocol.Subprotocol {
				codec = protocol.Protobuf
				return true
			}
			return false
		},
		OnRequest: func(uri []byte) error {
			e, err := requestEncoding(uri)
			if err != nil {
				return ws.RejectConnectionError(ws.RejectionStatus(400), ws.RejectionReason(err.Error()))
			}
			if e == protocol.EncodingProtobuf {
				codec = protocol.Protobuf
			}
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if strings.EqualFold(string(key), "Origin") && !s.originAllowed(string(value)) {
				originOK = false
				return ws.RejectConnectionError(ws.RejectionStatus(403), ws.RejectionReason("origin not allowed"))
			}
			return nil
		},
	}
	if s.cfg.WebSocket.Deflate.Enabled {
		u.Negotiate = deflate.Negotiate
	}
	if _, err := u.Upgrade(headConn{bytes.NewReader(head), nc}); err != nil {
		s.metrics.handshakeErrors.Inc()
		s.log.Debug("websocket upgrade failed", "remote", nc.RemoteAddr().String(), "err", err, "origin_ok", originOK)
		nc.Close()
		return
	}
	// Clients should wait for the 101 before sending frames, but some
	// send their first message right behind the request: it is in br.
	var initial []byte
	if n := br.Buffered(); n > 0 {
		initial, _ = br.Peek(n)
	}
	var fd int
	var unbridge func()
	if tc, ok := nc.(*tls.Conn); ok {
		tc.SetDeadline(time.Time{})
		fd, unbridge, err = s.bridgeTLS(tc)
	} else {
		fd, err = detach(nc)
	}
	if err != nil {
		s.log.Warn("detaching upgraded connection", "err", err)
		nc.Close()
		return
	}
	c := &session{srv: s, born: time.Now().UnixNano(), codec: codec, addr: addr, unbridge: unbridge}
	rand.Read(c.id[:])
	c.id[6] = c.id[6]&0x0f | 0x40
	c.id[8] = c.id[8]&0x3f | 0x80
	c.ec = s.engine.NewConn(fd, engine.ConnConfig{Binary: codec.Binary(), WrongFrameType: wrongFrameType(codec), Deflate: deflate}, c)
	if registered = s.addConn(c, initial); !registered {
		unix.Close(fd)
		if unbridge != nil {
			unbridge() // no Closed will come to end it
		}
	}
}

// requestEncoding reads the "format" query parameter of the request URI.
func requestEncoding(uri []byte) (protocol.Encoding, error) {
	_, query, ok := bytes.Cut(uri, []byte("?"))
	if !ok {
		return protocol.EncodingJSON, nil
	}
	q, err := url.ParseQuery(string(query))
	if err != nil {
		return 0, fmt.Errorf("bad query string: %w", err)
	}
	return protocol.ParseFormat(q.Get("format"))
}

// detach takes the socket out of nc (and out of Go's netpoller): it
// duplicates the descriptor, makes the copy non-blocking and closes nc.
func detach(nc net.Conn) (int, error) {
	if pc, ok := nc.(*prefixConn); ok {
		nc = pc.Conn
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, dupErr
	}
	tc.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// httpListener is the net.Listener the net/http server accepts from: the
// connections the acceptor found not to be WebSocket upgrades.
type httpListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newHTTPListener(addr net.Addr) *httpListener {
	return &httpListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *httpListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *httpListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *httpListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *httpListener) Addr() net.Addr { return l.addr }
