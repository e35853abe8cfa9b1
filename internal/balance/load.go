package balance

import (
	"time"

	"github.com/sluice-lb/sluice/internal/pool"
)

// maxUtil caps the utilisation loadFactor weighs: past it every backend
// looks equally saturated, 100 times as busy as an idle one.
const maxUtil = 0.99

// loadFactor is how much busier a backend's own load report makes it look:
// 1/(1−u), the growth of waiting time with utilisation u in a queue, so
// that 0.5 counts double and 0.9 ten times. A backend that reported
// nothing counts as idle (1): with the header form its next response
// reports, and with an agent its next check does.
func loadFactor(b *pool.Backend, now time.Time) float64 {
	u, ok := b.Utilization(now)
	if !ok || u <= 0 {
		return 1
	}
	return 1 / (1 - min(u, maxUtil))
}

// loadCost is least_requests' cost of sending one more request to b of
// weight w when backends report their load: (in_flight+1)/w × loadFactor.
// The +1 makes the load count when nothing is in flight.
func loadCost(b *pool.Backend, w uint64, now time.Time) float64 {
	return float64(b.InFlight.Load()+1) * loadFactor(b, now) / float64(w)
}
