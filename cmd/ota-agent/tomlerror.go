package main

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/wire"
)

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
func (pos *positions) locate(err error, i int, c appConfig) error {
	var ce *agent.ConfigError
	if errors.As(err, &ce) {
		if ce.App == "" {
			ce.App = pos.label(i, c.Name, c.Project)
		}
		ce.Line = pos.line(i, ce.Key)
	}
	return err
}

// tomlType is the TOML type in go-toml's "cannot decode TOML <type> ..."
// message, or "". (Not a regexp: the package would be linked for this line
// alone, about 100 KB of every binary.)
func tomlType(msg string) string {
	rest, ok := strings.CutPrefix(msg, "cannot decode TOML ")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, " \t\n\f\r"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

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
		if typ := tomlType(msg); typ != "" {
			got = ": got " + typ
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

// tomlKeys are the keys of struct t, in field order, as its toml tags name them.
func tomlKeys(t reflect.Type) []string {
	keys := make([]string, 0, t.NumField())
	for f := range t.Fields() {
		keys = append(keys, strings.Split(f.Tag.Get("toml"), ",")[0])
	}
	return keys
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
