package loop

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Group is a set of loops run and closed together, one goroutine each.
type Group struct {
	Loops []*Loop
}

// NewGroup creates n loops with cfg (their IDs 0 to n-1, Loops n).
func NewGroup(n int, cfg Config) (*Group, error) {
	g := &Group{}
	held := new(atomic.Int32) // the busy loops' count, shared (Config.held)
	for i := 0; i < n; i++ {
		c := cfg
		c.ID = i
		c.Loops = n
		c.held = held
		l, err := New(c)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.Loops = append(g.Loops, l)
	}
	return g, nil
}

// Run runs every loop until ctx ends or one fails (which stops the others),
// and returns when all have returned, with the errors that stopped them.
func (g *Group) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(g.Loops))
	for i, l := range g.Loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = l.Run(ctx); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close closes every loop; call it after Run has returned.
func (g *Group) Close() {
	for _, l := range g.Loops {
		l.Close()
	}
}
