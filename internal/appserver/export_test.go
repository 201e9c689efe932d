package appserver

import "time"

// SetRedeliveryTiming shortens redelivery's backoff and the interval at
// which it looks for due pushes, so tests need not wait seconds; call it
// before Run.
func (s *Service) SetRedeliveryTiming(base, tick time.Duration) {
	s.redeliver.base, s.redeliver.maxWait, s.redeliver.tick = base, 4*base, tick
}
