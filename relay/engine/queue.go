package engine

import (
	"math/bits"
	"sync"

	"github.com/edgerelay/edgerelay/fanout"
)

// A connection's bounded write queue: frames waiting for its writer, in
// order. Functions named ...Locked need c.mu held.

// replaceLocked puts f, a self-contained frame, in place of the channel's
// newest queued frame and drops the channel's older unwritten frames back
// to the nearest barrier: a reply or ping (never move a publication ahead
// of one; a subscribe reply may carry this channel's value), a priority
// frame of the channel, or the frames under way (fixed). The channel's
// order is kept and the client reads only its latest value; a priority
// frame is never replaced nor dropped. A map entry's frame is queued last
// instead (offset order, see below). It returns how many queued frames f stands
// for: 0 if there was none to replace (f must be queued).
func (c *Conn) replaceLocked(f *fanout.Frame) int {
	ch, key := f.Pub.Channel, f.Pub.Key // a map's entries conflate each by itself
	last, stale, stop := -1, 0, c.fixedLocked()
	for i := len(c.queue) - 1; i >= stop; i-- {
		q := c.queue[i].Pub
		if q == nil || (q.Channel == ch && q.Key == key && q.Priority) {
			stop = i + 1
			break
		}
		if q.Channel != ch || q.Key != key {
			continue
		}
		if last < 0 {
			last = i
		} else {
			stale++
		}
	}
	if last < 0 {
		return 0
	}
	if key != "" {
		// A map's entries share one stream of offsets, and the client
		// resumes from the offset of the last change it read, so a
		// map's changes must reach it in offset order: in the place of
		// an older change, f would go out ahead of other keys' older
		// changes, which a client dropped in between would never get.
		// f goes last, where it would have been queued.
		c.dropFramesLocked(ch, key, stop, len(c.queue))
		c.pushLocked(f)
		return 1 + stale
	}
	c.queued += len(f.Bytes) - len(c.queue[last].Bytes)
	c.queue[last] = f
	if stale > 0 {
		c.dropFramesLocked(ch, key, stop, last)
	}
	return 1 + stale
}

// dropFramesLocked drops the queued frames of channel (and map key)
// among c.queue[from:to].
func (c *Conn) dropFramesLocked(channel, key string, from, to int) {
	j := from
	for i := from; i < len(c.queue); i++ {
		if q := c.queue[i].Pub; i < to && q != nil && q.Channel == channel && q.Key == key {
			c.queued -= len(c.queue[i].Bytes)
			continue
		}
		c.queue[j] = c.queue[i]
		j++
	}
	clear(c.queue[j:])
	c.queue = c.queue[:j]
}

// enqueueLocked queues f and schedules a write, or, if the queue would pass
// Config.MaxQueueBytes, drops it and closes the connection as slow.
// Publications and replies alike: a client that sends commands but does
// not read is slow too.
func (c *Conn) enqueueLocked(f *fanout.Frame) {
	if c.queued+len(f.Bytes) > c.eng.cfg.MaxQueueBytes {
		c.dropQueueLocked()
		c.closeSlowLocked()
		return
	}
	if f.Pub == nil && len(c.holding) > 0 {
		c.settleAllLocked()
	}
	c.pushLocked(f)
	c.scheduleLocked(f.Pub == nil || f.Pub.Priority)
}

// pushLocked appends f to the queue: in the connection's own slot when
// the queue is empty (at normal load a queue holds one frame at a time, and
// the slot costs no pool round trip), else in pooled memory.
func (c *Conn) pushLocked(f *fanout.Frame) {
	if cap(c.queue) == 0 {
		c.queue = c.one[:0]
	} else if len(c.queue) == cap(c.queue) {
		c.growQueueLocked()
	}
	c.queue = append(c.queue, f)
	c.queued += len(f.Bytes)
}

// scheduleLocked puts c on its writer's run list, or, if urgent (a reply,
// ping, close or priority publication was queued), on the urgent list,
// which the writer serves before the next connection of its run list: under
// overload a write pass over every connection takes long, and what must not
// wait for it does not.
func (c *Conn) scheduleLocked(urgent bool) {
	if c.writing || c.waitOut || c.fd < 0 {
		return // the write under way, or EPOLLOUT, picks the frame up
	}
	if !c.scheduled {
		c.scheduled = true
		c.scheduledAt = c.eng.clock.Load()
		if !urgent {
			c.writer.push(c, false)
		}
	}
	if urgent && !c.urgent {
		c.urgent = true
		c.writer.push(c, true)
	}
}

// fixedLocked is how many frames at the head of the queue must stay as
// they are: those in the writev under way, and one already partly written.
func (c *Conn) fixedLocked() int {
	n := c.inflight
	if c.head > 0 {
		n = max(n, 1)
	}
	return min(n, len(c.queue))
}

// dropQueueLocked drops queued frames, except fixed ones: they must finish
// as they are, or the stream would be corrupt.
func (c *Conn) dropQueueLocked() {
	c.forgetHeldLocked()
	keep := 0
	if c.fd >= 0 {
		keep = c.fixedLocked()
	}
	clear(c.queue[keep:])
	c.queue = c.queue[:keep]
	c.queued = 0
	for i, f := range c.queue {
		c.queued += len(f.Bytes)
		if i == 0 {
			c.queued -= c.head
		}
	}
	if keep == 0 {
		c.head = 0
	}
}

// queueBuf is pooled backing memory for connection queues, so that a
// backlog costs no allocation per delivery and an idle connection holds no
// queue memory. Pools are per power-of-two capacity.
type queueBuf struct{ frames []*fanout.Frame }

var queuePools [18]sync.Pool // index k: capacity 1<<k, k >= minQueueBits

const minQueueBits = 2

// growQueueLocked moves the queue to pooled memory of twice the capacity.
func (c *Conn) growQueueLocked() {
	k := max(bits.Len(uint(cap(c.queue))), minQueueBits)
	var qb *queueBuf
	if k < len(queuePools) {
		qb, _ = queuePools[k].Get().(*queueBuf)
	}
	if qb == nil {
		qb = &queueBuf{frames: make([]*fanout.Frame, 0, 1<<k)}
	}
	qb.frames = append(qb.frames[:0], c.queue...)
	c.releaseQueueLocked()
	c.qbuf, c.queue = qb, qb.frames
}

// releaseQueueLocked returns the queue's memory to its pool (or empties
// the connection's own slot).
func (c *Conn) releaseQueueLocked() {
	c.one[0] = nil
	if qb := c.qbuf; qb != nil {
		clear(c.queue[:cap(c.queue)])
		qb.frames = c.queue[:0]
		if k := bits.Len(uint(cap(qb.frames))) - 1; k < len(queuePools) {
			queuePools[k].Put(qb)
		}
	}
	c.qbuf, c.queue = nil, nil
}
