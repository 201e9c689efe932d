package component

// HandlingPeak is the most IQs c handled at once, each on a worker
// goroutine of its own.
func (c *Conn) HandlingPeak() int64 { return c.handlingPeak.Load() }

// Handling is how many IQs c handles now.
func (c *Conn) Handling() int64 { return c.handling.Load() }

// WaitingPerSlot is how many pushes may wait on a timer without a slot,
// per slot.
const WaitingPerSlot = waitingPerSlot
