// Package metrics keeps ota-agent's Prometheus textfile: the file that
// node_exporter's textfile collector reads
// (--collector.textfile.directory, /var/lib/prometheus/node-exporter on
// Debian). Per app:
//
//	ota_agent_info{app,version}                       1: the installed version, as a label
//	ota_agent_last_check_timestamp_seconds{app}        the last check, successful or not
//	ota_agent_last_success_timestamp_seconds{app}      the last check that succeeded
//	ota_agent_updates_total{app}                       releases installed
//	ota_agent_failures_total{app}                      checks that failed
//	ota_agent_rollbacks_total{app}                     releases rolled back after a failed trial
//	ota_agent_downloaded_bytes_total{app}              bytes downloaded (release files, version bodies)
//
// Record is called after each check and each transition, by the daemon and
// by one-shot commands alike: it reads the file, adds the event and writes
// it again, so the counters carry over from run to run (and a counter
// restarts at zero only when the file is lost, which Prometheus's rate()
// takes as a reset). The file is replaced atomically (temp file in its
// directory, write, fsync, rename, fsync the directory): node_exporter
// never reads half a file. Writers take a flock on <file>.lock, so the
// daemon and a manual update never lose each other's counts.
package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// App is one app's figures in the file.
type App struct {
	Name        string
	Version     string    // installed; "" before the first install
	LastCheck   time.Time // zero: never
	LastSuccess time.Time // zero: never
	Updates     uint64
	Failures    uint64
	Rollbacks   uint64
	Bytes       uint64
}

// Event is what one check or transition of an app brings.
type Event struct {
	App        string
	Version    string // installed after it
	At         time.Time
	Failed     bool
	Updated    bool
	RolledBack bool
	Bytes      int64
}

// metric is one metric of the file: its name, help and type, and how to
// read and set its value for an app.
type metric struct {
	name, help, typ string
	get             func(*App) float64
	set             func(*App, float64)
}

func seconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli()) / 1000
}

func fromSeconds(v float64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(math.Round(v * 1000)))
}

var metrics = []metric{
	{"ota_agent_last_check_timestamp_seconds", "When the app was last checked (Unix time).", "gauge",
		func(a *App) float64 { return seconds(a.LastCheck) }, func(a *App, v float64) { a.LastCheck = fromSeconds(v) }},
	{"ota_agent_last_success_timestamp_seconds", "When a check of the app last succeeded (Unix time).", "gauge",
		func(a *App) float64 { return seconds(a.LastSuccess) }, func(a *App, v float64) { a.LastSuccess = fromSeconds(v) }},
	{"ota_agent_updates_total", "Releases of the app installed.", "counter",
		func(a *App) float64 { return float64(a.Updates) }, func(a *App, v float64) { a.Updates = uint64(v) }},
	{"ota_agent_failures_total", "Checks or updates of the app that failed.", "counter",
		func(a *App) float64 { return float64(a.Failures) }, func(a *App, v float64) { a.Failures = uint64(v) }},
	{"ota_agent_rollbacks_total", "Releases of the app rolled back after a failed trial.", "counter",
		func(a *App) float64 { return float64(a.Rollbacks) }, func(a *App, v float64) { a.Rollbacks = uint64(v) }},
	{"ota_agent_downloaded_bytes_total", "Bytes downloaded from the app's server (release files and version bodies).", "counter",
		func(a *App) float64 { return float64(a.Bytes) }, func(a *App, v float64) { a.Bytes = uint64(v) }},
}

const infoName = "ota_agent_info"

// Format writes apps in the Prometheus text exposition format, sorted by
// name.
func Format(w io.Writer, apps []App) error {
	apps = slices.Clone(apps)
	slices.SortFunc(apps, func(a, b App) int { return strings.Compare(a.Name, b.Name) })
	var b bytes.Buffer
	fmt.Fprintf(&b, "# HELP %s The installed version of the app, as the label version (\"\" before the first install).\n# TYPE %s gauge\n", infoName, infoName)
	for _, a := range apps {
		fmt.Fprintf(&b, "%s{app=%s,version=%s} 1\n", infoName, quote(a.Name), quote(a.Version))
	}
	for _, m := range metrics {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for i := range apps {
			fmt.Fprintf(&b, "%s{app=%s} %s\n", m.name, quote(apps[i].Name), strconv.FormatFloat(m.get(&apps[i]), 'f', -1, 64))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// quote is a label value: in double quotes, with \, " and newline escaped.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// Parse reads a file Format wrote; lines it does not know are skipped, so
// a file of an older or newer agent still gives what both know.
func Parse(r io.Reader) ([]App, error) {
	byName := map[string]*App{}
	var order []string
	get := func(name string) *App {
		if a, ok := byName[name]; ok {
			return a
		}
		byName[name] = &App{Name: name}
		order = append(order, name)
		return byName[name]
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels, value, err := parseSample(line)
		if err != nil {
			return nil, err
		}
		app, ok := labels["app"]
		if !ok {
			continue
		}
		if name == infoName {
			get(app).Version = labels["version"]
			continue
		}
		for _, m := range metrics {
			if m.name == name {
				m.set(get(app), value)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	apps := make([]App, 0, len(order))
	for _, n := range order {
		apps = append(apps, *byName[n])
	}
	return apps, nil
}

// parseSample reads `name{label="value",...} number`.
func parseSample(line string) (name string, labels map[string]string, value float64, err error) {
	bad := fmt.Errorf("metrics: cannot read %q", line)
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", nil, 0, bad
	}
	name, rest := line[:i], line[i:]
	labels = map[string]string{}
	if rest[0] == '{' {
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			k, after, ok := strings.Cut(rest, `="`)
			if !ok {
				return "", nil, 0, bad
			}
			var v strings.Builder
			j := 0
			for ; j < len(after) && after[j] != '"'; j++ {
				if after[j] == '\\' && j+1 < len(after) {
					j++
					if after[j] == 'n' {
						v.WriteByte('\n')
						continue
					}
				}
				v.WriteByte(after[j])
			}
			if j == len(after) {
				return "", nil, 0, bad
			}
			labels[strings.TrimLeft(k, ",")] = v.String()
			rest = strings.TrimPrefix(after[j+1:], ",")
		}
		rest = rest[1:]
	}
	value, err = strconv.ParseFloat(strings.TrimSpace(rest), 64)
	if err != nil {
		return "", nil, 0, bad
	}
	return name, labels, value, nil
}

// Record adds ev to the file at path: under a flock on path+".lock", it
// reads the file (missing: no figures yet), updates ev.App's figures and
// writes the file again atomically. The directory must exist.
func Record(path string, ev Event) error {
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("metrics: lock %s: %w", lock.Name(), err)
	}
	var apps []App
	if b, err := os.ReadFile(path); err == nil {
		if apps, err = Parse(bytes.NewReader(b)); err != nil {
			apps = nil // rebuilt from this event on: a damaged file is replaced
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("metrics: %w", err)
	}
	i := slices.IndexFunc(apps, func(a App) bool { return a.Name == ev.App })
	if i < 0 {
		apps = append(apps, App{Name: ev.App})
		i = len(apps) - 1
	}
	a := &apps[i]
	a.Version = ev.Version
	a.LastCheck = ev.At
	if ev.Failed {
		a.Failures++
	} else {
		a.LastSuccess = ev.At
	}
	if ev.Updated {
		a.Updates++
	}
	if ev.RolledBack {
		a.Rollbacks++
	}
	if ev.Bytes > 0 {
		a.Bytes += uint64(ev.Bytes)
	}
	var b bytes.Buffer
	if err := Format(&b, apps); err != nil {
		return err
	}
	return writeFile(path, b.Bytes())
}

// writeFile is the durable write: temp file in the target's directory,
// write, fsync, close, rename, fsync the directory. The file is 0644:
// node_exporter runs as its own user.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename, there is nothing to remove
	if err := f.Chmod(0o644); err == nil {
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), path)
		}
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	} else {
		f.Close()
		return fmt.Errorf("metrics: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("metrics: sync %s: %w", dir, err)
	}
	return nil
}
