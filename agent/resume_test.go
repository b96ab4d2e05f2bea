package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ota-agent/ota-agent/internal/testenv"
	"github.com/ota-agent/ota-agent/store"
)

// bigBody is a release file large enough to be cut in the middle.
func bigBody(tag string) string {
	var b strings.Builder
	for i := 0; b.Len() < 1<<20; i++ {
		fmt.Fprintf(&b, "%s line %07d\n", tag, i)
	}
	return b.String()
}

// rangeFile serves body with an ETag through http.ServeContent (Range,
// If-Range, 416), and cuts the first response at half: the headers
// announce the whole length, half the bytes arrive, the connection drops.
// answer, if set, replaces the answer to every later request.
func rangeFile(body, etag string, answer http.HandlerFunc) http.HandlerFunc {
	var cut atomic.Bool
	return func(w http.ResponseWriter, r *http.Request) {
		if cut.CompareAndSwap(false, true) {
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write([]byte(body[:len(body)/2]))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		if answer != nil {
			answer(w, r)
			return
		}
		w.Header().Set("ETag", etag)
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
	}
}

// resumeEnv is the sample release with a 1 MiB big.bin beside main.py.
func resumeEnv(t *testing.T, big http.HandlerFunc) (*server, *env, string) {
	files := sample()
	body := bigBody("v1.0.1")
	srv := newServer(t, files)
	srv.handle("/sample/v1.0.1_big.bin", big)
	e := newEnv(t, srv.URL)
	e.app.Files = []string{"main.py", "big.bin"}
	return srv, e, body
}

// bigRequests returns the Range header of each request for big.bin.
func bigRequests(srv *server) []string {
	var out []string
	for _, r := range srv.requests() {
		if strings.HasSuffix(r.URL.Path, "_big.bin") {
			out = append(out, r.Header.Get("Range")+" "+r.Header.Get("If-Range"))
		}
	}
	return out
}

// A download cut at half fails the update (unreachable, nothing changed)
// and keeps its bytes; the next run asks for the rest with Range and
// If-Range, and installs the whole file.
func TestResumeAfterCut(t *testing.T) {
	body := bigBody("v1.0.1")
	srv, e, _ := resumeEnv(t, rangeFile(body, `"big-1"`, nil))
	a := e.agent(t)
	_, err := a.Update(context.Background())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Update() with big.bin cut at half = %v, want ErrUnreachable", err)
	}
	if got := tree(t, e.appDir); len(got) != 0 {
		t.Fatalf("app dir after a cut download = %v, want empty", got)
	}
	res, err := a.Update(context.Background())
	if err != nil || !res.Updated {
		t.Fatalf("Update() after the cut = %+v, %v; want the update", res, err)
	}
	half := len(body) / 2
	want := []string{" ", fmt.Sprintf("bytes=%d- \"big-1\"", half)}
	if got := bigRequests(srv); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests for big.bin (Range, If-Range) = %q, want %q", got, want)
	}
	// The second run fetched the version, the manifest's 404 and the rest
	// of big.bin (main.py was staged by the first): about half the file.
	if res.Bytes > int64(len(body)-half+1024) {
		t.Errorf("the second run read %d bytes, want about %d (the rest of big.bin)", res.Bytes, len(body)-half)
	}
	if b, _ := os.ReadFile(filepath.Join(e.appDir, "big.bin")); string(b) != body {
		t.Errorf("big.bin installed: %d bytes, not the published file", len(b))
	}
}

// Whatever the server answers the Range request with, the file arrives
// whole: a server without Range support (200), a changed file (If-Range
// fails: 200 with the new file), 416, a 206 for other bytes. Without a
// validator nothing is resumed.
func TestResumeFallsBack(t *testing.T) {
	body := bigBody("v1.0.1")
	half := len(body) / 2
	tests := []struct {
		name   string
		answer http.HandlerFunc
		etag   string
		want   string // the second request's Range and If-Range
		bytes  int    // what the second run reads of big.bin
	}{
		{"no range support", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"big-1"`)
			w.Write([]byte(body))
		}, `"big-1"`, fmt.Sprintf("bytes=%d- \"big-1\"", half), len(body)},
		{"changed file", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"big-2"`)
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
		}, `"big-1"`, fmt.Sprintf("bytes=%d- \"big-1\"", half), len(body)},
		{"416", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") != "" {
				http.Error(w, "no", http.StatusRequestedRangeNotSatisfiable)
				return
			}
			w.Write([]byte(body))
		}, `"big-1"`, fmt.Sprintf("bytes=%d- \"big-1\"", half), len(body)},
		{"206 for other bytes", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") != "" {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-99/%d", len(body)))
				w.WriteHeader(http.StatusPartialContent)
				w.Write([]byte(body[:100]))
				return
			}
			w.Write([]byte(body))
		}, `"big-1"`, fmt.Sprintf("bytes=%d- \"big-1\"", half), len(body)},
		{"no validator", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(body))
		}, "", " ", len(body)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cut := rangeFile(body, tt.etag, tt.answer)
			srv, e, _ := resumeEnv(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.etag == "" {
					// No validator on the cut response either.
					w = noETag{w}
				}
				cut(w, r)
			})
			a := e.agent(t)
			if _, err := a.Update(context.Background()); !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Update() with big.bin cut = %v, want ErrUnreachable", err)
			}
			res, err := a.Update(context.Background())
			if err != nil || !res.Updated {
				t.Fatalf("Update() after the cut = %+v, %v; want the update", res, err)
			}
			got := bigRequests(srv)
			if len(got) < 2 || got[1] != tt.want {
				t.Errorf("requests for big.bin (Range, If-Range) = %q, want the second %q", got, tt.want)
			}
			if b, _ := os.ReadFile(filepath.Join(e.appDir, "big.bin")); string(b) != body {
				t.Errorf("big.bin installed: %d bytes, not the published file", len(b))
			}
			if res.Bytes < int64(tt.bytes) {
				t.Errorf("the second run read %d bytes, want at least %d", res.Bytes, tt.bytes)
			}
		})
	}
}

// noETag drops the ETag a handler sets.
type noETag struct{ http.ResponseWriter }

func (w noETag) WriteHeader(code int) {
	w.Header().Del("ETag")
	w.ResponseWriter.WriteHeader(code)
}

func (w noETag) Write(p []byte) (int, error) {
	w.Header().Del("ETag")
	return w.ResponseWriter.Write(p)
}

func (w noETag) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

// With a manifest, and a kept release holding an older big.bin at the same
// path, the partial download is continued (not replaced by the local
// candidate) and the manifest's hash checks the spliced file.
func TestResumeWithManifest(t *testing.T) {
	srv := newServer(t, map[string]string{})
	p := newPublisher(t, srv)
	old, body := bigBody("v1"), bigBody("v2")
	p.publish("v1", map[string]string{"main.py": "print(1)\n", "big.bin": old})
	e := newEnv(t, srv.URL)
	e.app.Files = nil
	e.app.PublicKeys = []string{p.pub.String()}
	if _, err := e.agent(t).Update(context.Background()); err != nil {
		t.Fatalf("Update() to v1 = %v", err)
	}
	p.publish("v2", map[string]string{"main.py": "print(2)\n", "big.bin": body})
	srv.handle("/sample/v2_big.bin", rangeFile(body, `"v2-big"`, nil))
	a := e.agent(t)
	if _, err := a.Update(context.Background()); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Update() to v2 with big.bin cut = %v, want ErrUnreachable", err)
	}
	if res, err := a.Update(context.Background()); err != nil || !res.Updated {
		t.Fatalf("Update() to v2 after the cut = %+v, %v", res, err)
	}
	var ranges []string
	for _, r := range srv.requests() {
		if r.URL.Path == "/sample/v2_big.bin" {
			ranges = append(ranges, r.Header.Get("Range"))
		}
	}
	if want := []string{"", fmt.Sprintf("bytes=%d-", len(body)/2)}; fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("Range of the requests for v2_big.bin = %q, want %q", ranges, want)
	}
	if b, _ := os.ReadFile(filepath.Join(e.appDir, "big.bin")); string(b) != body {
		t.Errorf("big.bin installed: %d bytes, not v2's", len(b))
	}
	if st, _ := store.ReadState(e.app.StateDir()); st.Version != "v2" {
		t.Errorf("installed = %q, want v2", st.Version)
	}
}

// cutProxy forwards TCP to backend; the first response to a request whose
// line contains cutAt is cut after n bytes. It records each request's
// Range and If-Range headers.
type cutProxy struct {
	ln      net.Listener
	backend string
	cutAt   string
	n       int64
	cut     atomic.Bool
	mu      sync.Mutex
	log     []string // "<request line> | <Range> | <If-Range>"
}

func newCutProxy(t *testing.T, backend, cutAt string, n int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: backend, cutAt: cutAt, n: n}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.conn(c)
	}
}

func (p *cutProxy) conn(c net.Conn) {
	defer c.Close()
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	defer b.Close()
	var limit atomic.Int64 // bytes of the response stream allowed; -1: no cut
	limit.Store(-1)
	var sent atomic.Int64
	go func() {
		// Requests carry no body here: parse each head, forward it.
		r := bufio.NewReader(c)
		for {
			var head bytes.Buffer
			line, err := r.ReadString('\n')
			if err != nil {
				b.Close()
				return
			}
			head.WriteString(line)
			req := strings.TrimSpace(line)
			var rng, ifRange string
			for {
				h, err := r.ReadString('\n')
				if err != nil {
					b.Close()
					return
				}
				head.WriteString(h)
				k, v, _ := strings.Cut(strings.TrimSpace(h), ":")
				switch strings.ToLower(k) {
				case "range":
					rng = strings.TrimSpace(v)
				case "if-range":
					ifRange = strings.TrimSpace(v)
				}
				if h == "\r\n" {
					break
				}
			}
			p.mu.Lock()
			p.log = append(p.log, req+" | "+rng+" | "+ifRange)
			p.mu.Unlock()
			if strings.Contains(req, p.cutAt) && p.cut.CompareAndSwap(false, true) {
				limit.Store(sent.Load() + p.n)
			}
			if _, err := b.Write(head.Bytes()); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		m, err := b.Read(buf)
		if m > 0 {
			if l := limit.Load(); l >= 0 && sent.Load()+int64(m) >= l {
				c.Write(buf[:l-sent.Load()])
				return // the connection drops mid-body
			}
			if _, werr := c.Write(buf[:m]); werr != nil {
				return
			}
			sent.Add(int64(m))
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// The same against a real nginx (Range, ETag), the cut made by a proxy in
// between: the second run continues with a Range request (If-Range with
// nginx's ETag) that nginx answers with a 206: it reads only the rest.
func TestResumeNginx(t *testing.T) {
	_, err := exec.LookPath(testenv.NginxBinary)
	testenv.Require(t, "nginx", err == nil)
	www := t.TempDir()
	body := bigBody("v1.0.1")
	files := map[string]string{
		"sample/version":        "v1.0.1\n",
		"sample/v1.0.1_main.py": "print('v1.0.1 main')\n",
		"sample/v1.0.1_big.bin": body,
		"sample/v1.0.1/main.py": "print('v1.0.1 main')\n",
		"sample/v1.0.1/big.bin": body,
	}
	for name, b := range files {
		os.MkdirAll(filepath.Join(www, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(www, name), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	url := testenv.StartNginx(t, testenv.NginxOptions{Root: www})
	for _, prefix := range []bool{true, false} {
		name := map[bool]string{true: "prefix", false: "subdir"}[prefix]
		t.Run(name, func(t *testing.T) {
			bigURL := "/sample/v1.0.1_big.bin"
			if !prefix {
				bigURL = "/sample/v1.0.1/big.bin"
			}
			half := int64(len(body) / 2)
			// The cut comes after the response head (under 1 KiB) and
			// half the body.
			proxy := newCutProxy(t, strings.TrimPrefix(url, "http://"), bigURL, half)
			e := newEnv(t, "http://"+proxy.ln.Addr().String())
			e.app.UseVersionPrefix = prefix
			e.app.Files = []string{"main.py", "big.bin"}
			a := e.agent(t)
			if _, err := a.Update(context.Background()); !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Update() with big.bin cut = %v, want ErrUnreachable", err)
			}
			res, err := a.Update(context.Background())
			if err != nil || !res.Updated {
				t.Fatalf("Update() after the cut = %+v, %v", res, err)
			}
			var got []string
			for _, r := range proxy.requests() {
				if strings.Contains(r, bigURL) {
					got = append(got, r)
				}
			}
			if len(got) != 2 || !strings.Contains(got[0], "|  | ") || !strings.Contains(got[1], "| bytes=") || strings.HasSuffix(got[1], "| ") {
				t.Fatalf("requests for big.bin = %q, want a plain one, then one with Range and If-Range", got)
			}
			if res.Bytes >= int64(len(body))-half+1<<10 || res.Bytes < int64(len(body))-half-1<<10 {
				t.Errorf("the second run read %d bytes, want about %d: the rest of big.bin", res.Bytes, int64(len(body))-half)
			}
			b, _ := os.ReadFile(filepath.Join(e.appDir, "big.bin"))
			if string(b) != body {
				t.Errorf("big.bin installed: %d bytes, not the published file", len(b))
			}
			t.Logf("second request: %s; the second run read %d of %d bytes", got[1], res.Bytes, len(body))
		})
	}
}
