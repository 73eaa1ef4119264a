package relay

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgerelay/edgerelay/fanout"
)

// BenchmarkSocketFanout measures the whole publish path on real sockets:
// hub fan-out, per-connection queueing and a writer's writev, for n
// connections (Unix socket pairs drained by reader goroutines, which also
// use CPU). It reports ns and allocations per delivery.
func BenchmarkSocketFanout(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			cfg := DefaultConfig()
			// Measure the raw path: no conflation or slow-consumer drops
			// while the publisher runs ahead of the writers.
			cfg.WebSocket.SoftQueueBytes, cfg.WebSocket.MaxQueueBytes = 1<<40, 1<<41
			s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			frame := textFrame([]byte(`{"push":{"channel":"odds:bench","pub":{"data":{"odds":[2.1,3.4,3.9],"pad":"` + strings.Repeat("x", 200) + `"},"offset":1}}}`))
			s.hub = fanout.New(fanout.Config{Encoder: func(u *fanout.Update, _ fanout.Form) *fanout.Frame {
				return &fanout.Frame{Bytes: frame, Pub: u.Pub}
			}})
			w := newWriter(s)
			go w.loop()
			defer w.close()
			p, err := newPoller(s) // EPOLLOUT resumes writes to full sockets
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
				c := &conn{srv: s, fd: fds[0], writer: w}
				if err := p.add(c, nil); err != nil {
					b.Fatal(err)
				}
				c.isConnected.Store(true)
				if err := s.hub.Subscribe("odds:bench", &subscription{c: c, channel: "odds:bench"}, nil); err != nil {
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
				s.hub.Publish(pub)
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
