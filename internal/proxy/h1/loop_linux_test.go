package h1

import (
	"sync"

	"github.com/sluice-lb/sluice/internal/loop"

	"github.com/sluice-lb/sluice/internal/pool"
)

// idle counts the loops' idle connections to b (asked on each loop).
func (ls *Loops) idle(b *pool.Backend) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	for _, w := range ls.ws {
		wg.Add(1)
		if !w.ev.Post(func() {
			defer wg.Done()
			k := len(w.idle[b]) // closed ones leave at once (unidle)
			mu.Lock()
			n += k
			mu.Unlock()
		}) {
			wg.Done()
		}
	}
	wg.Wait()
	return n
}

// loopReadable reports whether bytes from the client wait in the kernel
// for c, served on a loop (its descriptor does not change while it is).
func loopReadable(c *h1conn) bool {
	lc := c.lc.Load()
	if lc == nil {
		return false
	}
	n, _ := loop.Peek(lc.fd)
	return n > 0
}

// freePipes reports how many empty pipes the loops keep.
func (ls *Loops) freePipes() int {
	n := make(chan int, len(ls.ws))
	for _, w := range ls.ws {
		if !w.ev.Post(func() { n <- w.pipes.Free() }) {
			n <- 0
		}
	}
	total := 0
	for range ls.ws {
		total += <-n
	}
	return total
}
