package layer

import (
	"io"
	"sync"

	"github.com/berth-dev/berth/internal/hugebuf"
)

// readahead runs decompression and hashing on their own goroutine, a few
// chunks ahead of the extraction that consumes them. Decompressing and
// hashing take about half the CPU of an apply and the file syscalls the
// other half, so overlapping them is the cheapest speed-up on a small
// machine.
//
// The producer goroutine owns the source: it closes it when it finishes,
// whether at the end of the stream or because Close was called, and Close
// waits for that, so nothing reads the caller's reader once Apply returns.
type readahead struct {
	full chan []byte // chunks ready to consume, in order
	free chan []byte // chunks given back by the consumer
	done chan struct{}
	exit chan struct{} // closed when the producer has returned
	err  error         // the producer's final error; read only after full closes
	cur  []byte
	last []byte
	once sync.Once
	n    int64  // bytes consumed so far, for error messages
	mem  []byte // the chunks' memory (internal/hugebuf), given back by Close
}

const (
	readaheadChunk = 256 << 10
	readaheadDepth = 4
)

func newReadahead(src io.ReadCloser) *readahead {
	ra := &readahead{
		full: make(chan []byte, readaheadDepth),
		free: make(chan []byte, readaheadDepth),
		done: make(chan struct{}),
		exit: make(chan struct{}),
		mem:  hugebuf.Get(readaheadChunk * readaheadDepth),
	}
	for i := range readaheadDepth {
		ra.free <- ra.mem[i*readaheadChunk : (i+1)*readaheadChunk : (i+1)*readaheadChunk]
	}
	go ra.run(src)
	return ra
}

func (ra *readahead) run(src io.ReadCloser) {
	defer close(ra.exit)
	defer close(ra.full)
	defer src.Close()
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.done:
			return
		}
		n, err := io.ReadFull(src, buf[:cap(buf)])
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.done:
				return
			}
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			ra.err = io.EOF
			return
		default:
			ra.err = err
			return
		}
	}
}

// Read implements io.Reader. Not safe for concurrent use.
func (ra *readahead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.last != nil {
			ra.free <- ra.last // never blocks: free has room for every chunk
			ra.last = nil
		}
		b, ok := <-ra.full
		if !ok {
			return 0, ra.err
		}
		ra.cur, ra.last = b, b
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	ra.n += int64(n)
	return n, nil
}

// Close stops the producer and waits for it, which takes at most the time
// of one chunk's read: layers are read from the local content store, so
// that is short.
// The chunks go back to the pool then: nobody reads them after Close.
func (ra *readahead) Close() error {
	ra.once.Do(func() { close(ra.done) })
	<-ra.exit
	if ra.mem != nil {
		ra.cur, ra.last = nil, nil
		hugebuf.Put(ra.mem)
		ra.mem = nil
	}
	return nil
}
