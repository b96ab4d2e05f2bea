package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ota-agent/ota-agent/wire"
)

// errStalled is the cause of a transfer cancelled because no byte arrived
// for a whole timeout.
var errStalled = errors.New("no data")

// errTooSlow is the cause of a transfer cancelled because it brought fewer
// than min_rate bytes a second over min_rate_window: a trickle.
var errTooSlow = errors.New("transfer too slow")

// ErrEncoded is returned for a 200 response whose body is not sent as the
// server stores it (Content-Encoding other than identity). ota-agent asks
// for identity and never decodes: a compressed body would have no known
// length, so neither max_file_size nor the free-space check could see the
// real size before the disk filled up, and installing the compressed bytes
// would break the app.
var ErrEncoded = errors.New("body is not sent as stored")

// StatusError is an HTTP answer other than 200.
type StatusError struct {
	URL  string
	Code int
	// RetryAfter is the delay the server's Retry-After asks for (0 if none
	// or unreadable); Schedule.Next caps what it honours.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("GET %s: %d %s", e.URL, e.Code, http.StatusText(e.Code))
	switch e.Code {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg += " (check user and password)"
	case http.StatusNotFound:
		msg += " (is the release published there?)"
	}
	return msg
}

// temporary reports whether the server may well answer later: 5xx, 408, 429.
func (e *StatusError) temporary() bool {
	return e.Code >= 500 || e.Code == http.StatusTooManyRequests || e.Code == http.StatusRequestTimeout
}

// client is an http.Client whose every wait (connect, TLS, headers, each
// stall between reads) is bounded by timeout, while a transfer that keeps
// moving is never cut.
type client struct {
	hc        *http.Client
	timeout   time.Duration
	minRate   int64         // bytes per second over rateWindow; 0: no check
	window    time.Duration // see App.MinRateWindow
	user      string
	password  string
	userAgent string
	requests  atomic.Int64
	bytes     atomic.Int64
	progress  func() // called whenever bytes arrive (watchdog pings)
}

func newClient(app *App, userAgent string) (*client, error) {
	tlsConf := &tls.Config{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	if app.CAFile != "" {
		pem, err := os.ReadFile(app.CAFile)
		if err != nil {
			return nil, &ConfigError{App: app.Name, Key: "ca_file", Msg: err.Error()}
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{App: app.Name, Key: "ca_file", Msg: app.CAFile + " holds no PEM certificate"}
		}
		tlsConf.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: app.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   app.Timeout,
		ResponseHeaderTimeout: app.Timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		TLSClientConfig:       tlsConf,
		// HTTP/1.1 only (ForceAttemptHTTP2 unset, a TLS config of our
		// own): one request at a time to one server gains nothing from
		// HTTP/2, and release builds leave net/http's HTTP/2 out
		// (-tags nethttpomithttp2, about 0.5 MB), so every build speaks
		// the same protocol.
		// Files arrive as the server stores them: no transparent gzip,
		// whose bodies come without a length (see ErrEncoded).
		DisableCompression: true,
	}
	c := &client{timeout: app.Timeout, minRate: app.MinRate, window: app.MinRateWindow,
		user: app.User, password: app.Password, userAgent: userAgent}
	c.hc = &http.Client{Transport: tr, CheckRedirect: c.checkRedirect}
	return c, nil
}

// checkRedirect never lets https fall to http, and drops credentials on a
// redirect to any other host (net/http would keep them for a subdomain).
// Each hop is a sign of life for the daemon's watchdog.
func (c *client) checkRedirect(req *http.Request, via []*http.Request) error {
	c.beat()
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing redirect from https to %s", req.URL.Redacted())
	}
	if req.URL.Host != via[0].URL.Host {
		req.Header.Del("Authorization")
	}
	return nil
}

// response is a 200 response whose body resets a stall timer on every read
// and is watched by a rate guard.
type response struct {
	*http.Response
	cancel context.CancelCauseFunc
	timer  *time.Timer
	rate   *rateGuard // nil when min_rate is 0
	c      *client
}

// validators are what a server said of a response, so the next request
// for it can be conditional: an unchanged `version` then costs one 304.
type validators struct {
	ETag, LastModified string
}

// errNotModified is get's answer to a conditional request that got a 304.
var errNotModified = errors.New("not modified")

// get fetches url and returns its 200 response. With validators it asks
// conditionally and returns errNotModified on a 304. Any other status is a
// *StatusError; a failure to reach the server wraps ErrUnreachable.
func (c *client) get(ctx context.Context, url string, v *validators) (*response, error) {
	return c.do(ctx, url, v, nil)
}

// byteRange asks for a file from byte from to its end, if the server's
// file is still the one validator (a strong ETag or a date) names.
type byteRange struct {
	from      int64
	validator string
}

// do is get, and with rng a Range request (RFC 9110 14.2): `Range:
// bytes=<from>-` with `If-Range: <validator>`, which accepts a 206 as
// well as a 200.
func (c *client) do(ctx context.Context, url string, v *validators, rng *byteRange) (*response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	req.Header.Set("User-Agent", c.userAgent)
	// Without Accept-Encoding any coding is acceptable (RFC 9110 12.5.3).
	req.Header.Set("Accept-Encoding", "identity")
	if c.progress != nil {
		// Every wait is bounded by the timeout, but several in a row
		// (connect, TLS, headers) can add up: each end is a sign of life.
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			DNSDone:              func(httptrace.DNSDoneInfo) { c.beat() },
			ConnectDone:          func(string, string, error) { c.beat() },
			TLSHandshakeDone:     func(tls.ConnectionState, error) { c.beat() },
			GotConn:              func(httptrace.GotConnInfo) { c.beat() },
			GotFirstResponseByte: c.beat,
		}))
	}
	if v != nil && v.ETag != "" {
		req.Header.Set("If-None-Match", v.ETag)
	}
	if v != nil && v.LastModified != "" {
		req.Header.Set("If-Modified-Since", v.LastModified)
	}
	if rng != nil {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", rng.from))
		req.Header.Set("If-Range", rng.validator)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	c.requests.Add(1)
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel(nil)
		var uerr *neturl.Error // its text would repeat the URL
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, classify(fmt.Errorf("GET %s: %w", url, err))
	}
	if resp.StatusCode != http.StatusOK && (rng == nil || resp.StatusCode != http.StatusPartialContent) {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
		resp.Body.Close()
		cancel(nil)
		if resp.StatusCode == http.StatusNotModified && v != nil {
			return nil, errNotModified
		}
		serr := &StatusError{URL: url, Code: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
		if serr.temporary() {
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, serr)
		}
		return nil, serr
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		resp.Body.Close()
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %w: Content-Encoding %q although identity was asked for; serve release files uncompressed (nginx: no gzip_static always; a bucket: no Content-Encoding metadata)",
			url, ErrEncoded, wire.Quote(ce))
	}
	r := &response{Response: resp, cancel: cancel, c: c}
	r.timer = time.AfterFunc(c.timeout, func() { cancel(fmt.Errorf("%w for %v", errStalled, c.timeout)) })
	if c.minRate > 0 {
		r.rate = newRateGuard(c.minRate, c.window, cancel)
	}
	return r, nil
}

// getFrom fetches url from byte from on, if the server's file is still the
// one validator names (see byteRange), to continue a partial download. It
// returns the response and the byte of the file its body starts at: from,
// for a 206 whose Content-Range starts there and runs to the file's end;
// 0 for a 200 (a server without Range support, or a changed file: the
// whole file comes). A 416 or a 206 for other bytes is asked again
// without Range. total is the whole file's length, -1 if unknown. Errors
// are get's.
func (c *client) getFrom(ctx context.Context, url string, from int64, validator string) (resp *response, start, total int64, err error) {
	resp, err = c.do(ctx, url, nil, &byteRange{from: from, validator: validator})
	var se *StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusRequestedRangeNotSatisfiable:
	case err != nil:
		return nil, 0, 0, err
	case resp.StatusCode == http.StatusOK:
		return resp, 0, resp.ContentLength, nil
	default:
		first, total, ok := contentRange(resp.Header.Get("Content-Range"), resp.ContentLength)
		if ok && first == from {
			return resp, from, total, nil
		}
		resp.Close()
	}
	resp, err = c.get(ctx, url, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	return resp, 0, resp.ContentLength, nil
}

// contentRange reads the Content-Range of a 206 answer to `Range:
// bytes=N-`: it must be one range, "bytes first-last/complete" (complete
// may be "*"), that runs to the file's end and has length bytes (-1:
// unknown). total is complete, -1 for "*".
func contentRange(h string, length int64) (first, total int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes ")
	r, complete, found2 := strings.Cut(spec, "/")
	a, b, found3 := strings.Cut(r, "-")
	if !found || !found2 || !found3 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || length >= 0 && length != last-first+1 {
		return 0, 0, false
	}
	if complete == "*" {
		return first, -1, true
	}
	total, err := strconv.ParseInt(complete, 10, 64)
	if err != nil || total != last+1 {
		return 0, 0, false
	}
	return first, total, true
}

// validator is what an If-Range may name to continue this response's file
// later: its strong ETag, else its Last-Modified; "" if it has neither (a
// weak ETag cannot be used: RFC 9110 13.1.5).
func (r *response) validator() string {
	if etag := r.Header.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		return etag
	}
	return r.Header.Get("Last-Modified")
}

// Read passes the body on and rearms the stall timer whenever bytes arrive.
func (r *response) Read(p []byte) (int, error) {
	n, err := r.Body.Read(p)
	if n > 0 {
		r.timer.Reset(r.c.timeout)
		if r.rate != nil {
			r.rate.got.Add(int64(n))
		}
		r.c.bytes.Add(int64(n))
		r.c.beat()
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(r.Request.Context()); errors.Is(cause, errStalled) || errors.Is(cause, errTooSlow) {
			err = cause
		}
		err = classify(fmt.Errorf("GET %s: %w", r.Request.URL.Redacted(), err))
	}
	return n, err
}

// Close ends the transfer and its timers.
func (r *response) Close() error {
	r.timer.Stop()
	if r.rate != nil {
		r.rate.stop()
	}
	err := r.Body.Close()
	r.cancel(nil)
	return err
}

// classify marks transport failures (refused, reset, timed out, cut short)
// as ErrUnreachable: nothing changed and a later run may well succeed. A
// certificate that does not verify is not one of them: it needs ca_file.
func classify(err error) error {
	var op *net.OpError
	var dns *net.DNSError
	var to interface{ Timeout() bool }
	var cert *tls.CertificateVerificationError
	switch {
	case err == nil, errors.Is(err, ErrUnreachable), errors.As(err, &cert):
		return err
	case errors.Is(err, context.Canceled) && !errors.Is(err, errStalled) && !errors.Is(err, errTooSlow):
		return err
	case errors.As(err, &op), errors.As(err, &dns), errors.As(err, &to) && to.Timeout(),
		errors.Is(err, errStalled), errors.Is(err, errTooSlow), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

// rateTicks is how many samples a rate window holds: the guard trips
// between one window and 1+1/rateTicks windows after a trickle starts.
const rateTicks = 10

// rateGuard cancels a transfer that brought fewer than min*window bytes in
// the last window (curl's --speed-limit and --speed-time). The stall timer
// cannot see a trickle: one byte every few seconds keeps rearming it, and
// keeps feeding the daemon's watchdog. The guard samples the byte count
// every window/rateTicks from its own timer and holds no goroutine; stop
// ends it.
type rateGuard struct {
	got    atomic.Int64 // bytes so far; Read adds to it
	min    int64
	window time.Duration
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	samples []int64 // got at each of the last rateTicks+1 ticks, oldest first
	timer   *time.Timer
	stopped bool
}

func newRateGuard(min int64, window time.Duration, cancel context.CancelCauseFunc) *rateGuard {
	g := &rateGuard{min: min, window: window, cancel: cancel, samples: make([]int64, 1, rateTicks+1)}
	g.timer = time.AfterFunc(window/rateTicks, g.tick)
	return g
}

// tick records the byte count and, once a whole window is sampled, cancels
// the transfer if the window brought too little.
func (g *rateGuard) tick() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	if len(g.samples) == rateTicks+1 {
		copy(g.samples, g.samples[1:])
		g.samples = g.samples[:rateTicks]
	}
	g.samples = append(g.samples, g.got.Load())
	if len(g.samples) == rateTicks+1 {
		moved := g.samples[rateTicks] - g.samples[0]
		if float64(moved) < float64(g.min)*g.window.Seconds() {
			g.cancel(fmt.Errorf("%w: %d bytes in the last %v, below min_rate %d bytes/s over min_rate_window", errTooSlow, moved, g.window, g.min))
			return
		}
	}
	g.timer.Reset(g.window / rateTicks)
}

// stop ends the guard; it never fires after stop returns.
func (g *rateGuard) stop() {
	g.mu.Lock()
	g.stopped = true
	g.timer.Stop()
	g.mu.Unlock()
}

// beat tells the daemon's watchdog the transfer is alive.
func (c *client) beat() {
	if c.progress != nil {
		c.progress()
	}
}

// retryAfter parses Retry-After, in seconds or as an HTTP date, into a
// delay from now. It returns 0 for no header, a value it cannot read, a
// negative number or a date in the past; a huge number is clamped before it
// is turned into a Duration (9300000000 s would overflow to a negative),
// so it never wraps. Schedule.Next applies the documented maximum.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if strings.Trim(h, "0123456789") == "" {
		secs, err := strconv.ParseInt(h, 10, 64)
		if err != nil || secs > int64(retryAfterCeiling/time.Second) {
			return retryAfterCeiling // all digits, so only too large to parse
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0 // "-5", "soon"
	}
	// Sub saturates instead of overflowing.
	return min(max(t.Sub(now), 0), retryAfterCeiling)
}

// retryAfterCeiling is where retryAfter clamps, far above what Next honours
// and far below an overflow.
const retryAfterCeiling = 100 * 365 * 24 * time.Hour
