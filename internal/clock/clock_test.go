package clock

import (
	"testing"
	"time"
)

func TestManualTicker(t *testing.T) {
	start := time.Unix(100, 0)
	m := NewManual(start)
	tk := m.NewTicker(time.Second)
	m.Advance(999 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("fired before its interval")
	default:
	}
	m.Advance(time.Millisecond)
	if got := <-tk.C(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("tick at %v", got)
	}
	// Like time.Ticker, a receiver that misses ticks gets one, not many.
	m.Advance(5 * time.Second)
	<-tk.C()
	select {
	case <-tk.C():
		t.Fatal("missed ticks were queued")
	default:
	}
	tk.Stop()
	m.Advance(time.Hour)
	select {
	case <-tk.C():
		t.Fatal("stopped ticker fired")
	default:
	}
	if !m.Now().Equal(start.Add(time.Hour + 6*time.Second)) {
		t.Fatalf("now %v", m.Now())
	}
}
