package engine

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures an Engine. Start from DefaultConfig: a zero field is
// not a default, and New rejects it.
type Config struct {
	// Pollers is the number of epoll instances, each with its goroutine;
	// 0: one per core (GOMAXPROCS), at most 4.
	Pollers int
	// Writers is the number of writer goroutines; 0: one per core.
	Writers int
	// MaxMessageBytes bounds a client message, reassembled and inflated;
	// a larger one closes the connection with 1009.
	MaxMessageBytes int
	// SoftQueueBytes: past it, a connection's queued updates are
	// conflated (the latest value per channel wins).
	SoftQueueBytes int
	// MaxQueueBytes: past it, the connection is closed with Slow.
	MaxQueueBytes int
	// StallTimeout: a connection whose queue has had no write for this
	// long is closed with Slow (see Conn.CheckTimeouts).
	StallTimeout time.Duration
	// WriteTimeout is how long a close frame may take to go out before
	// the socket is shut hard.
	WriteTimeout time.Duration
	// ConflateAfter: a connection that waited this long for a writer (or
	// whose writer's last connection did, or whose socket has been full
	// this long) is behind, and its updates of conflatable channels are
	// conflated. 0: always.
	ConflateAfter time.Duration
	// Slow is the close sent to a slow client.
	Slow Close
	// MaxFramesPerSecond bounds the frames (data and control) a client
	// may send per second; past it the connection is closed with Flood.
	// 0: no bound.
	MaxFramesPerSecond int
	// Flood is the close sent to a client past MaxFramesPerSecond.
	Flood Close
	// Unencodable is the close sent to a client that cannot be given an
	// update: the encoder has no full form of it for the client's form
	// (the relay: a JSON client of a channel carrying non-JSON data).
	Unencodable Close
	// Compressor compresses the messages of SendMessage for connections
	// that negotiated permessage-deflate; nil: they go uncompressed.
	Compressor *Compressor
	// Hooks observe the engine; nil: nothing does.
	Hooks Hooks
	// Log is for the engine's own failures; nil: discarded.
	Log *slog.Logger
}

// DefaultConfig returns the engine's defaults (those of the relay's
// websocket and overload sections).
func DefaultConfig() Config {
	return Config{
		MaxMessageBytes: 128 << 10,
		SoftQueueBytes:  256 << 10,
		MaxQueueBytes:   1 << 20,
		StallTimeout:    15 * time.Second,
		WriteTimeout:    10 * time.Second,
		ConflateAfter:   20 * time.Millisecond,
		Slow:            Close{Code: 1008, Reason: "slow"},
		Flood:           Close{Code: 1008, Reason: "flood"},
		Unencodable:     Close{Code: 1003, Reason: "unsupported data"},
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("engine: Config.%s %s", field, msg)) }
	if c.Pollers < 0 {
		bad("Pollers", "must not be negative")
	}
	if c.Writers < 0 {
		bad("Writers", "must not be negative")
	}
	if c.MaxMessageBytes < 1 {
		bad("MaxMessageBytes", "must be positive")
	}
	if c.SoftQueueBytes < 1 {
		bad("SoftQueueBytes", "must be positive")
	}
	if c.MaxQueueBytes < c.SoftQueueBytes {
		bad("MaxQueueBytes", "must be at least SoftQueueBytes")
	}
	if c.StallTimeout <= 0 {
		bad("StallTimeout", "must be positive")
	}
	if c.WriteTimeout <= 0 {
		bad("WriteTimeout", "must be positive")
	}
	if c.ConflateAfter < 0 {
		bad("ConflateAfter", "must not be negative")
	}
	if c.Slow.Code == 0 {
		bad("Slow", "needs a close code")
	}
	if c.MaxFramesPerSecond < 0 {
		bad("MaxFramesPerSecond", "must not be negative")
	}
	if c.MaxFramesPerSecond > 0 && c.Flood.Code == 0 {
		bad("Flood", "needs a close code")
	}
	return errors.Join(errs...)
}

// Engine runs the pollers and writers of all connections.
type Engine struct {
	cfg   Config
	hooks Hooks
	log   *slog.Logger

	pollers []*poller
	writers []*writer
	next    atomic.Uint32 // round-robin over pollers and writers
	running sync.WaitGroup

	// clock is a recent unix-nanosecond time, stored by every socket
	// write and every Tick: the engine's cheap clock for queue waits
	// (enqueueing never reads the real one).
	clock atomic.Int64
}

// New validates cfg and builds an Engine; Start runs it.
func New(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, hooks: cfg.Hooks, log: cfg.Log}
	if e.hooks == nil {
		e.hooks = nopHooks{}
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return e, nil
}

// writerCount is Config.Writers, or for 0 one per core. (One per core
// but one gave ingest and the hub a core under overload, a little fresher
// there, but halved the writes per second a 2-core node makes when many
// small updates each go to a different connection: at 45,000 such
// deliveries/s it fell behind.)
func writerCount(configured, cores int) int {
	if configured > 0 {
		return configured
	}
	return cores
}

// Start creates the pollers and writers and runs them, each on its own
// goroutine. Call it once, before NewConn.
func (e *Engine) Start() error {
	// Queue waits are measured against the clock: start it before the
	// first connection is scheduled, not at the first write or tick.
	e.clock.Store(time.Now().UnixNano())
	n := runtime.GOMAXPROCS(0)
	pollers := e.cfg.Pollers
	if pollers == 0 {
		pollers = max(1, min(n, 4))
	}
	for range pollers {
		p, err := newPoller(e)
		if err != nil {
			return err
		}
		e.pollers = append(e.pollers, p)
	}
	for range writerCount(e.cfg.Writers, n) {
		e.writers = append(e.writers, newWriter(e))
	}
	for _, p := range e.pollers {
		e.running.Go(p.run)
	}
	for _, w := range e.writers {
		e.running.Go(w.loop)
	}
	return nil
}

// Size is the number of pollers and writers Start made.
func (e *Engine) Size() (pollers, writers int) { return len(e.pollers), len(e.writers) }

// CloseAll shuts every connection's socket hard; each poller then cleans
// its connections up (Handler.Closed). For shutdown, after the clients
// were asked to go.
func (e *Engine) CloseAll() {
	for _, p := range e.pollers {
		p.closeAll()
	}
}

// Stop stops the pollers and writers and waits for their goroutines.
// Connections still open are abandoned: CloseAll first, and wait for
// their Handler.Closed.
func (e *Engine) Stop() {
	for _, p := range e.pollers {
		p.stop()
	}
	for _, w := range e.writers {
		w.close()
	}
	e.running.Wait()
}

// Tick sets the engine's clock to now (unix nanoseconds). The caller's
// periodic sweep calls it, then Conn.CheckTimeouts for each connection:
// the engine has no timer of its own.
func (e *Engine) Tick(now int64) { e.clock.Store(now) }

// MaxWriteWait returns the longest a connection waited on a writer's
// run list (from being scheduled to being flushed) since the previous
// call, and starts the next period. One goroutine (the sweep's).
func (e *Engine) MaxWriteWait() time.Duration {
	var wait int64
	for _, w := range e.writers {
		wait = max(wait, w.maxWait.Swap(0))
	}
	return time.Duration(wait)
}

// NewConn makes a Conn of the non-blocking socket fd, served by h, and
// assigns it a poller and a writer; Conn.Start registers it. The Engine
// must be started.
func (e *Engine) NewConn(fd int, cfg ConnConfig, h Handler) *Conn {
	i := int(e.next.Add(1))
	return &Conn{
		eng:    e,
		h:      h,
		cfg:    cfg,
		poller: e.pollers[i%len(e.pollers)],
		writer: e.writers[i%len(e.writers)],
		fd:     fd,
	}
}
