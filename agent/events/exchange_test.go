package events

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestFilter(t *testing.T) {
	e := &berthv1.Event{Namespace: "default", Topic: "/tasks/exit", Id: "abc"}
	cases := []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Namespace: "default"}, true},
		{Filter{Namespace: "other"}, false},
		{Filter{Topics: []string{"/tasks/exit"}}, true},
		{Filter{Topics: []string{"/tasks/"}}, true},
		{Filter{Topics: []string{"/tasks*"}}, true},
		{Filter{Topics: []string{"/tasks"}}, false},
		{Filter{Topics: []string{"/containers/"}}, false},
		{Filter{IDs: []string{"x", "abc"}}, true},
		{Filter{IDs: []string{"x"}}, false},
	}
	for _, c := range cases {
		if got := c.f.Match(e); got != c.want {
			t.Errorf("%+v.Match = %v, want %v", c.f, got, c.want)
		}
	}
}

func TestDeliveryInOrderWithFilter(t *testing.T) {
	x := New(16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Message, 100)
	done := make(chan error, 1)
	go func() {
		done <- x.Subscribe(ctx, Filter{Topics: []string{"/tasks/"}}, nil, func(m Message) error { got <- m; return nil })
	}()
	waitSubscribers(t, x, 1)
	nctx := namespaces.WithNamespace(ctx, "ns1")
	for i := 0; i < 5; i++ {
		x.Publish(nctx, "/tasks/start", fmt.Sprint(i), nil)
		x.Publish(nctx, "/containers/create", fmt.Sprint(i), nil)
	}
	for i := 0; i < 5; i++ {
		m := <-got
		if m.Event == nil || m.Event.Id != fmt.Sprint(i) || m.Event.Topic != "/tasks/start" || m.Event.Namespace != "ns1" {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("subscribe returned %v", err)
	}
	if n := x.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers left after cancel", n)
	}
}

// A subscriber that does not read never blocks publishers, and is told
// how many events it lost, in order, when it reads again.
func TestSlowSubscriberLosesEventsButNeverBlocks(t *testing.T) {
	x := New(8)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	var mu sync.Mutex
	var msgs []Message
	done := make(chan struct{})
	go func() {
		defer close(done)
		first := true
		x.Subscribe(ctx, Filter{}, nil, func(m Message) error {
			if first {
				first = false
				<-release // stuck reader
			}
			mu.Lock()
			msgs = append(msgs, m)
			mu.Unlock()
			return nil
		})
	}()
	waitSubscribers(t, x, 1)
	x.Publish(ctx, "/t", "0", nil)
	// Give the subscriber time to take event 0 and block in fn.
	deadline := time.Now().Add(5 * time.Second)
	for {
		x.mu.RLock()
		var qlen int
		for s := range x.subs {
			s.mu.Lock()
			qlen = len(s.queue)
			s.mu.Unlock()
		}
		x.mu.RUnlock()
		if qlen == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	const total = 10000
	published := make(chan struct{})
	go func() {
		for i := 1; i < total; i++ {
			x.Publish(ctx, "/t", fmt.Sprint(i), nil)
		}
		close(published)
	}()
	select {
	case <-published:
	case <-time.After(30 * time.Second):
		t.Fatal("publishers blocked by a subscriber that does not read")
	}
	close(release)
	// Wait until the subscriber has everything: 1 + 8 queued + 1 lost marker.
	for i := 0; ; i++ {
		mu.Lock()
		n := len(msgs)
		mu.Unlock()
		if n >= 10 {
			break
		}
		if i > 5000 {
			t.Fatalf("subscriber got %d messages", n)
		}
		time.Sleep(time.Millisecond)
	}
	x.Publish(ctx, "/t", "after", nil)
	time.Sleep(10 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	var events, lost uint64
	for _, m := range msgs {
		if m.Lost > 0 {
			lost += m.Lost
		} else {
			events++
		}
	}
	if events+lost != total+1 {
		t.Fatalf("got %d events and %d lost, want them to add up to %d", events, lost, total+1)
	}
	if lost == 0 {
		t.Fatal("subscriber was not told it lost events")
	}
	if last := msgs[len(msgs)-1]; last.Event == nil || last.Event.Id != "after" {
		t.Fatalf("live delivery did not resume after the loss: last %+v", last)
	}
}

func waitSubscribers(t *testing.T, x *Exchange, n int) {
	t.Helper()
	for i := 0; x.Subscribers() != n; i++ {
		if i > 5000 {
			t.Fatalf("want %d subscribers, have %d", n, x.Subscribers())
		}
		time.Sleep(time.Millisecond)
	}
}
