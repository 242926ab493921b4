package integration

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// registryProxy sits between berthd and a test registry: it counts blob
// downloads, records Range requests and bytes sent, can slow blobs down
// so a test can kill berthd mid-download, can tamper with one blob, and
// can make one blob unavailable. The throttle is approximate: at most
// min(bps/20, one 32 KiB proxy read) per 50 ms.
type registryProxy struct {
	Addr string

	mu        sync.Mutex
	blobGETs  map[string]int    // digest → full or partial GETs
	ranges    map[string]string // digest → last Range header
	sent      map[string]int64  // digest → body bytes sent
	throttle  int64             // bytes per second for blobs, 0 = off
	tamper    string            // digest whose body gets one byte flipped
	fail      string            // digest whose GETs answer 503
	blobBytes atomic.Int64
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

func startProxy(t *testing.T, upstream string) *registryProxy {
	t.Helper()
	p := &registryProxy{blobGETs: map[string]int{}, ranges: map[string]string{}, sent: map[string]int64{}}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		m := blobPath.FindStringSubmatch(resp.Request.URL.Path)
		if m == nil || resp.Request.Method != http.MethodGet {
			return nil
		}
		d := m[1]
		p.mu.Lock()
		throttle, tamper := p.throttle, p.tamper == d
		p.mu.Unlock()
		resp.Body = &proxyBody{rc: resp.Body, p: p, digest: d, throttle: throttle, tamper: tamper}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m := blobPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodGet {
			p.mu.Lock()
			p.blobGETs[m[1]]++
			if rg := r.Header.Get("Range"); rg != "" {
				p.ranges[m[1]] = rg
			}
			fail := p.fail == m[1]
			p.mu.Unlock()
			if fail {
				http.Error(w, "unavailable for the test", http.StatusServiceUnavailable)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.Addr = l.Addr().String()
	return p
}

func (p *registryProxy) setThrottle(bps int64) {
	p.mu.Lock()
	p.throttle = bps
	p.mu.Unlock()
}

func (p *registryProxy) setTamper(d string) {
	p.mu.Lock()
	p.tamper = d
	p.mu.Unlock()
}

func (p *registryProxy) setFail(d string) {
	p.mu.Lock()
	p.fail = d
	p.mu.Unlock()
}

func (p *registryProxy) gets(d string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blobGETs[d]
}

func (p *registryProxy) rangeOf(d string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ranges[d]
}

func (p *registryProxy) sentOf(d string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[d]
}

func (p *registryProxy) totalGETs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, v := range p.blobGETs {
		n += v
	}
	return n
}

func (p *registryProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blobGETs, p.ranges, p.sent = map[string]int{}, map[string]string{}, map[string]int64{}
}

type proxyBody struct {
	rc       io.ReadCloser
	p        *registryProxy
	digest   string
	throttle int64
	tamper   bool
	first    bool
}

func (b *proxyBody) Read(buf []byte) (int, error) {
	if b.throttle > 0 {
		chunk := int(b.throttle / 20)
		if chunk < 1 {
			chunk = 1
		}
		if len(buf) > chunk {
			buf = buf[:chunk]
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, err := b.rc.Read(buf)
	if n > 0 && b.tamper && !b.first {
		buf[0] ^= 0xff
		b.first = true
	}
	b.p.mu.Lock()
	b.p.sent[b.digest] += int64(n)
	b.p.mu.Unlock()
	b.p.blobBytes.Add(int64(n))
	return n, err
}

func (b *proxyBody) Close() error { return b.rc.Close() }

// mirrorConfig makes the proxy (or a registry) berthd's docker.io mirror.
func mirrorConfig(addr string) string {
	return "[registry.\"docker.io\"]\nmirrors = [\"http://" + addr + "\"]\n"
}

// hasLine reports whether out has a line equal to want (after trimming).
func hasLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}
