package runtime

import (
	"testing"
	"time"
)

// The pool keeper starts the next warm shim only once takes have stopped
// for the delay: never while a burst of creates (or the container that
// took the last shim) is still under way; and Close wakes it at once.
func TestRefillWaitsForQuiet(t *testing.T) {
	m := New(Config{WarmShims: 1})
	defer m.Close()
	const d = 80 * time.Millisecond
	quietAt := make(chan time.Time, 1)
	go func() {
		if m.quiet(d) {
			quietAt <- time.Now()
		}
		close(quietAt)
	}()
	// Takes for 3 delays' time, one every d/4, each timed before it is
	// made.
	var takes []time.Time
	var at time.Time
	ok := true
burst:
	for end := time.Now().Add(3 * d); time.Now().Before(end); {
		takes = append(takes, time.Now())
		m.refill()
		select {
		case at, ok = <-quietAt:
			break burst // only legitimate after a stall of d: checked below
		case <-time.After(d / 4):
		}
	}
	if at.IsZero() {
		at, ok = <-quietAt
	}
	if !ok {
		t.Fatal("quiet gave up though the Manager is open")
	}
	var last time.Time
	for _, tk := range takes {
		if tk.Before(at) {
			last = tk
		}
	}
	if at.Sub(last) < d {
		t.Fatalf("refill started %v after a take, want at least %v (%d takes)", at.Sub(last), d, len(takes))
	}

	// Close wakes a waiting keeper at once, with no refill.
	res := make(chan bool)
	go func() { res <- m.quiet(time.Hour) }()
	m.Close()
	if <-res {
		t.Fatal("quiet reported a quiet hour after Close")
	}
}
