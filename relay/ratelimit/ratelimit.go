// Package ratelimit is a token bucket per key (a user, a client address):
// each key may do rate things per second, in bursts of up to burst.
//
// A Limiter holds one small bucket per key seen since it last refilled;
// Sweep forgets refilled ones (a refilled bucket is the same as none), and
// at most MaxKeys are held: past that, unknown keys are let through
// untracked rather than refused, so that a flood of addresses cannot lock
// everyone else out; callers count those with Untracked. When full, the
// sweep that makes room runs at most once a second, so that a flood of
// new keys does not cost a scan of every key each.
//
// A Limiter is safe for concurrent use.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter limits each key to Rate per second, bursts of Burst.
type Limiter struct {
	rate, burst float64
	maxKeys     int

	mu        sync.Mutex
	buckets   map[string]*bucket
	untracked uint64
	lastSweep time.Time // full: Allow sweeps at most once a second
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a Limiter; rate must be positive, burst at least 1, maxKeys
// positive (callers validate their configuration).
func New(rate float64, burst, maxKeys int) *Limiter {
	return &Limiter{rate: rate, burst: float64(burst), maxKeys: maxKeys, buckets: map[string]*bucket{}}
}

// Allow takes a token from key's bucket, reporting false when it is empty.
func (l *Limiter) Allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			// A sweep costs every key: a flood of new keys gets one a
			// second, not one each.
			if now.Sub(l.lastSweep) >= time.Second {
				l.sweepLocked(now)
			}
			if len(l.buckets) >= l.maxKeys {
				l.untracked++
				return true
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Sweep forgets buckets that have refilled. Call it periodically.
func (l *Limiter) Sweep(now time.Time) {
	l.mu.Lock()
	l.sweepLocked(now)
	l.mu.Unlock()
}

func (l *Limiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, k)
		}
	}
}

// Len is the number of keys held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Untracked is how many calls were let through because MaxKeys keys were
// held.
func (l *Limiter) Untracked() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.untracked
}
