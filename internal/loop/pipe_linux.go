package loop

import (
	"golang.org/x/sys/unix"
)

// Pipe is a kernel pipe for moving bytes between two sockets with
// splice(2), without copying them through memory: Fill from one socket,
// Drain to the other. N is what the pipe holds.
type Pipe struct {
	r, w int
	N    int
}

// Fill moves up to n bytes from the socket fd into the pipe. EAGAIN: the
// socket has nothing now (or the pipe has no room); 0 bytes and no error:
// the socket reached its end.
func (p *Pipe) Fill(fd, n int) (int, unix.Errno) {
	m, e := splice(fd, p.w, n)
	p.N += m
	return m, e
}

// Drain moves what the pipe holds to the socket fd, as much as the
// socket takes.
func (p *Pipe) Drain(fd int) (int, unix.Errno) {
	m, e := splice(p.r, fd, p.N)
	p.N -= m
	return m, e
}

func splice(in, out, n int) (int, unix.Errno) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

func (p *Pipe) close() {
	closeFD(p.r)
	closeFD(p.w)
}

// Pipes is a loop's free list of empty pipes, as Bufs is of buffers. The
// zero value keeps up to 64.
type Pipes struct {
	Max  int
	free []*Pipe
}

// Get returns an empty pipe, or nil when none can be made (the caller
// copies instead).
func (ps *Pipes) Get() *Pipe {
	if n := len(ps.free); n > 0 {
		p := ps.free[n-1]
		ps.free[n-1] = nil
		ps.free = ps.free[:n-1]
		return p
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil
	}
	return &Pipe{r: fds[0], w: fds[1]}
}

// Put gives p back: kept when it is empty and the list has room, closed
// otherwise (bytes left in it are no one's).
func (ps *Pipes) Put(p *Pipe) {
	max := ps.Max
	if max == 0 {
		max = 64
	}
	if p.N == 0 && len(ps.free) < max {
		ps.free = append(ps.free, p)
		return
	}
	p.close()
}

// Free reports how many pipes wait in the list.
func (ps *Pipes) Free() int { return len(ps.free) }

// Close closes the pipes in the list.
func (ps *Pipes) Close() {
	for _, p := range ps.free {
		p.close()
	}
	ps.free = nil
}
