package main

// The release server the bench updates from: in process, on loopback, counting
// requests, body bytes, connections and bytes on the wire.

import (
	"io"
	"net"
	"net/http"
	"path"
	"path/filepath"
	"sync/atomic"
	"time"
)

// server serves root over HTTP/1.1 on 127.0.0.1 and counts what it does:
// requests and response body bytes (at the ResponseWriter), and every
// byte written to and read from its connections (at the net.Conn), so
// header bytes are exact: sent - body.
type server struct {
	ln                net.Listener
	hs                *http.Server
	requests, body    atomic.Int64
	conns, sent, recv atomic.Int64
	busy              atomic.Int64 // nanoseconds spent in the handler
}

type counts struct{ requests, body, conns, sent, recv, busy int64 }

func startServer(root string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{}
	s.ln = &countingListener{Listener: ln, s: s}
	s.hs = &http.Server{Handler: s.handler(root), ReadHeaderTimeout: 10 * time.Second}
	go s.hs.Serve(s.ln)
	return s, nil
}

func (s *server) Addr() string { return s.ln.Addr().String() }
func (s *server) Close() error { return s.hs.Close() }

func (s *server) snapshot() counts {
	return counts{s.requests.Load(), s.body.Load(), s.conns.Load(), s.sent.Load(), s.recv.Load(), s.busy.Load()}
}

func (s *server) handler(root string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.requests.Add(1)
		cw := &countingWriter{ResponseWriter: w, s: s}
		http.ServeFile(cw, r, filepath.Join(root, filepath.FromSlash(path.Clean("/"+r.URL.Path))))
		s.busy.Add(int64(time.Since(start)))
	})
}

// countingWriter counts response body bytes. It keeps ReadFrom, so the
// server still uses sendfile and spends no CPU copying the file.
type countingWriter struct {
	http.ResponseWriter
	s *server
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.s.body.Add(int64(n))
	return n, err
}

func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := w.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	w.s.body.Add(n)
	return n, err
}

type countingListener struct {
	net.Listener
	s *server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.conns.Add(1)
	return &countingConn{Conn: c, s: l.s}, nil
}

// countingConn counts bytes both ways. ReadFrom passes through to the TCP
// connection, which sends a file with sendfile(2).
type countingConn struct {
	net.Conn
	s *server
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.recv.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.s.sent.Add(int64(n))
	return n, err
}

func (c *countingConn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.Conn.(io.ReaderFrom).ReadFrom(r)
	c.s.sent.Add(n)
	return n, err
}

// ---- files ----
