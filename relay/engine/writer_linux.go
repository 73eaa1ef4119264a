package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writer sends queued frames for the connections on its run lists. It
// takes the whole run list as one pass and flushes each connection in turn;
// before each one it serves the urgent list (connections with a reply,
// ping, close or priority publication queued), so those never wait for the
// rest of a pass, which under overload is every connection of the writer.
type writer struct {
	eng    *Engine
	mu     sync.Mutex
	wake   *sync.Cond
	run    []*Conn
	urgent []*Conn
	// nUrgent is len(urgent), read between flushes without the lock.
	nUrgent atomic.Int32
	stop    bool
	// behind: the connection this writer last flushed from its run list
	// had waited Config.ConflateAfter or longer, so the ones it has
	// yet to reach will too; cleared when the writer runs out of work.
	// Written by the writer, read by Deliver.
	behind atomic.Bool
	// maxWait is the longest a connection waited on the run list (from
	// scheduling to flush, nanoseconds) since MaxWriteWait last took it.
	maxWait atomic.Int64

	iov         []unix.Iovec
	urgentBatch []*Conn
}

// maxIov bounds one writev (IOV_MAX is 1024 on Linux).
const maxIov = 1024

func newWriter(e *Engine) *writer {
	w := &writer{eng: e, iov: make([]unix.Iovec, maxIov)}
	w.wake = sync.NewCond(&w.mu)
	return w
}

// push adds c to the run list, or to the urgent list. Called with c.mu
// held.
func (w *writer) push(c *Conn, urgent bool) {
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

// A writer with work to do lets the other goroutines of its P run after
// yieldEvery connections, or once yieldSlice of the engine's clock (which
// each write advances) has passed since it last did: at one frame per
// connection (normal load) a yield costs about what the writer's own
// bookkeeping of a write does, and 8 writes on loopback TCP take
// 30–100 µs, about how long ingest may wait for the P; the slice bounds
// that wait when writes are long (a backlog, up to 1 MiB per writev).
const (
	yieldEvery = 8
	yieldSlice = int64(100 * time.Microsecond)
)

func (w *writer) loop() {
	var batch []*Conn
	flushed, lastYield := 0, int64(0)
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
				if b := wait >= int64(w.eng.cfg.ConflateAfter); b != w.behind.Load() {
					w.behind.Store(b)
				}
			}
			// Under overload both writers always have work; without a
			// yield, ingest and franz-go's goroutines wait for a
			// preemption (up to 10 ms) to get a P, and every value
			// ages by that much before the hub sees it.
			flushed++
			if now := w.eng.clock.Load(); flushed == yieldEvery || now-lastYield >= yieldSlice {
				runtime.Gosched()
				flushed, lastYield = 0, now
			}
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
func (w *writer) flush(c *Conn) (wait int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wait = -1
	if c.scheduled {
		wait = w.eng.clock.Load() - c.scheduledAt
		w.eng.hooks.OnWriteWait(time.Duration(wait))
		if wait > w.maxWait.Load() {
			w.maxWait.Store(wait) // this writer's goroutine only; MaxWriteWait resets it
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
			c.advanceLocked(n)
		}
		switch {
		case err == nil && n == total:
		case err == nil || err == unix.EAGAIN:
			if c.outEvents == events {
				c.waitOut, c.waitOutSince = true, w.eng.clock.Load() // EPOLLOUT reschedules
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
func (c *Conn) advanceLocked(n int) {
	now := time.Now()
	c.eng.clock.Store(now.UnixNano())
	c.stalledSince = 0
	written := n
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
	}
	c.eng.hooks.OnWrite(written, c.queue[:done], now)
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
