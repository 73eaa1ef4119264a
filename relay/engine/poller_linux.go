package engine

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A poller owns its connections' input side and their cleanup. It takes
// events from its epoll instance (edge-triggered), and for a readable
// socket reads everything into its one scratch buffer and handles complete
// messages; for a writable socket (EPOLLOUT after a write hit EAGAIN) it
// reschedules the connection's writer. poller.mu is never held with
// Conn.mu or writer.mu.
//
// The poller never blocks a thread in epoll_wait. It asks for events
// without waiting, and when there are none it parks in the Go runtime's
// own netpoller on the epoll descriptor, which is readable while events
// are ready. A goroutine blocked in a system call keeps its P until the
// runtime's monitor takes it back, 20 µs to 20 ms later; while it does,
// nothing else runs on that P — the writers, the Kafka client, timers —
// and with GOMAXPROCS pollers blocked that is every P. Parked in the
// netpoller, the poller holds no P and no thread, and one epoll_wait in the
// runtime serves the engine's sockets and every other socket of the
// process.

// poller is one epoll instance and its goroutine.
type poller struct {
	eng    *Engine
	epfd   int
	ep     *os.File        // epfd, registered with the Go netpoller
	rc     syscall.RawConn // ep's, to park until epfd is readable
	wakefd int             // eventfd that wakes the poller on stop

	mu    sync.Mutex
	conns map[int32]*Conn // by fd

	scratch []byte
	// events and the result of the last wait, for ready: the callback
	// the netpoller calls is built once, not one closure per wake-up.
	events  []unix.EpollEvent
	n       int
	waitErr error
	ready   func(fd uintptr) bool
	// again holds connections that used their readBudget with input
	// still waiting: each gets another turn after the next events.
	again, turn []*Conn
}

// readBudget is what one connection may have read per turn of its
// poller, so that a client that sends without pause cannot keep the
// poller from the others.
const readBudget = 256 << 10

func newPoller(e *Engine) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("engine: epoll_create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("engine: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("engine: epoll_ctl: %w", err)
	}
	// A non-blocking descriptor given to os.NewFile is registered with the
	// netpoller (an epoll descriptor can itself be polled: it is readable
	// while it has events ready).
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("engine: epoll fd: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
	// os.NewFile falls back to a blocking file, silently, if the netpoller
	// refuses it (epoll_ctl failing: fs.epoll.max_user_watches spent); the
	// poller could then never wait. Such a file has no deadlines.
	if err := ep.SetReadDeadline(time.Time{}); err != nil {
		ep.Close()
		unix.Close(wakefd)
		return nil, fmt.Errorf("engine: epoll fd not pollable by the Go runtime: %w", err)
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		unix.Close(wakefd)
		return nil, fmt.Errorf("engine: epoll fd: %w", err)
	}
	p := &poller{eng: e, epfd: epfd, ep: ep, rc: rc, wakefd: wakefd, conns: map[int32]*Conn{}, scratch: make([]byte, 64<<10),
		events: make([]unix.EpollEvent, 256)}
	p.ready = func(fd uintptr) bool {
		for {
			p.n, p.waitErr = unix.EpollWait(int(fd), p.events, 0)
			if !errors.Is(p.waitErr, unix.EINTR) {
				break
			}
		}
		return p.n > 0 || p.waitErr != nil || len(p.again) > 0
	}
	return p, nil
}

// add registers c, whose fd is non-blocking and owned by c from now on.
// initial holds bytes already read past the handshake.
func (p *poller) add(c *Conn, initial []byte) error {
	fd := c.fd // c belongs to the poller goroutine once in p.conns
	if len(initial) > 0 {
		c.partial = append([]byte(nil), initial...)
		c.pendingInput = true
	}
	p.mu.Lock()
	p.conns[int32(fd)] = c
	p.mu.Unlock()
	// A new socket is writable, so registering it yields an event at once;
	// that event also handles initial bytes (see run).
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLPRI | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.conns, int32(fd))
		p.mu.Unlock()
		return fmt.Errorf("engine: epoll_ctl add: %w", err)
	}
	return nil
}

func (p *poller) stop() {
	var one = [8]byte{1}
	unix.Write(p.wakefd, one[:])
}

// run handles events until stop.
func (p *poller) run() {
	defer p.ep.Close()
	defer unix.Close(p.wakefd)
	events := p.events
	for {
		n, err := p.wait()
		if err != nil {
			p.eng.log.Error("epoll_wait failed; connections of this poller are lost", "err", err)
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
			hangup := ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
			c.hungUp = c.hungUp || hangup
			c.oob = c.oob || ev.Events&unix.EPOLLPRI != 0
			// A closing connection's input is not read until the client
			// hangs up (or the close deadline shuts the socket): what a
			// client sends after its close would be read only to be
			// dropped, and a flooder's backlog stays in the kernel,
			// which stops it by flow control.
			if (ev.Events&unix.EPOLLIN != 0 && !c.discard || hangup) && !c.readAgain {
				p.read(c)
			}
		}
		p.turn, p.again = p.again, p.turn[:0]
		for _, c := range p.turn {
			c.readAgain = false
			p.mu.Lock()
			live := p.conns[int32(c.fd)] == c
			p.mu.Unlock()
			if live {
				p.read(c)
			}
		}
		clear(p.turn)
	}
}

// wait fills p.events with what epoll has ready, parking in the
// netpoller while there is nothing (see poller), and returns how many.
// With connections waiting on p.again it returns at once, with no events
// if none are ready.
func (p *poller) wait() (n int, err error) {
	perr := p.rc.Read(p.ready)
	if p.waitErr != nil {
		return p.n, p.waitErr
	}
	return p.n, perr
}

// read drains the socket (edge-triggered: until EAGAIN or a short read)
// and handles what arrived, up to readBudget: past it the connection waits for its next
// turn on p.again, as no new edge would come for input already there. At
// EOF or on an error it cleans the connection up.
func (p *poller) read(c *Conn) {
	budget := readBudget
	for {
		n, err := unix.Read(c.fd, p.scratch)
		if n > 0 {
			c.consume(p.scratch[:n])
			if c.discard && !c.hungUp {
				return // closing: the rest waits for the hang-up (see run)
			}
			if budget -= n; budget <= 0 && err == nil {
				c.readAgain = true
				p.again = append(p.again, c)
				return
			}
			if n == len(p.scratch) {
				continue
			}
		}
		switch {
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
			continue
		case n > 0 && err == nil && (c.hungUp || c.oob):
			// The peer hung up: read on to its EOF. Or it sent urgent
			// data, at whose mark a read stops short, input left behind
			// it and no edge to come for that (TestUrgentDataDoesNotStallInput).
			continue
		case n > 0 && err == nil:
			// A short read took all the socket held: data arriving from
			// now on raises a new edge (epoll signals every arrival),
			// and so does the peer's FIN (EPOLLRDHUP), so the read that
			// would only say EAGAIN is saved — one syscall per client
			// message (a bet, a pong).
			return
		default: // EOF (n == 0) or an error
			p.remove(c)
			return
		}
	}
}

// remove closes c's socket, forgets c and tells its Handler. Poller
// goroutine only.
func (p *poller) remove(c *Conn) {
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
	c.partial, c.msg = nil, nil
	c.h.Closed()
}

// closeAll shuts every connection of p hard (Engine.CloseAll).
func (p *poller) closeAll() {
	p.mu.Lock()
	conns := make([]*Conn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}
