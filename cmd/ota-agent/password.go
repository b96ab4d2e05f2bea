package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/wire"
)

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
