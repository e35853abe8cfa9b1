//go:build !linux

package h1

// Elsewhere than on Linux, idle connections do not park: each waits in its
// goroutine with a small buffer (readIdle).

type parkState struct{}

func (c *h1conn) park() bool            { return false }
func (e *Engine) unpark(c *h1conn) bool { return false }
func (e *Engine) stopParker()           {}

type parker struct{}
