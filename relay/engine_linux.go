package relay

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The connection engine: pollers watch sockets with epoll and handle input;
// writers send queued frames. Neither keeps a goroutine or a buffer per
// connection.
//
// A poller owns its connections' input side and their cleanup. It waits in
// epoll_wait (edge-triggered), and for a readable socket reads everything
// into its one scratch buffer and handles complete messages; for a writable
// socket (EPOLLOUT after a write hit EAGAIN) it reschedules the connection's
// writer. A writer takes connections with queued frames off its run list and
// writes each one's whole queue with one writev, non-blocking.
//
// Lock order: conn.mu, then writer.mu. poller.mu is never held with either.

// poller is one epoll instance and its goroutine.
type poller struct {
	srv    *Server
	epfd   int
	wakefd int // eventfd that wakes epoll_wait on stop

	mu    sync.Mutex
	conns map[int32]*conn // by fd

	scratch []byte
}

func newPoller(s *Server) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll_create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("relay: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		return nil, fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	return &poller{srv: s, epfd: epfd, wakefd: wakefd, conns: map[int32]*conn{}, scratch: make([]byte, 64<<10)}, nil
}

// add registers c, whose fd is non-blocking and owned by c from now on.
// initial holds bytes already read past the handshake.
func (p *poller) add(c *conn, initial []byte) error {
	fd := c.fd // c belongs to the poller goroutine once in p.conns
	c.poller = p
	if len(initial) > 0 {
		c.partial = append([]byte(nil), initial...)
		c.pendingInput = true
	}
	p.mu.Lock()
	p.conns[int32(fd)] = c
	p.mu.Unlock()
	// A new socket is writable, so registering it yields an event at once;
	// that event also handles initial bytes (see run).
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.conns, int32(fd))
		p.mu.Unlock()
		return fmt.Errorf("relay: epoll_ctl add: %w", err)
	}
	return nil
}

func (p *poller) stop() {
	var one = [8]byte{1}
	unix.Write(p.wakefd, one[:])
}

// run handles events until stop.
func (p *poller) run() {
	defer unix.Close(p.epfd)
	defer unix.Close(p.wakefd)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.srv.log.Error("epoll_wait failed; connections of this poller are lost", "err", err)
			return
		}
		for i := 0; i < n; i++ {
			ev := &events[i]
			if int(ev.Fd) == p.wakefd {
				return
			}
			p.mu.Lock()
			c := p.conns[ev.Fd]
			p.mu.Unlock()
			if c == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				c.mu.Lock()
				c.outEvents++
				if c.waitOut {
					c.waitOut = false
					c.scheduleLocked(false)
				}
				c.mu.Unlock()
			}
			if c.pendingInput {
				c.pendingInput = false
				c.consume(nil)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.read(c)
			}
		}
	}
}

// read drains the socket (edge-triggered: until EAGAIN) and handles what
// arrived; at EOF or on an error it cleans the connection up.
func (p *poller) read(c *conn) {
	for {
		n, err := unix.Read(c.fd, p.scratch)
		if n > 0 {
			c.consume(p.scratch[:n])
			if n == len(p.scratch) {
				continue
			}
		}
		switch {
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
			continue
		case n > 0 && err == nil:
			continue // short read: try again until EAGAIN
		default: // EOF (n == 0) or an error
			p.remove(c)
			return
		}
	}
}

// remove closes c's socket and forgets c: unsubscribes it and removes it
// from the server. Poller goroutine only.
func (p *poller) remove(c *conn) {
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	p.mu.Lock()
	delete(p.conns, int32(c.fd))
	p.mu.Unlock()
	c.mu.Lock()
	c.closing = true
	// A writer still in writev holds its own iovec, not the queue.
	c.forgetHeldLocked()
	c.releaseQueueLocked()
	c.head, c.queued = 0, 0
	if c.writing {
		c.closeAfter = true // the writer closes fd when writev returns
	} else {
		unix.Close(c.fd)
	}
	c.fd = -1
	c.mu.Unlock()
	for _, sub := range c.subs {
		c.srv.hub.Unsubscribe(sub.channel, sub)
	}
	c.subs, c.partial, c.msg, c.replies = nil, nil, nil, nil
	c.srv.removeConn(c)
}

// closeAll shuts every connection of p hard; used when the server stops.
func (p *poller) closeAll() {
	p.mu.Lock()
	conns := make([]*conn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}

// writer sends queued frames for the connections on its run lists. It
// takes the whole run list as one pass and flushes each connection in turn;
// before each one it serves the urgent list (connections with a reply,
// ping, close or priority publication queued), so those never wait for the
// rest of a pass, which under overload is every connection of the writer.
type writer struct {
	srv    *Server
	mu     sync.Mutex
	wake   *sync.Cond
	run    []*conn
	urgent []*conn
	// nUrgent is len(urgent), read between flushes without the lock.
	nUrgent atomic.Int32
	stop    bool
	// behind: the connection this writer last flushed from its run list
	// had waited overload.conflate_after or longer, so the ones it has
	// yet to reach will too; cleared when the writer runs out of work.
	// Written by the writer, read by Deliver.
	behind atomic.Bool
	// maxWait is the longest a connection waited on the run list (from
	// scheduling to flush, nanoseconds) since the heartbeat last took it.
	maxWait atomic.Int64

	iov         []unix.Iovec
	urgentBatch []*conn
}

// maxIov bounds one writev (IOV_MAX is 1024 on Linux).
const maxIov = 1024

func newWriter(s *Server) *writer {
	w := &writer{srv: s, iov: make([]unix.Iovec, maxIov)}
	w.wake = sync.NewCond(&w.mu)
	return w
}

// push adds c to the run list, or to the urgent list. Called with c.mu
// held.
func (w *writer) push(c *conn, urgent bool) {
	w.mu.Lock()
	if urgent {
		w.urgent = append(w.urgent, c)
		w.nUrgent.Store(int32(len(w.urgent)))
	} else {
		w.run = append(w.run, c)
	}
	if len(w.run)+len(w.urgent) == 1 {
		w.wake.Signal()
	}
	w.mu.Unlock()
}

func (w *writer) close() {
	w.mu.Lock()
	w.stop = true
	w.wake.Signal()
	w.mu.Unlock()
}

func (w *writer) loop() {
	var batch []*conn
	for {
		w.mu.Lock()
		if len(w.run) == 0 && len(w.urgent) == 0 && w.behind.Load() {
			w.behind.Store(false) // out of work: the next connection waits for nothing
		}
		for len(w.run) == 0 && len(w.urgent) == 0 && !w.stop {
			w.wake.Wait()
		}
		if w.stop {
			w.mu.Unlock()
			return
		}
		batch, w.run = w.run, batch[:0]
		w.mu.Unlock()
		w.flushUrgent()
		for _, c := range batch {
			if w.nUrgent.Load() > 0 {
				w.flushUrgent()
			}
			if wait := w.flush(c); wait >= 0 {
				if b := wait >= int64(w.srv.cfg.Overload.ConflateAfter); b != w.behind.Load() {
					w.behind.Store(b)
				}
			}
			// Under overload both writers always have work; without a
			// yield, ingest and franz-go's goroutines wait for a
			// preemption (up to 10 ms) to get a P, and every value
			// ages by that much before the hub sees it.
			runtime.Gosched()
		}
		clear(batch)
	}
}

// flushUrgent flushes the connections on the urgent list.
func (w *writer) flushUrgent() {
	w.mu.Lock()
	w.urgentBatch, w.urgent = w.urgent, w.urgentBatch[:0]
	w.nUrgent.Store(0)
	w.mu.Unlock()
	for _, c := range w.urgentBatch {
		w.flush(c)
	}
	clear(w.urgentBatch)
}

// flush writes c's queue until it is empty or the socket is full. It
// returns how long c waited on a run list, -1 if it was not on one.
func (w *writer) flush(c *conn) (wait int64) {
	m := w.srv.metrics
	c.mu.Lock()
	defer c.mu.Unlock()
	wait = -1
	if c.scheduled {
		wait = w.srv.clock.Load() - c.scheduledAt
		m.writeWait.Observe(float64(wait) / 1e9)
		if wait > w.maxWait.Load() {
			w.maxWait.Store(wait) // this writer's goroutine only; the heartbeat resets it
		}
	}
	c.scheduled, c.urgent = false, false
	for len(c.queue) > 0 && c.fd >= 0 && !c.waitOut && !c.closeSent {
		if len(c.holding) > 0 {
			c.settleAllLocked()
		}
		iovs, total := 0, 0
		for i, f := range c.queue {
			b := f.Bytes
			if i == 0 {
				b = b[c.head:]
			}
			w.iov[iovs].Base = &b[0]
			w.iov[iovs].SetLen(len(b))
			iovs++
			total += len(b)
			if iovs == maxIov || total >= 1<<20 {
				break
			}
		}
		fd, events := c.fd, c.outEvents
		c.writing, c.inflight = true, iovs
		c.mu.Unlock()
		n, err := writev(fd, w.iov[:iovs])
		c.mu.Lock()
		c.writing, c.inflight = false, 0
		if c.closeAfter {
			unix.Close(fd)
			return
		}
		if n > 0 {
			c.advanceLocked(n, m)
		}
		switch {
		case err == nil && n == total:
		case err == nil || err == unix.EAGAIN:
			if c.outEvents == events {
				c.waitOut, c.waitOutSince = true, w.srv.clock.Load() // EPOLLOUT reschedules
				return
			}
			// The socket became writable while we wrote: try again.
		case err == unix.EINTR:
		default: // EPIPE, ECONNRESET: the poller sees the hang-up and cleans up
			c.closing = true
			c.dropQueueLocked()
			unix.Shutdown(fd, unix.SHUT_RDWR)
			return
		}
	}
	if len(c.queue) == 0 {
		c.afterDrainLocked()
	}
	return wait
}

// advanceLocked drops the n written bytes from the queue.
func (c *conn) advanceLocked(n int, m *metrics) {
	now := time.Now()
	c.srv.clock.Store(now.UnixNano())
	c.stalledSince = 0
	m.bytesOut.Add(float64(n))
	done := 0
	for n > 0 {
		f := c.queue[done]
		left := len(f.Bytes) - c.head
		if n < left {
			c.head += n
			c.queued -= n
			break
		}
		n -= left
		c.queued -= left
		c.head = 0
		done++
		m.framesOut.Inc()
		if f.Pub != nil {
			m.formBytes[f.Form].Add(float64(len(f.Bytes)))
			if !f.Pub.Time.IsZero() {
				m.deliveryLatency.Observe(now.Sub(f.Pub.Time).Seconds())
			}
		}
	}
	rest := copy(c.queue, c.queue[done:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	if rest == 0 {
		c.releaseQueueLocked() // an idle connection holds no queue memory
		c.holding = nil        // nothing is held in an empty queue
	}
}

func writev(fd int, iov []unix.Iovec) (int, error) {
	n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
