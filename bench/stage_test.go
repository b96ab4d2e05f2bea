package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ota-agent/ota-agent/store"
)

// The download path of the agent without the network, to see where the
// time of `update` goes: store.Stage.Write copies the body into a staged
// file and through SHA-256 in one loop (io.Copy into an io.MultiWriter,
// 32 KiB at a time), then fsyncs. The sub-benchmarks take it apart:
//
//	go test -run - -bench . -benchtime 10x ./bench
//
// The body is a reader without WriterTo, as an HTTP body is, so io.Copy
// uses its own 32 KiB buffer exactly as in the agent. Files go to the
// directory of os.TempDir (set TMPDIR to measure another disk).

const benchFileSize = 64 << 20

func benchData(b *testing.B) []byte {
	b.Helper()
	data := make([]byte, benchFileSize)
	rand.NewChaCha8([32]byte{1}).Read(data)
	return data
}

// body is the data as an HTTP body reads: no WriterTo, so io.Copy buffers.
func body(data []byte) io.Reader { return io.LimitReader(bytes.NewReader(data), int64(len(data))) }

func BenchmarkDownloadPath(b *testing.B) {
	data := benchData(b)

	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(benchFileSize)
		b.ReportAllocs()
		for b.Loop() {
			h := sha256.New()
			if _, err := io.Copy(h, body(data)); err != nil {
				b.Fatal(err)
			}
		}
	})

	// What curl -o FILE && sync does on the device: write, then flush.
	b.Run("write+fsync", func(b *testing.B) {
		benchWrite(b, data, func(f *os.File, r io.Reader) error {
			_, err := io.Copy(f, r)
			return err
		})
	})

	// Stage.Write's loop without the store: one goroutine reads, writes
	// and hashes each 32 KiB in turn.
	b.Run("write+sha256+fsync", func(b *testing.B) {
		benchWrite(b, data, func(f *os.File, r io.Reader) error {
			_, err := io.Copy(io.MultiWriter(f, sha256.New()), r)
			return err
		})
	})

	// The same with 256 KiB buffers: fewer system calls, hash still in turn.
	b.Run("write+sha256+fsync/256KiB", func(b *testing.B) {
		benchWrite(b, data, func(f *os.File, r io.Reader) error {
			_, err := io.CopyBuffer(io.MultiWriter(f, sha256.New()), r, make([]byte, 256<<10))
			return err
		})
	})

	// The agent's path: store.Stage.Write (256 KiB buffers written while a
	// second goroutine hashes them, fsync, index entry).
	b.Run("Stage.Write", func(b *testing.B) {
		dir := b.TempDir()
		s, err := store.Open(filepath.Join(dir, "state"), filepath.Join(dir, "app"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		st, err := s.Stage("v1")
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		b.SetBytes(benchFileSize)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			name := fmt.Sprintf("blob%d.bin", i)
			if _, err := st.Write(name, body(data), benchFileSize, 1<<30); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.Remove(filepath.Join(dir, "state", "staging", "v1", name))
			i++
			b.StartTimer()
		}
	})
}

// benchWrite times copy of data into a new file, plus its fsync.
func benchWrite(b *testing.B, data []byte, copy func(*os.File, io.Reader) error) {
	dir := b.TempDir()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		path := filepath.Join(dir, fmt.Sprint(i))
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := copy(f, body(data)); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		b.StopTimer()
		os.Remove(path) // not timed: deleting is not part of a download
		i++
		b.StartTimer()
	}
}
