package component

// WorkerPeak is the most worker goroutines a session of c had at once.
func (c *Conn) WorkerPeak() int64 { return c.workerPeak.Load() }

// WaitingPerSlot is how many pushes may wait on a timer without a slot,
// per slot.
const WaitingPerSlot = waitingPerSlot
