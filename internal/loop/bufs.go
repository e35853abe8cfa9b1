package loop

// Bufs is a free list of buffers of one size, kept by one loop: taking and
// giving back a buffer is a slice pop or push, with no lock. A connection
// should hold a buffer only while bytes wait in it, so that an idle
// connection holds none. The zero value is unusable: set Size (and Max, the
// most buffers kept free; 0 keeps 4096).
type Bufs struct {
	Size int
	Max  int
	free [][]byte
}

// Get returns a buffer of length Size.
func (b *Bufs) Get() []byte {
	if n := len(b.free); n > 0 {
		p := b.free[n-1]
		b.free[n-1] = nil
		b.free = b.free[:n-1]
		return p
	}
	return make([]byte, b.Size)
}

// Put gives p back. A buffer of another capacity (one grown for a long
// head, say) is left to the garbage collector.
func (b *Bufs) Put(p []byte) {
	max := b.Max
	if max == 0 {
		max = 4096
	}
	if cap(p) == b.Size && len(b.free) < max {
		b.free = append(b.free, p[:cap(p)])
	}
}

// Free reports how many buffers wait in the list.
func (b *Bufs) Free() int { return len(b.free) }
