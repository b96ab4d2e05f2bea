package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/reset"
	"github.com/ota-agent/ota-agent/store"
	"github.com/ota-agent/ota-agent/wire"
)

// Config is the whole configuration: global settings and the apps, with
// defaults applied and validated.
type Config struct {
	StateRoot    string        // global state_dir, default agent.DefaultStateRoot
	Interval     time.Duration // global interval, default agent.DefaultInterval
	BootDeadline time.Duration // global boot_deadline, default 2m
	RuntimeDir   string        // global runtime_dir, default store.DefaultRuntimeDir
	RebootGrace  time.Duration // global reboot_grace, default 90s
	Apps         []agent.App
	// Warnings are worth telling the operator once per run, not errors: a
	// password in a file every user of the board can read.
	Warnings []string
}

const (
	defaultConfigPath   = "/etc/ota-agent/config.toml"
	defaultBootDeadline = 2 * time.Minute
	defaultRebootGrace  = 90 * time.Second
)

// fileConfig and fileApp are config.toml as written. Durations and sizes are
// kept raw so a bad value is reported with its key and line; pointers tell
// an explicit zero from an absent key.
type fileConfig struct {
	StateDir     string    `toml:"state_dir"`
	Interval     string    `toml:"interval"`
	BootDeadline string    `toml:"boot_deadline"`
	RuntimeDir   string    `toml:"runtime_dir"`
	RebootGrace  string    `toml:"reboot_grace"`
	App          []fileApp `toml:"app"`
}

type fileApp struct {
	Name              string   `toml:"name"`
	Host              string   `toml:"host"`
	Project           string   `toml:"project"`
	Files             []string `toml:"files"`
	UseVersionPrefix  *bool    `toml:"use_version_prefix"`
	AppDir            string   `toml:"app_dir"`
	StateDir          string   `toml:"state_dir"`
	Install           string   `toml:"install"`
	Reset             string   `toml:"reset"`
	Unit              string   `toml:"unit"`
	SystemdBus        string   `toml:"systemd_bus"`
	HardReset         string   `toml:"hard_reset"`
	WatchdogDevice    string   `toml:"watchdog_device"`
	Timeout           string   `toml:"timeout"`
	User              string   `toml:"user"`
	Password          string   `toml:"password"`
	PasswordFile      string   `toml:"password_file"`
	CAFile            string   `toml:"ca_file"`
	AllowInsecureAuth bool     `toml:"allow_insecure_auth"`
	MaxFileSize       any      `toml:"max_file_size"` // integer bytes or "512MiB"
	KeepReleases      *int     `toml:"keep_releases"`
	Interval          string   `toml:"interval"`
	MinRate           any      `toml:"min_rate"` // integer bytes per second or "1KiB"
	MinRateWindow     string   `toml:"min_rate_window"`
}

var (
	globalKeys = []string{"state_dir", "interval", "boot_deadline", "runtime_dir", "reboot_grace"}
	appKeys    = []string{"name", "host", "project", "files", "use_version_prefix", "app_dir", "state_dir",
		"install", "reset", "unit", "systemd_bus", "hard_reset", "watchdog_device", "timeout", "user", "password",
		"password_file", "ca_file", "allow_insecure_auth", "max_file_size", "keep_releases", "interval",
		"min_rate", "min_rate_window"}
)

// defaultConfig is the configuration before the file or flags say more.
func defaultConfig() *Config {
	return &Config{StateRoot: agent.DefaultStateRoot, Interval: agent.DefaultInterval, BootDeadline: defaultBootDeadline,
		RuntimeDir: store.DefaultRuntimeDir, RebootGrace: defaultRebootGrace}
}

// loadConfig reads, checks and completes the configuration at path. Every
// error is a *agent.ConfigError naming the app, key and line where known.
// Relative password_file and ca_file paths are taken from the config file's
// directory, as the daemon's working directory is not the operator's.
func loadConfig(path string) (*Config, error) {
	data, mode, err := readConfigFile(path)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			msg += "; write it, or give one app's flags (--host, --project, --app-dir)"
		}
		return nil, &agent.ConfigError{Msg: msg}
	}
	var fc fileConfig
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, decodeError(path, data, err)
	}
	pos := scanPositions(data)

	cfg := defaultConfig()
	global := func(key, format string, args ...any) error {
		return &agent.ConfigError{Key: key, Line: pos.lines[key], Msg: fmt.Sprintf(format, args...)}
	}
	if fc.StateDir != "" {
		cfg.StateRoot = filepath.Clean(fc.StateDir)
		if !filepath.IsAbs(cfg.StateRoot) {
			return nil, global("state_dir", "%q is not an absolute path", fc.StateDir)
		}
	}
	if fc.RuntimeDir != "" {
		cfg.RuntimeDir = filepath.Clean(fc.RuntimeDir)
		if !filepath.IsAbs(cfg.RuntimeDir) {
			return nil, global("runtime_dir", "%q is not an absolute path", fc.RuntimeDir)
		}
	}
	if fc.Interval != "" {
		if cfg.Interval, err = parseInterval(fc.Interval); err != nil {
			return nil, global("interval", "%v", err)
		}
	}
	if fc.RebootGrace != "" {
		if cfg.RebootGrace, err = parsePositiveDuration(fc.RebootGrace); err != nil {
			return nil, global("reboot_grace", "%v", err)
		}
	}
	if fc.BootDeadline != "" {
		if cfg.BootDeadline, err = parsePositiveDuration(fc.BootDeadline); err != nil {
			return nil, global("boot_deadline", "%v", err)
		}
	}
	if len(fc.App) == 0 {
		return nil, &agent.ConfigError{Msg: path + " has no [[app]] table: nothing to update"}
	}

	dir := filepath.Dir(path)
	for i := range fc.App {
		a, err := fc.App[i].app(cfg.StateRoot, dir)
		if err != nil {
			var ce *agent.ConfigError
			if errors.As(err, &ce) {
				ce.App, ce.Line = pos.label(i, fc.App[i].Name, fc.App[i].Project), pos.line(i, ce.Key)
			}
			return nil, err
		}
		// Validated one by one first, so an error finds its app even when
		// the name is the problem.
		if err := a.Validate(); err != nil {
			return nil, pos.locate(err, i, fc.App[i])
		}
		cfg.Apps = append(cfg.Apps, a)
	}
	if err := agent.ValidateApps(cfg.Apps); err != nil {
		// ValidateApps names the later app of a clashing pair; names are
		// unique up to that app, so the last one with the name is it.
		i := 0
		var ce *agent.ConfigError
		if errors.As(err, &ce) {
			for j := range cfg.Apps {
				if cfg.Apps[j].Name == ce.App {
					i = j
				}
			}
		}
		return nil, pos.locate(err, i, fc.App[i])
	}
	var withPassword []string
	for i := range fc.App {
		if fc.App[i].Password != "" {
			withPassword = append(withPassword, cfg.Apps[i].Name)
		}
	}
	if w := passwordWarning(path, mode, withPassword); w != "" {
		cfg.Warnings = append(cfg.Warnings, w)
	}
	return cfg, nil
}

// readConfigFile reads the config file and its permission bits, from one
// open file so both describe the same file.
func readConfigFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	data, err := io.ReadAll(f)
	return data, fi.Mode().Perm(), err
}

// passwordWarning is the warning for a config file that every user of the
// board can read (mode o+r) and that holds the password of the apps named,
// naming the file, the apps and the ways out; "" when there is nothing to
// say.
func passwordWarning(path string, mode fs.FileMode, names []string) string {
	if mode&0o004 == 0 || len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("%s is readable by every user of the board (mode %04o) and holds the password of app %s: "+
		"chmod 0600 %s, or move the password to password_file (mode 0600) or to systemd's LoadCredential=<app>.password",
		path, mode, strings.Join(names, ", "), path)
}

// app turns one [[app]] table into an agent.App with defaults applied. Its
// errors carry the key only; the caller adds app and line.
func (fa *fileApp) app(stateRoot, configDir string) (agent.App, error) {
	bad := func(key, format string, args ...any) (agent.App, error) {
		return agent.App{}, &agent.ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	a := agent.App{
		Name: fa.Name, Host: fa.Host, Project: fa.Project, Files: fa.Files, UseVersionPrefix: true,
		AppDir: fa.AppDir, StateRoot: stateRoot, Install: store.Mode(fa.Install), Reset: fa.Reset, Unit: fa.Unit,
		SystemdBus: reset.Bus(fa.SystemdBus), HardReset: reset.Method(fa.HardReset), WatchdogDevice: fa.WatchdogDevice, User: fa.User, CAFile: fa.CAFile,
		AllowInsecureAuth: fa.AllowInsecureAuth,
	}
	if fa.UseVersionPrefix != nil {
		a.UseVersionPrefix = *fa.UseVersionPrefix
	}
	if fa.StateDir != "" {
		a.StateRoot = fa.StateDir
	}
	if a.CAFile != "" && !filepath.IsAbs(a.CAFile) {
		a.CAFile = filepath.Join(configDir, a.CAFile)
	}
	var timeout, interval, window time.Duration
	var maxSize, minRate int64
	var err error
	if fa.Timeout != "" {
		if timeout, err = parseDuration(fa.Timeout); err != nil {
			return bad("timeout", "%v", err)
		}
	}
	if fa.Interval != "" {
		if interval, err = parseInterval(fa.Interval); err != nil {
			return bad("interval", "%v", err)
		}
	}
	if fa.MinRateWindow != "" {
		if window, err = parseDuration(fa.MinRateWindow); err != nil {
			return bad("min_rate_window", "%v", err)
		}
	}
	if maxSize, err = sizeValue(fa.MaxFileSize, "512MiB"); err != nil {
		return bad("max_file_size", "%v", err)
	}
	if minRate, err = sizeValue(fa.MinRate, "1KiB"); err != nil {
		return bad("min_rate", "%v", err)
	}
	if fa.Password != "" && fa.PasswordFile != "" {
		return bad("password_file", "password and password_file are both set; use one")
	}
	file := fa.PasswordFile
	if file != "" && !filepath.IsAbs(file) {
		file = filepath.Join(configDir, file)
	}
	a.Password = fa.Password
	if err := readPassword(&a, file); err != nil {
		return agent.App{}, err
	}
	a.ApplyDefaults()
	// Numbers given go in after the defaults, so that an explicit 0 is
	// refused by Validate rather than replaced.
	if fa.Timeout != "" {
		a.Timeout = timeout
	}
	if fa.Interval != "" {
		a.Interval = interval
	}
	if fa.MaxFileSize != nil {
		a.MaxFileSize = maxSize
	}
	if fa.KeepReleases != nil {
		a.KeepReleases = *fa.KeepReleases
	}
	if fa.MinRate != nil {
		a.MinRate = minRate // 0 turns the check off
	}
	if fa.MinRateWindow != "" {
		a.MinRateWindow = window
	}
	return a, nil
}

// sizeValue reads a size key written as an integer or a string like
// example; nil (the key is absent) is 0.
func sizeValue(v any, example string) (int64, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int64:
		return v, nil
	case string:
		return parseSize(v)
	}
	return 0, fmt.Errorf("want an integer number of bytes or a string like %q", example)
}

// readPassword sets a.Password from file, or else, when no password is
// configured, from systemd's LoadCredential= directory
// ($CREDENTIALS_DIRECTORY/<app>.password). The name is the app's name or its
// default, the project. Errors name the file, never its contents.
func readPassword(a *agent.App, file string) error {
	if file != "" {
		pw, err := readSecret(file)
		if err != nil {
			return &agent.ConfigError{Key: "password_file", Msg: err.Error()}
		}
		a.Password = pw
		return nil
	}
	name := a.Name
	if name == "" {
		name = a.Project
	}
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if a.Password != "" || dir == "" || wire.CheckTag(name) != nil {
		return nil
	}
	pw, err := readSecret(filepath.Join(dir, name+".password"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &agent.ConfigError{Key: "password_file", Msg: "$CREDENTIALS_DIRECTORY: " + err.Error()}
	}
	if a.User == "" {
		return &agent.ConfigError{Key: "user", Msg: fmt.Sprintf(
			"missing, but $CREDENTIALS_DIRECTORY/%s.password holds a password", name)}
	}
	a.Password = pw
	return nil
}

// readSecret reads a password file, without the trailing newline editors add.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like \"5s\" or \"15m\"", s)
	}
	return d, nil
}

// parseInterval reads a check interval: agent.MinInterval at least. A
// smaller one is an error, never silently raised.
func parseInterval(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, err
	}
	return d, checkInterval(d)
}

// checkInterval refuses a check interval below agent.MinInterval.
func checkInterval(d time.Duration) error {
	if d < agent.MinInterval {
		return fmt.Errorf("%v is below the minimum of %v", d, agent.MinInterval)
	}
	return nil
}

func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return d, nil
}

// sizeUnits: KB, MB... are powers of 1000; KiB, MiB... and the bare K, M, G, T
// powers of 1024, as systemd and dd read them.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// parseSize reads a byte count: "1048576", "512MiB", "2GB", "100K", "1.5G".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	bad := fmt.Errorf("%q is not a size like 1048576, \"512MiB\", \"2GB\" or \"100K\"", s)
	if num == "" || !ok {
		return 0, bad
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, bad
	}
	v := math.Round(f * float64(mult))
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(v), nil
}

// positions says where keys are in the file, which go-toml's decoder does
// not: lines["app.1.timeout"] is the line of the second app's timeout.
type positions struct {
	lines map[string]int
	apps  []appPos
}

type appPos struct {
	line, end     int // the [[app]] header (or inline table's first key) to the table's last line
	name, project string
}

// scanPositions walks the file's syntax tree. It is run only on a file
// that decoded (or failed on a value, not on syntax).
func scanPositions(data []byte) *positions {
	pos := &positions{lines: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	prefix := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			key, line := keyOf(&p, e.Key())
			if n := len(pos.apps) - 1; n >= 0 && pos.apps[n].end == math.MaxInt {
				pos.apps[n].end = line - 1
			}
			prefix = "?" + key // keys of other tables are unknown anyway
			if key == "app" {
				pos.apps = append(pos.apps, appPos{line: line, end: math.MaxInt})
				prefix = fmt.Sprintf("app.%d", len(pos.apps)-1)
			}
		case unstable.KeyValue:
			key, line := keyOf(&p, e.Key())
			if prefix == "" && key == "app" && e.Value().Kind == unstable.Array {
				// app = [{...}, {...}]: inline tables, one per app.
				for it := e.Value().Children(); it.Next(); {
					if t := it.Node(); t.Kind == unstable.InlineTable {
						pos.apps = append(pos.apps, appPos{line: line})
						pos.keyValues(&p, t.Children(), len(pos.apps)-1)
					}
				}
				continue
			}
			pos.keyValue(e, prefix, key, line)
		}
	}
	return pos
}

func (pos *positions) keyValues(p *unstable.Parser, it unstable.Iterator, app int) {
	first := true
	for it.Next() {
		kv := it.Node()
		if kv.Kind != unstable.KeyValue {
			continue
		}
		key, line := keyOf(p, kv.Key())
		if first {
			pos.apps[app].line, first = line, false
		}
		pos.apps[app].end = line
		pos.keyValue(kv, fmt.Sprintf("app.%d", app), key, line)
	}
}

func (pos *positions) keyValue(kv *unstable.Node, prefix, key string, line int) {
	full := key
	if prefix != "" {
		full = prefix + "." + key
	}
	pos.lines[full] = line
	if n := len(pos.apps) - 1; n >= 0 && prefix == fmt.Sprintf("app.%d", n) && kv.Value().Kind == unstable.String {
		switch a := &pos.apps[n]; {
		case key == "name" && a.name == "":
			a.name = string(kv.Value().Data)
		case key == "project" && a.project == "":
			a.project = string(kv.Value().Data)
		}
	}
}

// keyOf returns a (possibly dotted) key and the line it starts on.
func keyOf(p *unstable.Parser, it unstable.Iterator) (string, int) {
	var parts []string
	line := 0
	for it.Next() {
		n := it.Node()
		if line == 0 {
			line = p.Shape(n.Raw).Start.Line
		}
		parts = append(parts, string(n.Data))
	}
	return strings.Join(parts, "."), line
}

// line is where app i sets key, else the app's header.
func (pos *positions) line(i int, key string) int {
	prefix := fmt.Sprintf("app.%d.", i)
	if l, ok := pos.lines[prefix+key]; ok {
		return l
	}
	if l, ok := pos.lines[prefix+key+"_file"]; ok { // password from password_file
		return l
	}
	if i >= 0 && i < len(pos.apps) {
		return pos.apps[i].line
	}
	return 0
}

// appAt is the index of the app whose table holds line, or -1.
func (pos *positions) appAt(line int) int {
	for i, a := range pos.apps {
		if a.line <= line && line <= a.end {
			return i
		}
	}
	return -1
}

// label names app i in an error before its name is known to be valid: its
// name, else its project, else its place ("#2").
func (pos *positions) label(i int, name, project string) string {
	if name == "" {
		name = project
	}
	if wire.CheckTag(name) == nil {
		return name
	}
	return fmt.Sprintf("#%d", i+1)
}

// locate adds the app's label and the line to a validation error of app i.
func (pos *positions) locate(err error, i int, fa fileApp) error {
	var ce *agent.ConfigError
	if errors.As(err, &ce) {
		if ce.App == "" {
			ce.App = pos.label(i, fa.Name, fa.Project)
		}
		ce.Line = pos.line(i, ce.Key)
	}
	return err
}

var tomlTypeRE = regexp.MustCompile(`^cannot decode TOML (\S+)`)

// decodeError turns go-toml's errors into a ConfigError with the key, the
// app and the line, in the file's own terms rather than Go's types.
func decodeError(path string, data []byte, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := &strict.Errors[0]
		line, _ := e.Position()
		pos := scanPositions(data)
		key := appKey(pos, e.Key(), line)
		return keyError(pos, key, line, "unknown key"+suggest(key, pos.appAt(line) >= 0))
	}
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return &agent.ConfigError{Msg: fmt.Sprintf("%s: %v", path, err)}
	}
	line, col := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	key := []string(de.Key())
	if len(key) == 0 {
		return &agent.ConfigError{Line: line, Msg: fmt.Sprintf("%s is not valid TOML: %s (column %d)", path, msg, col)}
	}
	if strings.HasPrefix(msg, "cannot ") {
		want := "a string"
		switch key[len(key)-1] {
		case "app":
			want = "[[app]] tables"
		case "files":
			want = "an array of strings"
		case "use_version_prefix", "allow_insecure_auth":
			want = "true or false"
		case "timeout", "interval", "boot_deadline", "min_rate_window":
			want = `a duration string like "5s"`
		case "keep_releases":
			want = "an integer"
		}
		got := ""
		if m := tomlTypeRE.FindStringSubmatch(msg); m != nil {
			got = ": got " + m[1]
		}
		msg = "wrong type" + got + ", want " + want
	}
	pos := scanPositions(data)
	return keyError(pos, appKey(pos, key, line), line, msg)
}

// appKey strips the leading "app" go-toml puts on some keys of an app (not
// on keys of inline tables, nor on keys set twice).
func appKey(pos *positions, key []string, line int) []string {
	if len(key) > 1 && key[0] == "app" && pos.appAt(line) >= 0 {
		return key[1:]
	}
	return key
}

// keyError reports a problem with a key at line, in the app whose table
// holds that line if any.
func keyError(pos *positions, key []string, line int, msg string) error {
	ce := &agent.ConfigError{Key: strings.Join(key, "."), Line: line, Msg: msg}
	if i := pos.appAt(line); i >= 0 {
		ce.App = pos.label(i, pos.apps[i].name, pos.apps[i].project)
	}
	return ce
}

// suggest hints at the key an unknown one was probably meant to be.
func suggest(key []string, inApp bool) string {
	k := key[len(key)-1]
	if len(key) == 1 && !inApp {
		for _, a := range appKeys {
			if k == a {
				return fmt.Sprintf(" (%s belongs in an [[app]] table)", k)
			}
		}
	}
	if inApp && k == "boot_deadline" {
		return " (boot_deadline is global: put it before the first [[app]])"
	}
	known := globalKeys
	if inApp {
		known = appKeys
	}
	best, bestDist := "", 3
	for _, c := range known {
		if d := editDistance(k, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// appFlags configures one app on the command line, with no config file.
type appFlags struct {
	fs                               *flag.FlagSet
	name, host, project, files       string
	appDir, stateDir                 string
	noVersionPrefix                  bool
	install, reset, unit, systemdBus string
	hardReset, timeout, maxFileSize  string
	watchdogDevice                   string
	user, passwordFile, caFile       string
	allowInsecureAuth                bool
	keepReleases                     int
	minRate, minRateWindow           string
}

var appFlagNames = map[string]bool{
	"name": true, "host": true, "project": true, "files": true, "app-dir": true, "state-dir": true,
	"no-version-prefix": true, "install": true, "reset": true, "unit": true, "systemd-bus": true,
	"hard-reset": true, "watchdog-device": true, "timeout": true, "user": true, "password-file": true, "ca-file": true,
	"allow-insecure-auth": true, "max-file-size": true, "keep-releases": true, "min-rate": true, "min-rate-window": true,
}

// register adds the app flags to fs. There is no --password: a command line
// is visible to every user of the board.
func (f *appFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.host, "host", "", "server `URL`, http:// or https:// (one app from flags, no config file)")
	fs.StringVar(&f.project, "project", "", "the app's directory on the server")
	fs.StringVar(&f.files, "files", "", "release files, comma-separated, relative to --app-dir")
	fs.StringVar(&f.appDir, "app-dir", "", "directory the app's files live in")
	fs.StringVar(&f.stateDir, "state-dir", "", "state directory (default "+agent.DefaultStateRoot+")")
	fs.BoolVar(&f.noVersionPrefix, "no-version-prefix", false, "files are at <version>/<file>, not <version>_<file>")
	fs.StringVar(&f.install, "install", "", "in-place (default) or symlink")
	fs.StringVar(&f.reset, "reset", "", "none, soft or hard (default soft with --unit, else none)")
	fs.StringVar(&f.unit, "unit", "", "the app's systemd unit, stopped and started around a switch")
	fs.StringVar(&f.systemdBus, "systemd-bus", "", "system (default) or user")
	fs.StringVar(&f.hardReset, "hard-reset", "", "reboot (default) or watchdog")
	fs.StringVar(&f.watchdogDevice, "watchdog-device", "", "the hardware watchdog for --hard-reset watchdog (default /dev/watchdog)")
	fs.StringVar(&f.timeout, "timeout", "", "bound on each network wait (default 5s)")
	fs.StringVar(&f.user, "user", "", "Basic auth user")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the Basic auth password")
	fs.StringVar(&f.caFile, "ca-file", "", "extra CA bundle (PEM) for https")
	fs.BoolVar(&f.allowInsecureAuth, "allow-insecure-auth", false, "allow Basic auth over plain http")
	fs.StringVar(&f.maxFileSize, "max-file-size", "", "per-file size cap, bytes or like 512MiB (default 1GiB)")
	fs.IntVar(&f.keepReleases, "keep-releases", 0, fmt.Sprintf("releases kept for rollback (default %d)", agent.DefaultKeepReleases))
	fs.StringVar(&f.minRate, "min-rate", "", "cut a transfer slower than this many bytes a second over --min-rate-window, like 1KiB; 0: never (default 1KiB)")
	fs.StringVar(&f.minRateWindow, "min-rate-window", "", fmt.Sprintf("the window of --min-rate (default %v)", agent.DefaultMinRateWindow))
	fs.StringVar(&f.name, "name", "", "the app's name, for its state directory (default: --project)")
}

// set returns the app flags given on the command line.
func (f *appFlags) set() map[string]bool {
	given := map[string]bool{}
	if f.fs != nil {
		f.fs.Visit(func(fl *flag.Flag) {
			if appFlagNames[fl.Name] {
				given[fl.Name] = true
			}
		})
	}
	return given
}

// any reports whether an app flag was given, so the app comes from flags
// rather than from the config file.
func (f *appFlags) any() bool { return len(f.set()) > 0 }

// flagMsg rewrites Validate's messages, which speak of config keys.
var flagMsg = strings.NewReplacer(
	"allow_insecure_auth = true", "--allow-insecure-auth",
	"(password, password_file or ", "(--password-file or ",
	"needs unit,", "needs --unit,",
)

// app builds and validates the app the flags describe. Errors are
// *agent.ConfigError whose Key is the flag ("--timeout").
func (f *appFlags) app() (agent.App, error) {
	given := f.set()
	bad := func(flagName, format string, args ...any) (agent.App, error) {
		return agent.App{}, &agent.ConfigError{Key: "--" + flagName, Msg: fmt.Sprintf(format, args...)}
	}
	a := agent.App{
		Name: f.name, Host: f.host, Project: f.project, UseVersionPrefix: !f.noVersionPrefix,
		AppDir: f.appDir, StateRoot: f.stateDir, Install: store.Mode(f.install), Reset: f.reset, Unit: f.unit,
		SystemdBus: reset.Bus(f.systemdBus), HardReset: reset.Method(f.hardReset), WatchdogDevice: f.watchdogDevice, User: f.user, CAFile: f.caFile,
		AllowInsecureAuth: f.allowInsecureAuth,
	}
	for _, file := range strings.Split(f.files, ",") {
		if file = strings.TrimSpace(file); file != "" {
			a.Files = append(a.Files, file)
		}
	}
	var timeout, window time.Duration
	var maxSize, minRate int64
	var err error
	if given["timeout"] {
		if timeout, err = parseDuration(f.timeout); err != nil {
			return bad("timeout", "%v", err)
		}
	}
	if given["max-file-size"] {
		if maxSize, err = parseSize(f.maxFileSize); err != nil {
			return bad("max-file-size", "%v", err)
		}
	}
	if given["min-rate"] {
		if minRate, err = parseSize(f.minRate); err != nil {
			return bad("min-rate", "%v", err)
		}
	}
	if given["min-rate-window"] {
		if window, err = parseDuration(f.minRateWindow); err != nil {
			return bad("min-rate-window", "%v", err)
		}
	}
	if err := readPassword(&a, f.passwordFile); err != nil {
		return agent.App{}, toFlagError(err)
	}
	a.ApplyDefaults()
	// As in the config file: an explicit 0 reaches Validate.
	if given["timeout"] {
		a.Timeout = timeout
	}
	if given["max-file-size"] {
		a.MaxFileSize = maxSize
	}
	if given["keep-releases"] {
		a.KeepReleases = f.keepReleases
	}
	if given["min-rate"] {
		a.MinRate = minRate
	}
	if given["min-rate-window"] {
		a.MinRateWindow = window
	}
	// The same checks as a config file's apps get, overlaps and aliases included.
	if err := agent.ValidateApps([]agent.App{a}); err != nil {
		return agent.App{}, toFlagError(err)
	}
	return a, nil
}

// toFlagError renames a config key in err to its flag.
func toFlagError(err error) error {
	var ce *agent.ConfigError
	if errors.As(err, &ce) && ce.Key != "" && !strings.HasPrefix(ce.Key, "--") {
		key := ce.Key
		if key == "password" {
			key = "password_file"
		}
		ce.Key = "--" + strings.ReplaceAll(key, "_", "-")
		ce.Msg = flagMsg.Replace(ce.Msg)
	}
	return err
}

// selectApps returns the apps named, in the order given, or all of them.
func selectApps(cfg *Config, names []string) ([]agent.App, error) {
	if len(names) == 0 {
		return append([]agent.App(nil), cfg.Apps...), nil
	}
	var apps []agent.App
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		found := false
		for _, a := range cfg.Apps {
			if a.Name == n {
				apps = append(apps, a)
				found = true
				break
			}
		}
		if !found {
			configured := make([]string, len(cfg.Apps))
			for i, a := range cfg.Apps {
				configured[i] = a.Name
			}
			return nil, &agent.ConfigError{Msg: fmt.Sprintf("no app named %s (configured: %s)",
				wire.Quote(n), strings.Join(configured, ", "))}
		}
	}
	return apps, nil
}
