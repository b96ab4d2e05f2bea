package serve

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// Range requests, as a resumed download makes them: a single range from an
// offset to the end, checked with If-Range against the ETag serve computes
// (or the Last-Modified date); a range past the end is a 416.
func TestServeRange(t *testing.T) {
	dir := t.TempDir()
	var body strings.Builder
	for i := 0; body.Len() < 1<<20; i++ {
		fmt.Fprintf(&body, "line %07d\n", i)
	}
	full := body.String()
	size := len(full)
	writeFile(t, filepath.Join(dir, "p/v1_big.bin"), full)
	var logs bytes.Buffer
	srv := startServer(t, dir, Options{Log: zerolog.New(&logs).Level(zerolog.DebugLevel)})
	url := srv.URL + "/p/v1_big.bin"

	// A download cut at half: the client read half and hung up.
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	half := make([]byte, size/2)
	if _, err := io.ReadFull(resp.Body, half); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag, lastMod := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if etag == "" || lastMod == "" || strings.HasPrefix(etag, "W/") {
		t.Fatalf("Get(%q): ETag %q, Last-Modified %q; want a strong ETag and a date", url, etag, lastMod)
	}

	tests := []struct {
		name         string
		header       map[string]string
		status       int
		contentRange string
		body         string
	}{
		{"rest, if-range etag", map[string]string{"Range": fmt.Sprintf("bytes=%d-", size/2), "If-Range": etag},
			206, fmt.Sprintf("bytes %d-%d/%d", size/2, size-1, size), full[size/2:]},
		{"rest, if-range date", map[string]string{"Range": fmt.Sprintf("bytes=%d-", size/2), "If-Range": lastMod},
			206, fmt.Sprintf("bytes %d-%d/%d", size/2, size-1, size), full[size/2:]},
		{"rest, no if-range", map[string]string{"Range": fmt.Sprintf("bytes=%d-", size-10)},
			206, fmt.Sprintf("bytes %d-%d/%d", size-10, size-1, size), full[size-10:]},
		{"closed range", map[string]string{"Range": "bytes=100-199"},
			206, fmt.Sprintf("bytes 100-199/%d", size), full[100:200]},
		{"suffix", map[string]string{"Range": "bytes=-5"},
			206, fmt.Sprintf("bytes %d-%d/%d", size-5, size-1, size), full[size-5:]},
		{"stale etag: the whole file", map[string]string{"Range": "bytes=10-", "If-Range": `"0000"`},
			200, "", full},
		{"weak etag: the whole file", map[string]string{"Range": "bytes=10-", "If-Range": "W/" + etag},
			200, "", full},
		{"old date: the whole file", map[string]string{"Range": "bytes=10-", "If-Range": "Mon, 02 Jan 2006 15:04:05 GMT"},
			200, "", full},
		{"at the end", map[string]string{"Range": fmt.Sprintf("bytes=%d-", size), "If-Range": etag},
			416, fmt.Sprintf("bytes */%d", size), ""},
		{"past the end", map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", size+10, size+20)},
			416, fmt.Sprintf("bytes */%d", size), ""},
		{"not bytes", map[string]string{"Range": "lines=1-2"},
			200, "", full},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for k, v := range tt.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: read body: %v", tt.name, err)
		}
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Range") != tt.contentRange {
			t.Errorf("%s: Get(%q) = %d, Content-Range %q; want %d, %q", tt.name, url, resp.StatusCode, resp.Header.Get("Content-Range"), tt.status, tt.contentRange)
		}
		if tt.status != 416 && (string(b) != tt.body || resp.ContentLength != int64(len(tt.body))) {
			t.Errorf("%s: body %d bytes (Content-Length %d), want %d", tt.name, len(b), resp.ContentLength, len(tt.body))
		}
		if tt.status != 416 && resp.Header.Get("ETag") != etag {
			t.Errorf("%s: ETag %q, want %q", tt.name, resp.Header.Get("ETag"), etag)
		}
	}
	// The kept half and the 206 make the file.
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(half)))
	req.Header.Set("If-Range", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(half)+string(rest) != full {
		t.Errorf("the first half and the 206 (%d + %d bytes) are not the file (%d)", len(half), len(rest), size)
	}
	// HEAD with a range: the 206's head, no body.
	hreq, _ := http.NewRequest(http.MethodHead, url, nil)
	hreq.Header.Set("Range", "bytes=10-")
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	if hresp.StatusCode != 206 || hresp.ContentLength != int64(size-10) {
		t.Errorf("HEAD with Range = %d, Content-Length %d; want 206, %d", hresp.StatusCode, hresp.ContentLength, size-10)
	}
	// The request log shows the Range request and its answer.
	want := fmt.Sprintf(`"status":206,"bytes":%d`, size-len(half))
	if !strings.Contains(logs.String(), fmt.Sprintf(`"range":"bytes=%d-","if_range":%q`, len(half), etag)) || !strings.Contains(logs.String(), want) {
		t.Errorf("request log has no line for the Range request with %s:\n%s", want, logs.String())
	}
}
