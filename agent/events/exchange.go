// Package events is berthd's in-process publish/subscribe exchange.
//
// Publishers never wait for subscribers. Each subscriber has a bounded
// queue; when a slow subscriber's queue is full, further events are
// counted instead of queued, and the subscriber receives one Lost message
// with the count before the next event it does receive (or as soon as it
// has drained its queue). So a subscriber that never reads costs the agent
// one full queue, and learns exactly how many events it missed.
package events

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// DefaultBuffer is the queue length of a subscriber.
const DefaultBuffer = 1024

// Filter selects events for a subscriber. Empty fields match everything.
type Filter struct {
	// Namespace, when set, keeps events of that namespace only.
	Namespace string
	// Topics match exactly, or as a prefix when they end in "/" or "*".
	Topics []string
	// IDs match the event's subject.
	IDs []string
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *berthv1.Event) bool {
	if f.Namespace != "" && e.Namespace != f.Namespace {
		return false
	}
	if len(f.Topics) > 0 && !anyTopic(f.Topics, e.Topic) {
		return false
	}
	if len(f.IDs) > 0 {
		ok := false
		for _, id := range f.IDs {
			if id == e.Id {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func anyTopic(patterns []string, topic string) bool {
	for _, p := range patterns {
		switch {
		case strings.HasSuffix(p, "*"):
			if strings.HasPrefix(topic, strings.TrimSuffix(p, "*")) {
				return true
			}
		case strings.HasSuffix(p, "/"):
			if strings.HasPrefix(topic, p) {
				return true
			}
		case p == topic:
			return true
		}
	}
	return false
}

// Message is what a subscriber receives: an event, or a count of lost ones.
type Message struct {
	Event *berthv1.Event
	// Lost, when non-zero, is the number of events dropped before this
	// point because the subscriber read too slowly.
	Lost uint64
}

// Exchange fans events out to subscribers.
type Exchange struct {
	buffer int

	mu   sync.RWMutex
	subs map[*subscriber]struct{}
}

// New returns an exchange whose subscribers queue up to buffer events.
func New(buffer int) *Exchange {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	return &Exchange{buffer: buffer, subs: map[*subscriber]struct{}{}}
}

type subscriber struct {
	filter Filter
	notify chan struct{} // capacity 1: "the queue changed"

	mu    sync.Mutex
	queue []Message
	lost  uint64
	limit int
}

// Publish sends an event on topic about subject id in the context's
// namespace. It never blocks on subscribers.
func (x *Exchange) Publish(ctx context.Context, topic, id string, attrs map[string]string) {
	e := &berthv1.Event{
		Timestamp:  timestamppb.New(time.Now().UTC()),
		Namespace:  namespaces.FromContext(ctx),
		Topic:      topic,
		Id:         id,
		Attributes: attrs,
	}
	x.PublishEvent(e)
}

// PublishEvent sends a prepared event. It never blocks on subscribers.
func (x *Exchange) PublishEvent(e *berthv1.Event) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for s := range x.subs {
		if s.filter.Match(e) {
			s.offer(e)
		}
	}
}

func (s *subscriber) offer(e *berthv1.Event) {
	s.mu.Lock()
	if len(s.queue) >= s.limit {
		// Still wake the reader: once it drains its queue, take reports
		// the loss even if no other event ever comes.
		s.lost++
	} else {
		if s.lost > 0 {
			// The gap comes before this event: say so in order.
			s.queue = append(s.queue, Message{Lost: s.lost})
			s.lost = 0
		}
		s.queue = append(s.queue, Message{Event: e})
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take returns the queued messages; when the queue is empty but events
// were lost, it reports the loss at once rather than waiting for the next
// event, which may never come.
func (s *subscriber) take() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.queue
	s.queue = nil
	if len(out) == 0 && s.lost > 0 {
		out = []Message{{Lost: s.lost}}
		s.lost = 0
	}
	return out
}

// Subscribe calls fn for each message that passes filter, in order, until
// ctx is done or fn returns an error, which Subscribe returns. fn runs on
// the caller's goroutine, so a slow fn only slows this subscriber. ready,
// when not nil, is called once the subscription is registered: every event
// published after ready is called reaches fn (or is counted as lost).
func (x *Exchange) Subscribe(ctx context.Context, filter Filter, ready func() error, fn func(Message) error) error {
	s := &subscriber{filter: filter, notify: make(chan struct{}, 1), limit: x.buffer}
	x.mu.Lock()
	x.subs[s] = struct{}{}
	x.mu.Unlock()
	defer func() {
		x.mu.Lock()
		delete(x.subs, s)
		x.mu.Unlock()
	}()
	if ready != nil {
		if err := ready(); err != nil {
			return err
		}
	}
	for {
		batch := s.take()
		if len(batch) == 0 {
			// Only wait when the queue is empty: wake-ups coalesce, so
			// one may stand for many offers made while fn was busy.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.notify:
			}
			continue
		}
		for _, m := range batch {
			if err := fn(m); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Subscribers reports how many subscribers are attached.
func (x *Exchange) Subscribers() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.subs)
}
