package main

// The daemon part's printed table.

import (
	"fmt"
	"strconv"
)

func printDaemonTable(rs []*daemonResult, n int) {
	by := map[string]*daemonResult{}
	for _, r := range rs {
		by[r.v.name] = r
	}
	h, s := by["http"], by["https"]
	var verdicts []string
	fmt.Println("| measure | http | https | goal |")
	fmt.Println("|---|---|---|---|")
	row := func(measure, goal string, cell func(r *daemonResult) string) {
		fmt.Printf("| %s | %s | %s | %s |\n", measure, cell(h), cell(s), goal)
	}
	row(fmt.Sprintf("idle RSS after the first check (install) / after %d unchanged checks", n), fmt.Sprintf("< %.0f MiB", goalIdleRSSMiB), func(r *daemonResult) string {
		for _, m := range []struct {
			when string
			kib  int64
		}{{"after the first check", r.first.rss}, {fmt.Sprintf("after %d checks", n), r.last.rss}} {
			if kib2mib(m.kib) >= goalIdleRSSMiB {
				verdicts = append(verdicts, fmt.Sprintf("MISSED: idle RSS of the daemon over %s %s is %.1f MiB (goal < %.0f MiB)", r.v.name, m.when, kib2mib(m.kib), goalIdleRSSMiB))
			}
		}
		return fmt.Sprintf("%.1f / %.1f MiB", kib2mib(r.first.rss), kib2mib(r.last.rss))
	})
	row(fmt.Sprintf("of which anonymous (heap, stacks, runtime) / file-backed (the binary), after %d checks", n), "(reference)", func(r *daemonResult) string {
		return fmt.Sprintf("%.1f / %.1f MiB", kib2mib(r.last.anon), kib2mib(r.last.file))
	})
	row(fmt.Sprintf("binary's read-only mappings (text, rodata): resident / touched by the %d checks / mapped", n), "(reference)", func(r *daemonResult) string {
		ref := "?"
		if r.textRef >= 0 {
			ref = fmt.Sprintf("%.1f", kib2mib(r.textRef))
		}
		return fmt.Sprintf("%.1f / %s / %.1f MiB", kib2mib(r.textRSS), ref, kib2mib(r.textMapped))
	})
	row("peak RSS (VmHWM; the install's download included)", "(reference)", func(r *daemonResult) string {
		return fmt.Sprintf("%.1f MiB", kib2mib(r.last.hwm))
	})
	cpu := func(r *daemonResult) string {
		return fmt.Sprintf("%.2f ms (utime+stime: %.1f ms)", float64(r.cpu.ns)/1e6/float64(r.checks), float64(r.cpu.ticks)*1000/userHZ/float64(r.checks))
	}
	row("CPU per unchanged check, new connection each", "(reference)", cpu)
	row("CPU per unchanged check, no session tickets (full handshake)", "(reference)", func(r *daemonResult) string {
		if !r.v.tls {
			return "-"
		}
		return cpu(by["https, no session tickets"])
	})
	row("CPU per unchanged check, keep-alive", "(reference)", func(r *daemonResult) string {
		return cpu(by[r.v.name+", keep-alive"])
	})
	row("the first check (install): requests / body bytes / connections", "2 / release + version", func(r *daemonResult) string {
		return fmt.Sprintf("%d / %d B / %d", r.install.requests, r.install.body, r.install.conns)
	})
	row("requests per unchanged check: conditional / 304 / body bytes", "1: conditional, 304, 0 B", func(r *daemonResult) string {
		w := r.wire
		for _, rr := range rs {
			ww := rr.wire
			if ww.requests != int64(rr.checks) || ww.conditional != ww.requests || ww.status304 != ww.requests || ww.body != 0 {
				verdicts = append(verdicts, fmt.Sprintf("MISSED: %s: %d unchanged checks made %d requests, %d conditional, %d answered 304, %d body bytes (goal: one conditional request per check, 304, no body)",
					rr.v.name, rr.checks, ww.requests, ww.conditional, ww.status304, ww.body))
			}
		}
		return fmt.Sprintf("%s: %s / %s / %s B", per(w.requests, r.checks), per(w.conditional, r.checks), per(w.status304, r.checks), per(w.body, r.checks))
	})
	wire := func(r *daemonResult) string {
		w := r.wire
		hs := ""
		if r.v.tls {
			hs = fmt.Sprintf(", handshakes %s full + %s resumed", per(w.full, r.checks), per(w.resumed, r.checks))
		}
		return fmt.Sprintf("%d B (up %d + down %d; %s conn%s), %s", (w.recv+w.sent)/int64(r.checks), w.recv/int64(r.checks), w.sent/int64(r.checks), per(w.conns, r.checks), hs, r.proto)
	}
	row("bytes on the wire per unchanged check, new connection each (https: resumed)", "(reference)", func(r *daemonResult) string {
		if r.v.tls && r.wire.resumed != r.wire.conns {
			verdicts = append(verdicts, fmt.Sprintf("MISSED: %s: %d of %d connections resumed their TLS session (goal: all)", r.v.name, r.wire.resumed, r.wire.conns))
		}
		return wire(r)
	})
	row("bytes on the wire per unchanged check, server without session tickets (full handshake)", "(reference)", func(r *daemonResult) string {
		if !r.v.tls {
			return "-"
		}
		return wire(by["https, no session tickets"])
	})
	row("bytes on the wire per unchanged check, keep-alive", "(reference)", func(r *daemonResult) string {
		return wire(by[r.v.name+", keep-alive"])
	})
	row("bytes on the wire per unchanged check, new connection each, X25519 without ML-KEM (GODEBUG=tlsmlkem=0)", "(reference)", func(r *daemonResult) string {
		if !r.v.tls {
			return "-"
		}
		return wire(by["https, tlsmlkem=0"])
	})
	var notes []string
	row(fmt.Sprintf("written to persistent storage by the %d unchanged checks: the daemon's write_bytes (cancelled) / its state dir's disk, of which by the first check", n), "0 / 0", func(r *daemonResult) string {
		disk := "-"
		if r.io.sectors >= 0 {
			disk = fmt.Sprintf("%d B (first check: %d B)", r.io.sectors*512, r.ioFirst.sectors*512)
			if later := r.io.sectors - r.ioFirst.sectors; r.ioFirst.sectors > 0 && later == 0 {
				notes = append(notes, fmt.Sprintf("Note: %s: only the first unchanged check wrote to the disk (%d B), none of the %d after it: the first read of a file the install wrote updates its atime on a relatime mount (not with noatime).",
					r.v.name, r.ioFirst.sectors*512, r.checks-1))
			}
		}
		if r.io.writeBytes-r.io.cancelled != 0 || r.io.sectors-r.ioFirst.sectors > 0 {
			verdicts = append(verdicts, fmt.Sprintf("MISSED: %s: %d unchanged checks wrote to storage: write_bytes %d B (%d cancelled), disk %s (goal: nothing)",
				r.v.name, r.checks, r.io.writeBytes, r.io.cancelled, disk))
		}
		return fmt.Sprintf("%d B (%d B) / %s", r.io.writeBytes, r.io.cancelled, disk)
	})
	fmt.Println()
	fmt.Printf("Bytes are TCP payload counted at the server's socket (TLS records included; not TCP/IP headers: a new connection adds about 7 packets of those). ")
	fmt.Printf("CPU is the daemon's on-CPU time over the %d checks (schedstat, ns), idle time between them included, divided by %d; utime+stime counts 10 ms ticks.\n", n, n)
	late := 0
	for _, r := range rs {
		late += r.late
	}
	if late > 0 {
		fmt.Printf("Note: %d samples were taken after the next check had begun (a loaded machine): their figures may include part of that check.\n", late)
	}
	for _, n := range notes {
		fmt.Println(n)
	}
	if len(verdicts) == 0 {
		fmt.Println("All goals met.")
	}
	for _, v := range verdicts {
		fmt.Println(v)
	}
	fmt.Println()
}

// per formats n/checks: an integer when it divides evenly.
func per(n int64, checks int) string {
	if n%int64(checks) == 0 {
		return strconv.FormatInt(n/int64(checks), 10)
	}
	return strconv.FormatFloat(float64(n)/float64(checks), 'f', 2, 64)
}
