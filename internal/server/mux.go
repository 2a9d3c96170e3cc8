package server

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
	"time"
)

// http2Preface starts every HTTP/2 (and so every gRPC) connection.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// splitListener accepts on l and routes each connection to the gRPC or the
// HTTP/1 side by its first bytes. The sniffing runs per connection, so a
// slow client cannot hold up the accept loop.
type splitListener struct {
	l        net.Listener
	grpc     *chanListener
	http     *chanListener
	closeOne sync.Once
}

func newSplitListener(l net.Listener) *splitListener {
	s := &splitListener{l: l, grpc: newChanListener(l.Addr()), http: newChanListener(l.Addr())}
	return s
}

// serve runs the accept loop until the listener is closed.
func (s *splitListener) serve() {
	defer s.grpc.close()
	defer s.http.close()
	for {
		c, err := s.l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		go s.route(c)
	}
}

func (s *splitListener) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, len(http2Preface))
	head, err := br.Peek(len(http2Preface))
	_ = c.SetReadDeadline(time.Time{})
	conn := &peekedConn{Conn: c, r: br}
	if err == nil && bytes.Equal(head, http2Preface) {
		s.grpc.deliver(conn)
		return
	}
	if err != nil && len(head) == 0 {
		_ = c.Close()
		return
	}
	s.http.deliver(conn)
}

func (s *splitListener) close() error {
	var err error
	s.closeOne.Do(func() { err = s.l.Close() })
	return err
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a net.Listener fed by splitListener.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) close() { l.closed.Do(func() { close(l.done) }) }

func (l *chanListener) Close() error { l.close(); return nil }

func (l *chanListener) Addr() net.Addr { return l.addr }
