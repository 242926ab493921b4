package agent

import (
	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

type eventsService struct {
	berthv1.UnimplementedEventsServiceServer
	a *Agent
}

// Subscribe streams events until the client goes away. A client that reads
// slowly blocks only its own stream.Send; the exchange queues for it up to
// the configured buffer and then counts what it loses.
func (s *eventsService) Subscribe(req *berthv1.SubscribeRequest, stream berthv1.EventsService_SubscribeServer) error {
	ctx := stream.Context()
	f := events.Filter{Topics: req.GetTopics(), IDs: req.GetIds()}
	if !req.GetAllNamespaces() {
		f.Namespace = namespaces.FromContext(ctx)
	}
	// Headers go out once the subscription is registered, so a client that
	// waits for them knows it will see every event published after.
	ready := func() error { return stream.SendHeader(nil) }
	return s.a.events.Subscribe(ctx, f, ready, func(m events.Message) error {
		if m.Lost > 0 {
			return stream.Send(&berthv1.SubscribeResponse{Message: &berthv1.SubscribeResponse_Lost{Lost: &berthv1.EventsLost{Count: m.Lost}}})
		}
		return stream.Send(&berthv1.SubscribeResponse{Message: &berthv1.SubscribeResponse_Event{Event: m.Event}})
	})
}
