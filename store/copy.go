package store

import (
	"hash"
	"io"
)

// copyHashing copies r to w and hashes what it copies, with the hash
// running in a second goroutine over the same buffers: hashing a chunk
// overlaps writing it and reading the next, where one loop would add the
// hash time to the I/O time (SHA-256 was a third of a large update's CPU).
// Memory stays constant: copyBufs buffers of copyBufSize.
func copyHashing(w io.Writer, h hash.Hash, r io.Reader) (int64, error) {
	const copyBufSize, copyBufs = 256 << 10, 4
	free := make(chan []byte, copyBufs)
	full := make(chan []byte, copyBufs)
	for range copyBufs {
		free <- make([]byte, copyBufSize)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for buf := range full {
			h.Write(buf)
			free <- buf[:cap(buf)]
		}
	}()
	var n int64
	var err error
	for {
		buf := <-free
		m, rerr := r.Read(buf)
		if m == 0 {
			free <- buf
		} else {
			// The hasher and the writer only read buf; it is refilled
			// (taken from free) only after this Write has returned.
			full <- buf[:m]
			if _, werr := w.Write(buf[:m]); werr != nil {
				err = werr
				break
			}
			n += int64(m)
		}
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	close(full)
	<-done
	return n, err
}
