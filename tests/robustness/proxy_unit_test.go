package robustness

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func dialFrom(t *testing.T, from, to string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a line and reports whether its echo came back within d.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, d time.Duration) (bool, error) {
	t.Helper()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false, err
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	line, err := r.ReadString('\n')
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return line == "ping\n", nil
}

// The proxy tells members apart by source address and stalls, resets and
// heals each directed link on its own.
func TestProxyLinks(t *testing.T) {
	p := newProxy(2)
	t.Cleanup(p.close)
	target := echoServer(t, "127.0.0.3")
	l, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addMember(1, "127.0.0.2", mustListen(t, "127.0.0.2"), echoServer(t, "127.0.0.2"))
	p.addMember(2, "127.0.0.3", l, target)

	c := dialFrom(t, "127.0.0.2", l.Addr().String()) // member 1 -> member 2
	r := bufio.NewReader(c)
	if ok, err := roundTrip(t, c, r, 5*time.Second); !ok || err != nil {
		t.Fatalf("healthy link: %v %v", ok, err)
	}

	// Stall the reverse link only: the echo is held, then delivered.
	p.set(linkFault{blocked: true}, link{2, 1})
	if ok, err := roundTrip(t, c, r, 300*time.Millisecond); ok || err != nil {
		t.Fatalf("stalled link delivered: %v %v", ok, err)
	}
	p.healAll()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("after heal: %q %v", line, err)
	}

	// An unknown source (etcd dials from 127.0.0.1) gets the fault every
	// link into the member shares: an isolated member is cut off from it.
	p.set(linkFault{blocked: true}, isolateLinks(2, 2)...)
	cu := dialFrom(t, "127.0.0.1", l.Addr().String())
	ru := bufio.NewReader(cu)
	if ok, err := roundTrip(t, cu, ru, 300*time.Millisecond); ok || err != nil {
		t.Fatalf("isolated member reached from an unknown source: %v %v", ok, err)
	}
	p.healAll()

	// Reset closes the connection.
	p.set(linkFault{reset: true}, link{1, 2})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("reset link: connection still open")
	}
	p.healAll()
	if known, unknown := p.identified(); known < 1 {
		t.Fatalf("identified %d known, %d unknown connections", known, unknown)
	}

	// Delay keeps order and adds latency.
	p.set(linkFault{delay: 200 * time.Millisecond}, link{1, 2})
	c2 := dialFrom(t, "127.0.0.2", l.Addr().String())
	r2 := bufio.NewReader(c2)
	start := time.Now()
	if ok, err := roundTrip(t, c2, r2, 5*time.Second); !ok || err != nil {
		t.Fatalf("delayed link: %v %v", ok, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("delayed round trip took %v", d)
	}
}

func mustListen(t *testing.T, ip string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
