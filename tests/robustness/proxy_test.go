package robustness

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// linkFault is what the proxy does to the bytes of one directed link
// (from one member to another).
type linkFault struct {
	blocked bool          // stall: hold the bytes until the link is healed (like iptables DROP)
	reset   bool          // close the link's connections and refuse new ones until healed
	delay   time.Duration // added to every chunk, order kept
	jitter  time.Duration // uniform in [0, jitter) on top of delay
	drop    float64       // probability that a chunk resets the connection instead
}

// link is a directed link between members (1-based); 0 is a source or
// destination the proxy cannot tell (a connection from 127.0.0.1).
type link struct{ from, to int }

// proxy sits between the members' peer ports. Member i advertises
// 127.X.Y.(i+1):proxyPort as its peer URL and listens on another port of
// the same address; the proxy forwards. Cairn, with SetMemberLocalAddr,
// dials its peers from 127.X.Y.(i+1), so the proxy knows the source member
// of every connection and controls each directed link alone: a connection
// that member i opened to member j carries i->j bytes one way (link i->j)
// and j->i bytes back (link j->i).
//
// etcd skips loopback addresses for SetMemberLocalAddr, so against etcd
// every connection comes from 127.0.0.1 and the source is unknown (0). For
// such a connection the proxy applies the fault that every link into (or
// out of) the member has in common, so isolating a member still cuts it
// off (etcd's streams carry both directions over connections to the
// isolated member's proxy), but faults on single links (a ring partition)
// need source identification and are skipped against etcd.
type proxy struct {
	n int // members 1..n

	mu        sync.Mutex
	faults    map[link]linkFault
	changed   chan struct{} // closed and replaced when faults change
	sources   map[string]int
	conns     map[*proxyConn]struct{}
	listeners []net.Listener
	closed    bool
	known     int // connections from an identified member
	unknown   int // connections whose source could not be told
}

func newProxy(n int) *proxy {
	return &proxy{n: n, faults: map[link]linkFault{}, changed: make(chan struct{}),
		sources: map[string]int{}, conns: map[*proxyConn]struct{}{}}
}

// addMember registers member i's source IP and starts forwarding
// connections accepted on l to target.
func (p *proxy) addMember(i int, ip string, l net.Listener, target string) {
	p.mu.Lock()
	p.sources[ip] = i
	p.listeners = append(p.listeners, l)
	p.mu.Unlock()
	go p.serve(i, l, target)
}

func (p *proxy) serve(to int, l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		from := 0
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			p.mu.Lock()
			from = p.sources[a.IP.String()]
			p.mu.Unlock()
		}
		go p.handle(link{from, to}, c, target)
	}
}

func (p *proxy) handle(l link, in net.Conn, target string) {
	out, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		in.Close()
		return
	}
	pc := &proxyConn{l: l, in: in, out: out, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed || p.resetLocked(l) {
		p.mu.Unlock()
		pc.close()
		return
	}
	p.conns[pc] = struct{}{}
	if l.from == 0 {
		p.unknown++
	} else {
		p.known++
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(pc, in, out, l) })
	wg.Go(func() { p.pipe(pc, out, in, link{l.to, l.from}) })
	wg.Wait()
	pc.close()
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

type proxyConn struct {
	l       link // from the dialer to the listener's member
	in, out net.Conn
	once    sync.Once
	done    chan struct{}
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		c.in.Close()
		c.out.Close()
		close(c.done)
	})
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst through the faults of link l, keeping order.
func (p *proxy) pipe(c *proxyConn, src, dst net.Conn, l link) {
	ch := make(chan chunk, 64)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				// A blocked link stops reading too: nothing sent while it is
				// blocked may be delivered after it heals except this chunk
				// (in flight when the link was cut).
				if !p.waitUnblocked(c, l) {
					return
				}
				select {
				case ch <- chunk{buf[:n], time.Now()}:
				case <-c.done:
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					c.close()
					return
				}
				select { // EOF: half-close dst once everything before it is written
				case ch <- chunk{nil, time.Now()}:
				case <-c.done:
				}
				return
			}
		}
	}()
	var last time.Time
	for ck := range ch {
		if ck.b == nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
		f, changed := p.fault(l)
		for f.blocked {
			select {
			case <-changed:
			case <-c.done:
				return
			}
			f, changed = p.fault(l)
		}
		if f.drop > 0 && rand.Float64() < f.drop {
			c.close()
			return
		}
		if f.delay > 0 || f.jitter > 0 {
			d := f.delay
			if f.jitter > 0 {
				d += rand.N(f.jitter)
			}
			release := ck.at.Add(d)
			if release.Before(last) {
				release = last
			}
			last = release
			if wait := time.Until(release); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-c.done:
					t.Stop()
					return
				}
			}
		}
		if _, err := dst.Write(ck.b); err != nil {
			c.close()
			return
		}
	}
}

// waitUnblocked waits until link l is not blocked, or the connection is
// closed (false).
func (p *proxy) waitUnblocked(c *proxyConn, l link) bool {
	for {
		f, changed := p.fault(l)
		if !f.blocked {
			return true
		}
		select {
		case <-changed:
		case <-c.done:
			return false
		}
	}
}

// fault returns the fault of link l and a channel closed at the next change.
func (p *proxy) fault(l link) (linkFault, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faultLocked(l), p.changed
}

func (p *proxy) faultLocked(l link) linkFault {
	switch {
	case l.from != 0 && l.to != 0:
		return p.faults[l]
	case l.from == 0 && l.to == 0:
		return linkFault{}
	}
	// One end unknown: the fault every link at the known end shares.
	var common linkFault
	first := true
	for m := 1; m <= p.n; m++ {
		var f linkFault
		switch {
		case l.from == 0 && m != l.to:
			f = p.faults[link{m, l.to}]
		case l.to == 0 && m != l.from:
			f = p.faults[link{l.from, m}]
		default:
			continue
		}
		if first {
			common, first = f, false
		} else if f != common {
			return linkFault{}
		}
	}
	return common
}

// set replaces the fault of the directed links given.
func (p *proxy) set(f linkFault, links ...link) {
	p.mu.Lock()
	for _, l := range links {
		if f == (linkFault{}) {
			delete(p.faults, l)
		} else {
			p.faults[l] = f
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
	var reset []*proxyConn
	for c := range p.conns {
		if p.resetLocked(c.l) {
			reset = append(reset, c)
		}
	}
	p.mu.Unlock()
	for _, c := range reset {
		c.close()
	}
}

// resetLocked reports whether a connection on link l (either direction)
// must be closed.
func (p *proxy) resetLocked(l link) bool {
	return p.faultLocked(l).reset || p.faultLocked(link{l.to, l.from}).reset
}

// healAll removes every fault.
func (p *proxy) healAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.faults)
	close(p.changed)
	p.changed = make(chan struct{})
}

// identified reports how many connections came from a known member and
// how many from an unknown source.
func (p *proxy) identified() (known, unknown int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.known, p.unknown
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	ls := p.listeners
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, c := range conns {
		c.close()
	}
}

// isolate cuts member m off from every other member, both ways.
func isolateLinks(n, m int) []link {
	var ls []link
	for o := 1; o <= n; o++ {
		if o != m {
			ls = append(ls, link{m, o}, link{o, m})
		}
	}
	return ls
}
