package main

// The printed table: medians of the runs against their goals.

import (
	"fmt"
	"slices"
	"strings"
)

func kib2mib(k int64) float64 { return float64(k) / 1024 }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func med(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return median(xs)
}

func wallOf(s sample) float64 { return s.wall.Seconds() }
func cpuOf(s sample) float64  { return s.cpu().Seconds() }
func userOf(s sample) float64 { return s.user.Seconds() }
func sysOf(s sample) float64  { return s.sys.Seconds() }
func rssOf(s sample) float64  { return kib2mib(s.maxRSS) }
func transferOf(s sample) float64 {
	return s.transfer.Seconds()
}

func (b *bench) printTable(rs []*sizeResult) {
	var verdicts []string
	row := func(measure string, goal string, cell func(r *sizeResult) string) {
		cells := []string{measure}
		for _, r := range rs {
			cells = append(cells, cell(r))
		}
		cells = append(cells, goal)
		fmt.Printf("| %s |\n", strings.Join(cells, " | "))
	}
	head := []string{"measure"}
	for _, r := range rs {
		head = append(head, fmt.Sprintf("%d MiB", r.mib))
	}
	head = append(head, "goal")
	fmt.Printf("| %s |\n", strings.Join(head, " | "))
	fmt.Printf("|%s\n", strings.Repeat("---|", len(head)))

	// Memory.
	row("peak RSS of update", fmt.Sprintf("< %.0f MiB, flat", goalRSSMiB), func(r *sizeResult) string {
		v := med(r.agent, rssOf)
		if v >= goalRSSMiB {
			verdicts = append(verdicts, fmt.Sprintf("MISSED: peak RSS of update at %d MiB is %.1f MiB (goal < %.0f MiB)", r.mib, v, goalRSSMiB))
		}
		return fmt.Sprintf("%.1f MiB", v)
	})
	if len(rs) > 1 {
		lo, hi := med(rs[0].agent, rssOf), med(rs[len(rs)-1].agent, rssOf)
		if hi > lo*1.25+2 {
			verdicts = append(verdicts, fmt.Sprintf("MISSED: peak RSS grows with the file: %.1f MiB at %d MiB, %.1f MiB at %d MiB (goal: flat)", lo, rs[0].mib, hi, rs[len(rs)-1].mib))
		}
	}
	if b.curl != "" {
		row("peak RSS of curl+sync", "(reference)", func(r *sizeResult) string { return fmt.Sprintf("%.1f MiB", med(r.curl, rssOf)) })
	}

	// Time.
	if b.curl != "" {
		row("wall time update / curl+sync", fmt.Sprintf("<= %.1fx", goalWallRatio), func(r *sizeResult) string {
			a, c := med(r.agent, wallOf), med(r.curl, wallOf)
			ratio := a / c
			if ratio > goalWallRatio {
				verdicts = append(verdicts, fmt.Sprintf("MISSED: update takes %.2fx curl+sync at %d MiB (goal <= %.1fx)", ratio, r.mib, goalWallRatio))
			}
			return fmt.Sprintf("%.2f s / %.2f s (%.2fx)", a, c, ratio)
		})
		row("of which the server was sending: update / curl", "(reference)", func(r *sizeResult) string {
			return fmt.Sprintf("%.2f s / %.2f s", med(r.agent, transferOf), med(r.curl, transferOf))
		})
		row("throughput update / curl+sync", "(reference)", func(r *sizeResult) string {
			return fmt.Sprintf("%.0f / %.0f MiB/s", float64(r.mib)/med(r.agent, wallOf), float64(r.mib)/med(r.curl, wallOf))
		})
	} else {
		row("wall time update / curl+sync", fmt.Sprintf("<= %.1fx", goalWallRatio), func(r *sizeResult) string {
			return fmt.Sprintf("%.2f s / curl not found", med(r.agent, wallOf))
		})
	}
	row("CPU time of update (user + sys)", "(reference)", func(r *sizeResult) string {
		return fmt.Sprintf("%.2f s (%.2f + %.2f)", med(r.agent, cpuOf), med(r.agent, userOf), med(r.agent, sysOf))
	})
	if b.curl != "" {
		row("CPU time of curl+sync (user + sys)", "(reference)", func(r *sizeResult) string {
			return fmt.Sprintf("%.2f s (%.2f + %.2f)", med(r.curl, cpuOf), med(r.curl, userOf), med(r.curl, sysOf))
		})
	}

	// Wire.
	row("requests / body bytes of an update", "2 / file + version", func(r *sizeResult) string {
		s := r.agent[len(r.agent)-1]
		return fmt.Sprintf("%d / %d B", s.requests, s.body)
	})
	wire := func(name string, pick func(*sizeResult) sample) {
		row("requests / body bytes of "+name, "1 / version body", func(r *sizeResult) string {
			s := pick(r)
			if s.requests != 1 {
				verdicts = append(verdicts, fmt.Sprintf("MISSED: %s made %d requests at %d MiB (goal 1)", name, s.requests, r.mib))
			}
			return fmt.Sprintf("%d / %d B", s.requests, s.body)
		})
		row("response header / request bytes of "+name, "(reference)", func(r *sizeResult) string {
			s := pick(r)
			return fmt.Sprintf("%d B / %d B (%d conn)", s.sent-s.body, s.recv, s.conns)
		})
		row("wall time / peak RSS of "+name, "(reference)", func(r *sizeResult) string {
			s := pick(r)
			return fmt.Sprintf("%.0f ms / %.1f MiB", s.wall.Seconds()*1000, kib2mib(s.maxRSS))
		})
	}
	wire("an up-to-date update", func(r *sizeResult) sample { return r.upToDate })
	wire("a check", func(r *sizeResult) sample { return r.check })

	fmt.Println()
	var floor int64
	for _, r := range rs {
		for _, s := range append(slices.Clone(r.agent), r.curl...) {
			floor = max(floor, s.floor)
		}
	}
	fmt.Printf("Peak RSS is ru_maxrss of the process tree, taken by a small helper process; a figure at or below its own peak (%.1f MiB) only says \"at most that\".\n", kib2mib(floor))
	switch {
	case len(verdicts) == 0 && b.curl == "":
		fmt.Println("Goals met, but the wall-time goal was not checked: curl not found.")
	case len(verdicts) == 0:
		fmt.Println("All goals met.")
	case b.curl == "":
		fmt.Println("Wall-time goal not checked: curl not found.")
	}
	for _, v := range verdicts {
		fmt.Println(v)
	}
}
