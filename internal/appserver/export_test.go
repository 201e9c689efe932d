package appserver

import (
	"context"
	"time"
)

// SetRedeliveryTiming shortens redelivery's backoff, the interval at
// which it looks for due pushes and the one at which it asks the registry
// for held ones, so tests need not wait seconds; call it before Run.
func (s *Service) SetRedeliveryTiming(base, tick time.Duration) {
	s.redeliver.base, s.redeliver.maxWait, s.redeliver.tick, s.redeliver.poll = base, 4*base, tick, 10*tick
}

// SetHeldPoll sets how often the registry is asked for held pushes;
// call it after SetRedeliveryTiming and before Run.
func (s *Service) SetHeldPoll(d time.Duration) { s.redeliver.poll = d }

// SetRedeliveryLease sets the lease under which the registry keeps this
// server's waiting pushes; call it before Run.
func (s *Service) SetRedeliveryLease(d time.Duration) { s.redeliver.lease = d }

// SetRedeliveryRoom sets how many devices, and how many bytes, may wait
// for redelivery, so tests fill the room with a few pushes; call it
// before the first push.
func (s *Service) SetRedeliveryRoom(devices, bytes int) {
	s.redeliver.max, s.redeliver.maxBytes = devices, bytes
}

// FlushStatus writes the pending push outcomes to the registry now.
func (s *Service) FlushStatus(ctx context.Context) { s.status.flush(ctx) }
