package relay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// TLS on the relay's own listener, for operators who run it without a
// TLS-terminating load balancer (docs/security.md, "TLS").
//
// The engine writes one prepared frame to many sockets with writev; it
// cannot encrypt per connection. So a TLS WebSocket is bridged: the
// acceptor completes the TLS handshake and the upgrade on the tls.Conn,
// then gives the engine one end of a Unix socket pair and copies bytes
// between the other end and the tls.Conn with two goroutines (tlsBridge).
// The engine sees an ordinary non-blocking stream socket, and its
// slow-client rules work unchanged: a client that does not read fills the
// TLS connection, then the bridge stops reading the pair, then the engine
// sees EAGAIN. The cost per TLS WebSocket is three descriptors (the TCP
// socket and the pair) and two goroutines, which is why large fleets
// should terminate TLS in front of the relay. Plain-HTTP requests (metrics,
// health, REST) are served by net/http over the tls.Conn.

// tlsFilesPerConn: a TLS WebSocket holds its TCP socket and the pair.
const tlsFilesPerConn = 3

// bridgeBuffer is the send buffer of the engine's end of a TLS bridge.
const bridgeBuffer = 32 << 10

// TLSConfig turns TLS on for the listener when both files are set.
type TLSConfig struct {
	// CertFile is a PEM certificate chain, leaf first; KeyFile its PEM
	// private key. Both files are re-read when either changes on disk
	// (checked at most every ReloadCheck, on a new connection's
	// handshake), so a renewed certificate needs no restart; a pair that
	// does not load keeps the previous one in use.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ReloadCheck is how often at most the files are looked at (stat).
	ReloadCheck time.Duration `yaml:"reload_check"`
}

// Enabled reports whether the listener speaks TLS.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate reports every invalid field, each named under prefix.
func (c TLSConfig) Validate(prefix string) error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if c.CertFile == "" || c.KeyFile == "" {
		errs = append(errs, fmt.Errorf("%s: cert_file and key_file must be set together", prefix))
	}
	if c.ReloadCheck < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("%s.reload_check: must be at least 100ms", prefix))
	}
	return errors.Join(errs...)
}

// certReloader holds the listener's certificate and reloads it when the
// files change. Safe for concurrent use: GetCertificate runs on every
// handshake goroutine. One handshake at a time looks at the files (mu);
// the others meanwhile serve the certificate held, so that a slow or hung
// disk delays one handshake, not all.
type certReloader struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger
	onReload          func(ok bool, cert *tls.Certificate)

	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex   // held while the files are looked at
	stamp   [2]fileStamp // cert, key as last loaded (or last failed)
	checked time.Time
}

// fileStamp identifies a version of a file without reading it: the file
// the path leads to (device and inode: a symlink pointed elsewhere, as a
// Kubernetes Secret volume's ..data is, or a rename over it), its
// modification time and size (a rewrite in place), and its change time
// (a chmod or chown that makes an unreadable key readable).
type fileStamp struct {
	dev, ino    uint64
	mod, change int64 // unix nanos
	size        int64
}

func stampOf(path string) (fileStamp, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileStamp{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return fileStamp{dev: uint64(st.Dev), ino: uint64(st.Ino), mod: st.Mtim.Nano(), change: st.Ctim.Nano(), size: st.Size}, nil
}

// newCertReloader loads the pair once; a pair that does not load is an
// error (the relay refuses to start without a certificate).
func newCertReloader(c TLSConfig, log *slog.Logger, onReload func(ok bool, cert *tls.Certificate)) (*certReloader, error) {
	r := &certReloader{certFile: c.CertFile, keyFile: c.KeyFile, every: c.ReloadCheck, log: log, onReload: onReload}
	stamp, err := r.stamps()
	var cert *tls.Certificate
	if err == nil {
		cert, err = loadPair(c.CertFile, c.KeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	r.cert.Store(cert)
	r.stamp, r.checked = stamp, time.Now()
	onReload(true, cert)
	return r, nil
}

func (r *certReloader) stamps() ([2]fileStamp, error) {
	c, err := stampOf(r.certFile)
	if err != nil {
		return [2]fileStamp{}, err
	}
	k, err := stampOf(r.keyFile)
	return [2]fileStamp{c, k}, err
}

// loadPair reads and parses the pair, with the leaf parsed for expiry.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}

// GetCertificate is tls.Config.GetCertificate. It stats the files at most
// once per r.every; a changed pair is loaded on that handshake, and a pair
// that fails to load (a renewal half written, a key that does not match)
// is logged, counted and retried once either file changes again.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !r.mu.TryLock() {
		return r.cert.Load(), nil // another handshake is looking at the files
	}
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.every {
		return r.cert.Load(), nil
	}
	r.checked = now
	stamp, err := r.stamps()
	if err != nil || stamp == r.stamp {
		return r.cert.Load(), nil // a file missing for a moment mid-rename: keep serving
	}
	r.stamp = stamp
	cert, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		r.log.Warn("tls certificate not reloaded; serving the previous one", "cert_file", r.certFile, "err", err)
		r.onReload(false, nil)
		return r.cert.Load(), nil
	}
	r.cert.Store(cert)
	r.log.Info("tls certificate reloaded", "cert_file", r.certFile, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	r.onReload(true, cert)
	return cert, nil
}

// serverTLS is the listener's tls.Config: TLS 1.2 and up, HTTP/1.1 only
// (a WebSocket upgrade is an HTTP/1.1 request; the acceptor does not
// speak HTTP/2).
func serverTLS(r *certReloader) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, GetCertificate: r.GetCertificate}
}

// bridgeTLS is tlsBridge, counted in edgerelay_tls_bridged_connections.
func (s *Server) bridgeTLS(tc *tls.Conn) (int, func(), error) {
	s.tlsBridged.Inc()
	// The engine decides when a client is too slow (stall_timeout, then
	// the close frame's write_timeout); the bridge's own deadline, twice
	// that, only ends a bridge the engine has already given up on.
	ws := s.cfg.WebSocket
	fd, abort, err := tlsBridge(tc, 2*(ws.StallTimeout+ws.WriteTimeout), s.tlsBridged.Dec)
	if err != nil {
		s.tlsBridged.Dec()
	}
	return fd, abort, err
}

// tlsBridge gives the engine a socket for an upgraded TLS connection: it
// returns the engine's end of a Unix socket pair (non-blocking, owned by
// the caller) and copies between the other end and tc until either side
// ends, then closes both and calls closed. writeTimeout bounds each write
// to the client, so a client that stops reading cannot hold the bridge for
// ever once the engine has given up on it. abort ends the bridge at once,
// without a close_notify and without blocking (the session calls it on the
// poller when the engine has let go of the connection, so that a bridge
// never outlives its admission slot); it may be called more than once.
func tlsBridge(tc *tls.Conn, writeTimeout time.Duration, closed func()) (fd int, abort func(), err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	f := os.NewFile(uintptr(fds[1]), "tls-bridge")
	pc, err := net.FileConn(f) // dups the descriptor into Go's netpoller
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		return -1, nil, err
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		pc.Close()
		return -1, nil, err
	}
	// A small pair buffer: once the client stops reading and the bridge
	// blocks on it, the engine sees a full socket within a frame or two,
	// so its stall clock starts then (not after the pair's default
	// couple of hundred KiB) and it, not the bridge, judges the client.
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, bridgeBuffer)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			pc.Close()
			tc.Close()
			closed()
		})
	}
	// Client to engine: commands, small; a TLS record's plaintext is at
	// most 16 KiB and tls.Conn.Read returns one record at most.
	go func() {
		defer stop()
		buf := make([]byte, 4<<10)
		for {
			n, err := tc.Read(buf)
			if n > 0 {
				if _, werr := pc.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// Engine to client: frames. The engine closing its end (a close frame
	// sent, a slow client dropped) reads as EOF here once the bytes before
	// it are written. Then, as the engine does on a TCP socket, the bridge
	// shuts only its write side (close_notify, then a FIN) and leaves the
	// client's hang-up to the other goroutine: closing the socket with the
	// client's input unread would reset it and lose what is not sent yet.
	// The engine's close deadline bounds the wait (kill, then the
	// session's abort).
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := pc.Read(buf)
			if n > 0 {
				tc.SetWriteDeadline(time.Now().Add(writeTimeout))
				if _, werr := tc.Write(buf[:n]); werr != nil {
					stop()
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					tc.SetWriteDeadline(time.Now().Add(writeTimeout))
					if tc.CloseWrite() == nil { // close_notify
						if cw, ok := tc.NetConn().(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
							return // FIN sent
						}
					}
				}
				stop()
				return
			}
		}
	}()
	// Closing the TCP socket first makes tc.Close's close_notify fail at
	// once instead of waiting up to 5 s on a full connection.
	return fds[0], func() { tc.NetConn().Close(); stop() }, nil
}

// newListenerTLS builds the listener's TLS config (nil when tls is off)
// and its metrics.
func (s *Server) newListenerTLS() error {
	if !s.cfg.TLS.Enabled() {
		return nil
	}
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "edgerelay", Subsystem: "tls", Name: name, Help: help}
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts(f("certificate_reloads_total",
		"Certificate pair loads, by result: ok (the first load and every change picked up) or error (a changed pair that did not load; the previous one is still served).")), []string{"result"})
	expiry := prometheus.NewGauge(prometheus.GaugeOpts(f("certificate_expiry_timestamp_seconds", "NotAfter of the certificate being served, as a Unix time.")))
	s.tlsHandshakeErrors = prometheus.NewCounter(prometheus.CounterOpts(f("handshake_errors_total",
		"TLS handshakes that failed, timed out (10 s for the handshake, request line and headers) or sent more than 16 KiB before completing.")))
	s.tlsBridged = prometheus.NewGauge(prometheus.GaugeOpts(f("bridged_connections",
		"TLS WebSockets open, each bridged to the engine by two goroutines and a socket pair (three descriptors with its TCP socket).")))
	reloads.WithLabelValues("error")
	s.metrics.reg.MustRegister(reloads, expiry, s.tlsHandshakeErrors, s.tlsBridged)
	r, err := newCertReloader(s.cfg.TLS, s.log, func(ok bool, cert *tls.Certificate) {
		if !ok {
			reloads.WithLabelValues("error").Inc()
			return
		}
		reloads.WithLabelValues("ok").Inc()
		expiry.Set(float64(cert.Leaf.NotAfter.Unix()))
	})
	if err != nil {
		return err
	}
	s.tls = serverTLS(r)
	return nil
}

// handshakeTLS completes the TLS handshake on nc by deadline, the one
// the request line and headers then have too. A plain-HTTP request to the
// TLS port is answered 400 as net/http does, so that a misconfigured
// client learns why.
func (a *acceptor) handshakeTLS(nc net.Conn, deadline time.Time) (*tls.Conn, bool) {
	nc.SetDeadline(deadline)
	bc := &boundedConn{Conn: nc, left: maxHandshakeInput}
	tc := tls.Server(bc, a.srv.tls)
	err := tc.Handshake()
	if err == nil {
		bc.left = -1 // before any other goroutine reads tc
		nc.SetWriteDeadline(time.Time{})
		return tc, true
	}
	a.srv.tlsHandshakeErrors.Inc()
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader[:]) {
		io.WriteString(nc, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nthis port speaks TLS: use https:// or wss://\n")
		// A close with the rest of the request unread would be a reset,
		// which can drop the answer: send a FIN, read what follows for a
		// moment (as net/http does after an error reply), then close.
		if cw, ok := nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			io.Copy(io.Discard, io.LimitReader(nc, 64<<10))
		}
	}
	a.srv.log.Debug("tls handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
	nc.Close()
	return nil, false
}

// maxHandshakeInput bounds what a client may send before its TLS
// handshake is complete. crypto/tls takes a ClientHello of up to 64 KiB and
// keeps the buffer it grew for it as long as the connection lives; real
// clients send a few KiB at most (a post-quantum key share, a
// HelloRetryRequest's second hello, a session ticket included).
const maxHandshakeInput = 16 << 10

var errHandshakeInput = errors.New("tls handshake larger than 16 KiB")

// boundedConn is a connection whose reads fail once left bytes are read
// (left < 0: no bound). Read by one goroutine at a time, as tls.Conn does.
type boundedConn struct {
	net.Conn
	left int
}

// CloseWrite shuts the write side of the TCP connection (FIN).
func (c *boundedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *boundedConn) Read(p []byte) (int, error) {
	switch {
	case c.left < 0:
		return c.Conn.Read(p)
	case c.left == 0:
		return 0, errHandshakeInput
	case len(p) > c.left:
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= n
	return n, err
}

func looksLikeHTTP(hdr []byte) bool {
	for _, m := range []string{"GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH"} {
		if string(hdr) == m {
			return true
		}
	}
	return false
}
