package metrics

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Prometheus text exposition format, as its specification words it:
// comments "# HELP name text" and "# TYPE name type", then samples
// "name{label="value",...} value". checkExposition checks every line of b
// against it: names and label names are valid, label values are quoted
// with only \\, \" and \n escaped, values are floats, every sample's
// metric has one TYPE line before it, and no sample repeats.
var (
	nameRE   = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$`)
	typesOK  = map[string]bool{"counter": true, "gauge": true, "histogram": true, "summary": true, "untyped": true}
)

func checkExposition(t *testing.T, b []byte) map[string]float64 {
	t.Helper()
	types := map[string]string{}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			if f := strings.SplitN(line, " ", 4); len(f) < 4 || !nameRE.MatchString(f[2]) {
				t.Errorf("line %d: bad HELP: %q", n, line)
			}
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 || !nameRE.MatchString(f[2]) || !typesOK[f[3]] || types[f[2]] != "" {
				t.Errorf("line %d: bad or repeated TYPE: %q", n, line)
			}
			types[f[2]] = f[3]
		case strings.HasPrefix(line, "#"):
		default:
			m := sampleRE.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("line %d: not a sample: %q", n, line)
				continue
			}
			if types[m[1]] == "" {
				t.Errorf("line %d: sample of %s before its TYPE", n, m[1])
			}
			if strings.HasSuffix(m[1], "_total") && types[m[1]] != "counter" {
				t.Errorf("line %d: %s ends in _total but is a %s", n, m[1], types[m[1]])
			}
			v, err := strconv.ParseFloat(m[4], 64)
			if err != nil {
				t.Errorf("line %d: value %q: %v", n, m[4], err)
			}
			key := m[1] + "{" + m[3] + "}"
			if _, dup := samples[key]; dup {
				t.Errorf("line %d: sample %s repeated", n, key)
			}
			samples[key] = v
		}
	}
	return samples
}

func TestRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ota_agent.prom")
	t0 := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	events := []Event{
		{App: "sample", Version: "v1", At: t0, Updated: true, Bytes: 1000},
		{App: "sample", Version: "v1", At: t0.Add(time.Minute)},
		{App: `we"ird\app`, Version: "", At: t0.Add(2 * time.Minute), Failed: true},
		{App: "sample", Version: "v2", At: t0.Add(3 * time.Minute), Updated: true, Bytes: 500},
		{App: "sample", Version: "v1", At: t0.Add(4 * time.Minute), Failed: true, RolledBack: true},
	}
	for _, ev := range events {
		if err := Record(path, ev); err != nil {
			t.Fatalf("Record(%+v): %v", ev, err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := checkExposition(t, b)
	for key, want := range map[string]float64{
		`ota_agent_info{app="sample",version="v1"}`:                    1,
		`ota_agent_last_check_timestamp_seconds{app="sample"}`:         float64(t0.Add(4 * time.Minute).Unix()),
		`ota_agent_last_success_timestamp_seconds{app="sample"}`:       float64(t0.Add(3 * time.Minute).Unix()),
		`ota_agent_updates_total{app="sample"}`:                        2,
		`ota_agent_failures_total{app="sample"}`:                       1,
		`ota_agent_rollbacks_total{app="sample"}`:                      1,
		`ota_agent_downloaded_bytes_total{app="sample"}`:               1500,
		`ota_agent_info{app="we\"ird\\app",version=""}`:                1,
		`ota_agent_failures_total{app="we\"ird\\app"}`:                 1,
		`ota_agent_last_success_timestamp_seconds{app="we\"ird\\app"}`: 0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v\n%s", key, v, ok, want, b)
		}
	}
	if n := strings.Count(string(b), "ota_agent_info{"); n != 2 {
		t.Errorf("%d info samples, want 2 (one per app)\n%s", n, b)
	}
	// Atomic: nothing but the file and its lock is left in the directory.
	ents, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range ents {
		if e.Name() != "ota_agent.prom" && e.Name() != "ota_agent.prom.lock" {
			t.Errorf("left in the textfile directory: %s", e.Name())
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: %v %v, want mode 0644 (node_exporter reads it as its own user)", path, fi.Mode(), err)
	}
}

func TestRecordReplacesADamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ota_agent.prom")
	if err := os.WriteFile(path, []byte("garbage{ 12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Record(path, Event{App: "a", Version: "v1", At: time.Unix(100, 0), Updated: true}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if got := checkExposition(t, b); got[`ota_agent_updates_total{app="a"}`] != 1 {
		t.Errorf("after a damaged file: %s", b)
	}
}
