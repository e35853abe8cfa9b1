package loop

// Bufs is a free list of buffers of one size, kept by one loop: taking and
// giving back a buffer is a slice pop or push, with no lock. A connection
// should hold a buffer only while bytes wait in it, so that an idle
// connection holds none. The zero value is unusable: set Size (and Max, the
// most buffers kept free; 0 keeps 4096).
type Bufs struct {
	Size int
	Max  int
	free Spares[[]byte]
}

// Get returns a buffer of length Size.
func (b *Bufs) Get() []byte {
	if p, ok := b.free.Get(); ok {
		return p
	}
	return make([]byte, b.Size)
}

// Put gives p back. A buffer of another capacity (one grown for a long
// head, say) is left to the garbage collector.
func (b *Bufs) Put(p []byte) {
	if cap(p) != b.Size {
		return
	}
	if b.free.Max == 0 {
		b.free.Max = b.Max
		if b.free.Max == 0 {
			b.free.Max = 4096
		}
	}
	b.free.Put(p[:cap(p)])
}

// Free reports how many buffers wait in the list.
func (b *Bufs) Free() int { return b.free.Len() }

// Spares is a free list of values of one kind kept by one loop, for the
// buffers and request states its connections take and give back on every
// request: a slice pop or push, where a sync.Pool pins its P and goes
// through a ring shared with the other Ps (about 4 % of a loop's own CPU
// time on HTTP/2 streams, measured with perf). At most Max (0 keeps 256)
// wait; Put reports false for one it did not keep, which the caller gives
// to a shared pool instead. The loop's goroutine only.
type Spares[T any] struct {
	Max  int
	free []T
}

// Get takes a spare value; false when none waits.
func (s *Spares[T]) Get() (v T, ok bool) {
	n := len(s.free)
	if n == 0 {
		return v, false
	}
	v = s.free[n-1]
	var zero T
	s.free[n-1] = zero
	s.free = s.free[:n-1]
	return v, true
}

// Put keeps v as a spare, unless Max wait already.
func (s *Spares[T]) Put(v T) bool {
	max := s.Max
	if max == 0 {
		max = 256
	}
	if len(s.free) >= max {
		return false
	}
	s.free = append(s.free, v)
	return true
}

// Len reports how many spares wait.
func (s *Spares[T]) Len() int { return len(s.free) }
