package runtime

import (
	"testing"
	"time"
)

// While the pool still holds a shim, the pool keeper starts the next one
// only once takes have stopped for the delay: never while a burst of
// creates (or the container that took the last shim) is still under way;
// and Close wakes it at once.
func TestRefillWaitsForQuiet(t *testing.T) {
	m := New(Config{WarmShims: 2})
	defer m.Close()
	m.warm <- &warmShim{} // one left in the pool
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

// Once the pool is empty, a take starts the refill at once: containers
// started back to back would otherwise all start cold.
func TestRefillAtOnceWhenThePoolIsEmpty(t *testing.T) {
	m := New(Config{WarmShims: 2})
	defer m.Close()
	m.warm <- &warmShim{}
	res := make(chan bool, 1)
	go func() { res <- m.quiet(time.Hour) }()
	m.refill() // one still in the pool: keep waiting
	select {
	case <-res:
		t.Fatal("refill started with a shim still in the pool")
	case <-time.After(50 * time.Millisecond):
	}
	<-m.warm // the last one taken
	m.refill()
	select {
	case ok := <-res:
		if !ok {
			t.Fatal("quiet gave up though the Manager is open")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an empty pool waited for quiet")
	}
}
