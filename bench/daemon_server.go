package main

// The release server of the daemon part: http or https (with a throwaway CA),
// counting requests, connections, handshakes and bytes on the wire.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"
)

// daemonServer is the benchmark's server for one variant: the size part's
// counting listener, plus what each request was (conditional? status?)
// and each TLS handshake (full or resumed).
type daemonServer struct {
	*server
	mu                   sync.Mutex
	full, resumed        int64
	status304, status200 int64
	conditional, other   int64
	proto                string
}

func startDaemonServer(root string, v daemonVariant, idle time.Duration, chain tls.Certificate) (*daemonServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &daemonServer{server: &server{}}
	s.ln = &countingListener{Listener: ln, s: s.server}
	s.hs = &http.Server{Handler: s.handler(root), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle}
	if !v.tls {
		go s.hs.Serve(s.ln)
		return s, nil
	}
	s.hs.TLSConfig = &tls.Config{
		Certificates:           []tls.Certificate{chain},
		SessionTicketsDisabled: !v.tickets,
		// Runs for every handshake, resumptions included.
		VerifyConnection: func(cs tls.ConnectionState) error {
			s.mu.Lock()
			if cs.DidResume {
				s.resumed++
			} else {
				s.full++
			}
			s.mu.Unlock()
			return nil
		},
	}
	// ServeTLS wraps the counting listener, so the counts are the TLS
	// records on the wire; it also offers h2, as a real server would.
	go s.hs.ServeTLS(s.ln, "", "")
	return s, nil
}

func (s *daemonServer) snapshot() dcounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return dcounts{counts: s.server.snapshot(), full: s.full, resumed: s.resumed,
		status304: s.status304, status200: s.status200, conditional: s.conditional, other: s.other}
}

func (s *daemonServer) lastProto() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proto
}

func (s *daemonServer) handler(root string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.requests.Add(1)
		sw := &statusWriter{ResponseWriter: w, s: s.server, code: http.StatusOK}
		http.ServeFile(sw, r, filepath.Join(root, filepath.FromSlash(path.Clean("/"+r.URL.Path))))
		s.busy.Add(int64(time.Since(start)))
		s.mu.Lock()
		defer s.mu.Unlock()
		if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
			s.conditional++
		}
		switch sw.code {
		case http.StatusOK:
			s.status200++
		case http.StatusNotModified:
			s.status304++
		default:
			s.other++
		}
		s.proto = r.Proto
	})
}

// statusWriter counts body bytes and keeps the status. Unlike
// countingWriter it has no ReadFrom: the HTTP/2 ResponseWriter has none,
// and these files are small.
type statusWriter struct {
	http.ResponseWriter
	s    *server
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.s.body.Add(int64(n))
	return n, err
}

// ---- certificates ----

// certs makes a throwaway ECDSA P-256 chain: a root (written to ca.pem, the
// agent's ca_file), an intermediate, and a leaf for 127.0.0.1. The server
// sends leaf and intermediate, as public servers do.
func (d *daemonBench) certs() (caFile string, chain tls.Certificate, err error) {
	now := time.Now()
	mk := func(cn string, ca bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, serial int64) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn, Organization: []string{"ota-agent bench"}},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
		}
		if ca {
			tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		} else {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			return nil, nil, nil, err
		}
		cert, err := x509.ParseCertificate(der)
		return cert, key, der, err
	}
	root, rootKey, rootDER, err := mk("bench root", true, nil, nil, 1)
	if err != nil {
		return "", chain, err
	}
	inter, interKey, interDER, err := mk("bench intermediate", true, root, rootKey, 2)
	if err != nil {
		return "", chain, err
	}
	_, leafKey, leafDER, err := mk("127.0.0.1", false, inter, interKey, 3)
	if err != nil {
		return "", chain, err
	}
	caFile = filepath.Join(d.work, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}), 0o644); err != nil {
		return "", chain, err
	}
	return caFile, tls.Certificate{Certificate: [][]byte{leafDER, interDER}, PrivateKey: leafKey}, nil
}

// ---- the table ----
