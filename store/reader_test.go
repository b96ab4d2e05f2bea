package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ota-agent/ota-agent/internal/testenv"
)

// An app that keeps running through in-place updates (reset = "none") and
// opens its files all the time never finds one missing (ENOENT) and never
// reads a part of one: each path holds one release's whole file at every
// instant, whether the switch links (one mount) or copies (the app dir on
// another filesystem, as under systemd's bind mounts).
func TestReaderNeverSeesAGap(t *testing.T) {
	release := func(v string) map[string]string {
		out := map[string]string{}
		for i := range 8 {
			p := fmt.Sprintf("pkg%d/mod%d.py", i%3, i)
			out[p] = strings.Repeat(fmt.Sprintf("%s %s\n", v, p), 16<<10/len(v+p+"  "))
		}
		return out
	}
	v1, v2 := release("v1"), release("v2")
	for _, across := range []bool{false, true} {
		t.Run(map[bool]string{false: "one-mount", true: "across-filesystems"}[across], func(t *testing.T) {
			root := t.TempDir()
			appDir := filepath.Join(root, "app")
			if across {
				var shm, tmp unix.Statfs_t
				if unix.Statfs("/dev/shm", &shm) != nil || unix.Statfs(root, &tmp) != nil || shm.Fsid == tmp.Fsid {
					testenv.Require(t, "/dev/shm on another filesystem than the temp dir", false)
				}
				parent, err := os.MkdirTemp("/dev/shm", "ota-agent-test-")
				mustDo(t, "mkdir", err)
				t.Cleanup(func() { os.RemoveAll(parent) })
				appDir = filepath.Join(parent, "app")
			}
			s, err := Open(filepath.Join(root, "state", "app"), appDir, Options{Mode: InPlace})
			mustDo(t, "Open", err)
			install(t, s, "v1", v1)

			var stop atomic.Bool
			var reads atomic.Int64
			var mu sync.Mutex
			var problems []string
			var wg sync.WaitGroup
			wg.Go(func() {
				for !stop.Load() {
					for p := range v1 {
						b, err := os.ReadFile(filepath.Join(appDir, p))
						reads.Add(1)
						if err != nil || string(b) != v1[p] && string(b) != v2[p] {
							mu.Lock()
							if len(problems) < 5 {
								problems = append(problems, fmt.Sprintf("%s: %d bytes, %v", p, len(b), err))
							}
							mu.Unlock()
						}
					}
				}
			})
			for i := range 100 {
				v, files := "v2", v2
				if i%2 == 1 {
					v, files = "v1", v1
				}
				install(t, s, v, files)
			}
			stop.Store(true)
			wg.Wait()
			t.Logf("%d reads during 100 updates", reads.Load())
			if len(problems) > 0 {
				t.Errorf("the reader saw a missing or partial file: %v", problems)
			}
		})
	}
}
