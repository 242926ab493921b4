package task

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"

	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	"github.com/berth-dev/berth/shim/logfile"
)

// historyLimit bounds the output an exec'd process keeps for a client
// that attaches late (an exec's output goes to no log file).
const historyLimit = 1 << 20

// chunk is a piece of output on its way to attached clients.
type chunk struct {
	stream shimv1.OutputStream
	data   []byte
}

// fanout copies a process's output to every attached client. A client
// that does not keep up loses live chunks rather than stalling the
// container: the log file has everything.
type fanout struct {
	mu      sync.Mutex
	subs    map[chan chunk]struct{}
	history []chunk // exec'd processes only; nil keeps none
	keep    bool
	size    int
}

func newFanout(keepHistory bool) *fanout {
	return &fanout{subs: map[chan chunk]struct{}{}, keep: keepHistory}
}

// subscribe registers a client and hands it the history so far, both
// under the lock so nothing is seen twice or missed.
func (f *fanout) subscribe() (chan chunk, []chunk) {
	ch := make(chan chunk, 256)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[ch] = struct{}{}
	return ch, append([]chunk(nil), f.history...)
}

func (f *fanout) unsubscribe(ch chan chunk) {
	f.mu.Lock()
	delete(f.subs, ch)
	f.mu.Unlock()
}

// subscribeWith registers a client like subscribe, and runs replay under
// the same lock that copyOutput holds while it writes the log and
// publishes: what replay reads from the log is exactly what the client
// will not receive live.
func (f *fanout) subscribeWith(replay func()) chan chunk {
	ch := make(chan chunk, 256)
	f.mu.Lock()
	defer f.mu.Unlock()
	replay()
	f.subs[ch] = struct{}{}
	return ch
}

// write records data in the log (when there is one) and publishes it, as
// one step with respect to subscribeWith. data is the caller's buffer: it
// is copied only for clients and history, so output nobody attaches to
// costs no allocation.
func (f *fanout) write(lw *logfile.LineWriter, stream shimv1.OutputStream, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if lw != nil {
		lw.Write(data)
	}
	history := f.keep && f.size+len(data) <= historyLimit
	if !history && len(f.subs) == 0 {
		return
	}
	c := chunk{stream: stream, data: append([]byte(nil), data...)}
	if history {
		f.history = append(f.history, c)
		f.size += len(c.data)
	}
	for ch := range f.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

// outputBufs are the read buffers of the output copiers. A copier holds
// one only while data is there to read: an idle container's shim (the
// common case) then keeps none, instead of a 32 KiB buffer per stream,
// which as a local variable also grew each copier's stack to 64 KiB.
var outputBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyOutput reads r until EOF (or EIO, which a pty master returns once
// every slave is closed) and sends it to the log, when there is one, and
// to attached clients.
func copyOutput(r *os.File, stream shimv1.OutputStream, lw *logfile.LineWriter, out *fanout) {
	defer func() {
		if lw != nil {
			out.mu.Lock()
			lw.Flush()
			out.mu.Unlock()
		}
	}()
	rc, err := r.SyscallConn()
	if err != nil {
		return
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	// fill runs when r may be readable (at once, then after each wait for
	// readiness): the buffer is taken only then. Made once, as it escapes.
	fill := func(fd uintptr) bool {
		bp = outputBufs.Get().(*[]byte)
		for {
			n, rerr = unix.Read(int(fd), *bp)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			outputBufs.Put(bp)
			bp = nil
			return false
		}
		return true
	}
	for {
		bp, n, rerr = nil, 0, nil
		err := rc.Read(fill)
		if n > 0 {
			out.write(lw, stream, (*bp)[:n])
		}
		if bp != nil {
			outputBufs.Put(bp)
		}
		// EOF (n == 0), EIO from a pty master (the normal end of a
		// terminal), or r closed under us: the stream has ended.
		if err != nil || n <= 0 {
			return
		}
	}
}
