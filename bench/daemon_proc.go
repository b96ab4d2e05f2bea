package main

// What the daemon part reads of the daemon process from /proc: memory, CPU,
// the binary's resident text.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// readMem reads VmRSS, VmHWM, RssAnon and RssFile (KiB).
func readMem(pid int) (memSample, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memSample{}, err
	}
	var m memSample
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = n
		case "VmHWM:":
			m.hwm = n
		case "RssAnon:":
			m.anon = n
		case "RssFile:":
			m.file = n
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// readCPU reads the process's CPU time two ways: utime+stime of
// /proc/PID/stat (clock ticks, all threads, dead ones included) and the sum
// of the live threads' sum_exec_runtime in /proc/PID/task/*/schedstat
// (nanoseconds; Go rarely ends a thread, so none is lost).
func readCPU(pid int) (cpuSample, error) {
	var c cpuSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return c, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return c, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, _ := strconv.ParseInt(f[14-3], 10, 64)
	st, _ := strconv.ParseInt(f[15-3], 10, 64)
	c.ticks = ut + st
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return c, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			c.ns += n
		}
	}
	return c, nil
}

// readText returns the resident, referenced and mapped KiB of the
// binary's read-only mappings (text, rodata, pclntab): file-backed pages,
// shared with the page cache.
func readText(pid int, binary string) (textRSS, textRef, textSize int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, 0, 0
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && len(f) >= 5 && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && f[5] == binary && !strings.Contains(f[1], "w")
			continue
		}
		if in && len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "Size:":
				textSize += n
			case "Rss:":
				textRSS += n
			case "Referenced:":
				textRef += n
			}
		}
	}
	return textRSS, textRef, textSize
}

// ---- the server ----
