package engine

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgerelay/edgerelay/fanout"
)

// BenchmarkSocketFanout measures the whole publish path on real sockets:
// hub fan-out, per-connection queueing and a writer's writev, for n
// connections (Unix socket pairs drained by reader goroutines, which also
// use CPU). It reports ns and allocations per delivery. Hooks are off:
// what observing costs is the relay's (its metrics).
func BenchmarkSocketFanout(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			cfg := DefaultConfig()
			// Measure the raw path: no conflation or slow-consumer drops
			// while the publisher runs ahead of the writers.
			cfg.SoftQueueBytes, cfg.MaxQueueBytes = 1<<40, 1<<41
			e, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			frame := MessageFrame(HeadText, []byte(`{"push":{"channel":"odds:bench","pub":{"data":{"odds":[2.1,3.4,3.9],"pad":"`+strings.Repeat("x", 200)+`"},"offset":1}}}`))
			hub := fanout.New(fanout.Config{Encoder: func(u *fanout.Update, _ fanout.Form) *fanout.Frame {
				return &fanout.Frame{Bytes: frame, Pub: u.Pub}
			}})
			w := newWriter(e)
			go w.loop()
			defer w.close()
			p, err := newPoller(e) // EPOLLOUT resumes writes to full sockets
			if err != nil {
				b.Fatal(err)
			}
			go p.run()
			defer p.stop()
			var drained sync.WaitGroup
			want := len(frame) * b.N
			for i := 0; i < n; i++ {
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				unix.SetNonblock(fds[0], true)
				unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
				c := &Conn{eng: e, h: nopHandler{}, fd: fds[0], poller: p, writer: w}
				if err := c.Start(nil); err != nil {
					b.Fatal(err)
				}
				if err := hub.Subscribe("odds:bench", c.NewSink("odds:bench", FormPlain, nil), nil); err != nil {
					b.Fatal(err)
				}
				drained.Add(1)
				go func(fd int) {
					defer drained.Done()
					defer unix.Close(fd)
					buf := make([]byte, 64<<10)
					for got := 0; got < want; {
						m, err := unix.Read(fd, buf)
						if err != nil || m == 0 {
							return
						}
						got += m
					}
				}(fds[1])
			}
			pub := &fanout.Publication{Channel: "odds:bench", Data: []byte("{}"), Time: time.Now()}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				hub.Publish(pub)
			}
			drained.Wait()
			b.StopTimer()
			runtime.ReadMemStats(&after)
			deliveries := float64(b.N * n)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/deliveries, "allocs/delivery")
		})
	}
}

// BenchmarkBehindDeliver measures the hub's cost per subscriber while the
// node is overloaded: every connection has waited past
// overload.conflate_after with the channel's previous update unwritten, so
// each delivery replaces it (no writer runs). Under overload this is the
// work ingest and the hub do per update and subscriber, and their delay is
// what ages delivered values (docs/performance.md, "Overload").
func BenchmarkBehindDeliver(b *testing.B) {
	const conns, channels = 15000, 100
	env := newTestEnv(b, DefaultConfig())
	w := newWriter(env.e) // never run: connections stay scheduled
	conflated := &testCounter{}
	for i := range conns {
		ch := fmt.Sprintf("odds:%d", i%channels)
		c := &Conn{eng: env.e, h: nopHandler{}, fd: 1 << 20, writer: w, scheduled: true}
		if err := env.hub.Subscribe(ch, c.NewSink(ch, FormPlain, conflated), nil); err != nil {
			b.Fatal(err)
		}
	}
	pubs := make([]*fanout.Publication, channels)
	for i := range pubs {
		pubs[i] = &fanout.Publication{Channel: fmt.Sprintf("odds:%d", i), Data: []byte(`{"odds":[2.1,3.4,3.9]}`), Time: time.Now()}
		env.hub.Publish(pubs[i]) // queues the first frame of every connection
	}
	b.ResetTimer()
	for i := range b.N {
		p := *pubs[i%channels]
		p.Pos.Offset = int64(i)
		env.hub.Publish(&p)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(conns/channels), "ns/delivery")
}

// countHooks counts frames written and signals when want of them are.
type countHooks struct {
	nopHooks
	n    atomic.Int64
	want atomic.Int64
	done chan struct{}
}

func (h *countHooks) OnWrite(_ int, frames []*fanout.Frame, _ time.Time) {
	if h.n.Add(int64(len(frames))) == h.want.Load() {
		select { // hooks must not block; the benchmark takes each signal
		case h.done <- struct{}{}:
		default:
		}
	}
}

// BenchmarkWritePath is the steady state of a fan-out at normal load
// (docs/performance.md, "The relay against a ceiling"): one update to n
// connections, each written with its own system call before the next
// update comes, against "bare", a loop of write(2) over the same sockets
// (what edgebench ceiling does). The difference per delivery is the
// engine's own cost: hub, sink, queue, writer, locks. Run it on one P
// (-cpu 1), as the tail runs do; the sockets are Unix socket pairs whose
// readers drain them outside the timed part.
func BenchmarkWritePath(b *testing.B) {
	const n, drainEvery = 1500, 64
	frame := MessageFrame(HeadText, []byte(`{"push":{"channel":"odds:bench","pub":{"data":{"odds":[2.1,3.4,3.9],"pad":"`+strings.Repeat("x", 420)+`"},"offset":1}}}`))
	setup := func(b *testing.B) (fds, peers []int) {
		for range n {
			sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			unix.SetNonblock(sp[0], true)
			unix.SetsockoptInt(sp[0], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
			unix.SetsockoptInt(sp[1], unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
			unix.SetNonblock(sp[1], true)
			fds, peers = append(fds, sp[0]), append(peers, sp[1])
		}
		b.Cleanup(func() {
			for i := range fds {
				unix.Close(fds[i])
				unix.Close(peers[i])
			}
		})
		return fds, peers
	}
	buf := make([]byte, 256<<10)
	drain := func(peers []int) {
		for _, fd := range peers {
			for {
				if m, err := unix.Read(fd, buf); err != nil || m < len(buf) {
					break
				}
			}
		}
	}
	// timed runs once (one update to every connection, written) b.N
	// times, draining the sockets untimed every drainEvery updates.
	timed := func(b *testing.B, peers []int, once func()) {
		b.ResetTimer()
		for i := range b.N {
			once()
			if i%drainEvery == drainEvery-1 {
				b.StopTimer()
				drain(peers)
				b.StartTimer()
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	}
	b.Run("bare", func(b *testing.B) {
		fds, peers := setup(b)
		timed(b, peers, func() {
			for _, fd := range fds {
				if _, err := unix.Write(fd, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("engine", func(b *testing.B) {
		hooks := &countHooks{done: make(chan struct{}, 1)}
		cfg := DefaultConfig()
		cfg.Hooks = hooks
		e, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		hub := fanout.New(fanout.Config{Encoder: func(u *fanout.Update, _ fanout.Form) *fanout.Frame {
			return &fanout.Frame{Bytes: frame, Pub: u.Pub}
		}})
		w := newWriter(e)
		p, err := newPoller(e)
		if err != nil {
			b.Fatal(err)
		}
		// setup's Cleanup closes the sockets after both have returned.
		var running sync.WaitGroup
		running.Go(w.loop)
		running.Go(p.run)
		defer running.Wait()
		defer w.close()
		defer p.stop()
		fds, peers := setup(b)
		for _, fd := range fds {
			c := &Conn{eng: e, h: nopHandler{}, fd: fd, poller: p, writer: w}
			if err := c.Start(nil); err != nil {
				b.Fatal(err)
			}
			if err := hub.Subscribe("odds:bench", c.NewSink("odds:bench", FormPlain, nil), nil); err != nil {
				b.Fatal(err)
			}
		}
		timed(b, peers, func() {
			hooks.want.Add(n)
			hub.Publish(&fanout.Publication{Channel: "odds:bench", Data: []byte("{}"), Time: time.Now()})
			<-hooks.done
		})
	})
}
