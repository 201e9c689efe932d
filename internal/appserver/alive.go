package appserver

import "sync"

// Alive returns once it could take, in turn, each lock that pushes and
// registrations take; it does not return while one of them is held for
// good. The service manager's watchdog is fed only after it returns (see
// systemd.Notifier.Watchdog), so that a deadlock in the core, which would
// leave a server that accepts every push and answers none, ends in a
// restart instead.
//
// Only locks held around work in memory are taken, never one held while
// the registry is asked (saltMu, until the salt is read): a database that
// hangs must not look like a deadlock, or the watchdog would restart the
// server in the middle of an outage it rides out.
func (s *Service) Alive() {
	locks := []*sync.Mutex{&s.status.mu, &s.throttle.mu}
	if s.redeliver != nil {
		locks = append(locks, &s.redeliver.mu)
	}
	if s.devices != nil {
		locks = append(locks, &s.devices.mu)
	}
	if s.cache != nil {
		locks = append(locks, &s.cache.outageMu)
		for i := range s.cache.gens {
			locks = append(locks, &s.cache.gens[i].mu)
		}
	}
	for _, mu := range locks {
		mu.Lock()
		//lint:ignore SA2001 taking the lock is the check
		mu.Unlock()
	}
}
