package h2guard

// The guard without a connection of its own, for a server that reads and
// writes the socket itself on an event loop (package h2's loop mode): it
// is given the client's bytes as they are read (Scan) and the server's as
// they are queued (ScanOut), and the server ends the connection as the
// guard would when Scan names a reason (GOAWAY ENHANCE_YOUR_CALM with
// GoAwayDebug, a delayed close), telling the guard with Closed.

// NewScanner returns a guard for a connection that cfg's limits apply to
// but whose I/O the caller does itself. cfg may be nil (all defaults).
func NewScanner(cfg *Config) *Conn {
	if cfg == nil {
		cfg = &Config{}
	}
	c := new(Conn)
	c.count(cfg)
	return c
}

// Scan counts the frames in b, the next bytes the client sent; a reason
// other than None means the client exceeded a limit: end the connection
// and call Closed. Call it from one goroutine at a time.
func (c *Conn) Scan(b []byte) Reason {
	if c.preface < 0 || len(b) == 0 {
		return None
	}
	c.nowOK = false
	r := c.scan(b)
	c.rn += int64(len(b))
	return r
}

// ScanOut counts the frames in b, the next bytes the server writes (the
// allowances for PING and WINDOW_UPDATE depend on them).
func (c *Conn) ScanOut(b []byte) {
	c.wmu.Lock()
	c.scanOut(b)
	c.wmu.Unlock()
}

// Closed records that the caller ended the connection for r (Scan's).
func (c *Conn) Closed(r Reason) {
	c.err = errs[r]
	c.reason.Store(uint32(r))
	if c.stats != nil {
		c.stats.counter(r).Add(1)
	}
	if c.onClose != nil {
		c.onClose(c, r)
	}
}

// GoAwayDebug is the debug data of the GOAWAY that ends a connection for
// r, as the guard writes it.
func GoAwayDebug(r Reason) string { return "h2guard: " + r.String() }
