// Package clock is the only way Cairn components that keep time-based state
// (the lessor's expiry heap, its checkpoints, the member's leader lease)
// read the time, so that tests drive time by hand instead of sleeping
// (cf. tailscale tstime.Clock; etcd's lessor calls time.Now() and its tests
// sleep).
//
// Real is the wall clock; Manual is a fake whose time moves only when a test
// calls Advance. Neither keeps goroutines of its own.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and makes tickers.
type Clock interface {
	Now() time.Time
	// NewTicker returns a ticker that fires every d; like time.Ticker it
	// drops ticks a slow receiver misses.
	NewTicker(d time.Duration) Ticker
}

// Ticker is a stoppable periodic channel.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTicker wraps time.NewTicker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Manual is a clock that moves only on Advance. Safe for concurrent use.
type Manual struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*manualTicker
}

// NewManual returns a manual clock reading start.
func NewManual(start time.Time) *Manual { return &Manual{now: start} }

// Now returns the clock's time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// Advance moves the clock forward by d and fires every ticker that is due
// (at most once each, as a time.Ticker drops ticks for a slow receiver).
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	m.now = m.now.Add(d)
	now := m.now
	var due []*manualTicker
	kept := m.tickers[:0]
	for _, t := range m.tickers {
		if t.stopped {
			continue
		}
		kept = append(kept, t)
		if !t.next.After(now) {
			due = append(due, t)
			for !t.next.After(now) {
				t.next = t.next.Add(t.d)
			}
		}
	}
	m.tickers = kept
	m.mu.Unlock()
	for _, t := range due {
		select {
		case t.c <- now:
		default:
		}
	}
}

// NewTicker returns a ticker that fires when Advance passes each multiple
// of d from now.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker interval")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTicker{m: m, d: d, next: m.now.Add(d), c: make(chan time.Time, 1)}
	m.tickers = append(m.tickers, t)
	return t
}

type manualTicker struct {
	m       *Manual
	d       time.Duration
	next    time.Time
	c       chan time.Time
	stopped bool // guarded by m.mu
}

func (t *manualTicker) C() <-chan time.Time { return t.c }

func (t *manualTicker) Stop() {
	t.m.mu.Lock()
	t.stopped = true
	t.m.mu.Unlock()
}
