//go:build linux

package testenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// start lays out the directories and cgroups and starts the manager.
func (m *UserManager) start(t testing.TB, roots []string) error {
	// Socket paths are limited to 108 bytes: keep the runtime dir short
	// (t.TempDir embeds the test's name).
	dir, err := os.MkdirTemp("", "ota-um-")
	if err == nil && len(dir) > 60 {
		os.RemoveAll(dir)
		dir, err = os.MkdirTemp("/tmp", "ota-um-")
	}
	if err != nil {
		return err
	}
	m.dir = dir
	m.RuntimeDir = filepath.Join(dir, "run")
	m.ConfigDir = filepath.Join(dir, "config")
	m.LogPath = filepath.Join(dir, "manager.log")
	home, data := filepath.Join(dir, "home"), filepath.Join(dir, "data")
	for _, d := range []string{m.RuntimeDir, filepath.Join(m.ConfigDir, "systemd", "user"), home, data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	// There is no journald. The command-line flags set only stderr here
	// (systemd 252); user.conf sets both, so units write to our log.
	conf := "[Manager]\nDefaultStandardOutput=inherit\nDefaultStandardError=inherit\n"
	if err := os.WriteFile(filepath.Join(m.ConfigDir, "systemd", "user.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	m.Env = []string{
		"XDG_RUNTIME_DIR=" + m.RuntimeDir,
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + filepath.Join(m.RuntimeDir, "bus"),
	}

	name := fmt.Sprintf("ota-agent-test-%d-%d", os.Getpid(), managerSeq.Add(1))
	for _, r := range roots {
		cg := filepath.Join(r, name)
		if err := os.Mkdir(cg, 0o755); err != nil {
			return fmt.Errorf("own cgroup: %w", err)
		}
		m.cgroups = append(m.cgroups, cg)
	}

	logFile, err := os.OpenFile(m.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child and the copier hold their own references

	// The manager logs to "kmsg"; a FIFO bound over /dev/kmsg in its mount
	// namespace catches that. Opened read-write, the FIFO never reads EOF
	// when a writer goes away.
	fifo := filepath.Join(dir, "kmsg")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return fmt.Errorf("kmsg fifo: %w", err)
	}
	copyTo, err := os.OpenFile(m.LogPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	m.kmsg, err = os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		copyTo.Close()
		return fmt.Errorf("kmsg fifo: %w", err)
	}
	go func() {
		defer close(m.copied)
		defer copyTo.Close()
		io.Copy(copyTo, m.kmsg) // ends when stop closes m.kmsg
	}()

	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
		"HOME=" + home,
		"USER=root",
		"LOGNAME=root",
		"SYSTEMD_LOG_TARGET=kmsg",
		"XDG_RUNTIME_DIR=" + m.RuntimeDir,
		"XDG_CONFIG_HOME=" + m.ConfigDir,
		"XDG_DATA_HOME=" + data,
	}
	var quotedEnv []string
	for _, e := range env {
		quotedEnv = append(quotedEnv, shellQuote(e))
	}
	var cgs []string
	for _, cg := range m.cgroups {
		cgs = append(cgs, shellQuote(filepath.Join(cg, "cgroup.procs")))
	}
	// Runs in the new mount namespace. Without /run/systemd/system the
	// manager exits 1 (and says why only on the console); without its own
	// /dev/console it would write there.
	inner := strings.Join([]string{
		"set -e",
		"mkdir -p /run/systemd",
		"mount -t tmpfs -o mode=0755 tmpfs /run/systemd",
		"mkdir /run/systemd/system",
		"if [ -e /dev/kmsg ]; then mount --bind " + shellQuote(fifo) + " /dev/kmsg; fi",
		"mount --bind /dev/null /dev/console",
		"exec env -i " + strings.Join(quotedEnv, " ") + " " + SystemdBinary +
			" --user --default-standard-output=inherit --default-standard-error=inherit",
	}, "\n") + "\n"
	innerPath := filepath.Join(dir, "ns.sh")
	if err := os.WriteFile(innerPath, []byte(inner), 0o600); err != nil {
		return err
	}
	// The shell moves itself into the cgroups, then execs its way to
	// systemd, which keeps its PID and so its cgroups.
	outer := "set -e\nfor p in " + strings.Join(cgs, " ") + "; do echo $$ > \"$p\"; done\n" +
		"exec unshare --mount --propagation private /bin/sh " + shellQuote(innerPath) + "\n"

	m.cmd = exec.Command("/bin/sh", "-c", outer)
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := m.cmd.Start(); err != nil {
		return err
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	return nil
}

// removeCgroup kills whatever is left in cg and removes it, deepest first.
func removeCgroup(cg string) error {
	var dirs []string
	filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	slices.Reverse(dirs) // WalkDir is lexical: children come after parents
	var err error
	for _, d := range dirs {
		// A killed process leaves its cgroup a moment after it dies.
		for try := 0; ; try++ {
			err = os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) || try == 100 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
