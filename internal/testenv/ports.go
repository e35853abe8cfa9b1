package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// given holds every port Ports has returned in this test process. A range
// is free only until its server binds it, so without this a second call
// (another server of the same test, or a parallel test) could be given a
// port the first caller has not bound yet: TestACMEPebble's pebble once got
// sluice's listener port this way.
var given struct {
	sync.Mutex
	ports map[int]bool
}

// Ports returns the first of n consecutive loopback TCP ports that were
// free a moment ago, for a server a test must start on known ports (a
// port in a config file, a server restarted on the same ports).
//
// They come from outside the kernel's ephemeral range
// (net.ipv4.ip_local_port_range): a port from ":0" is an ephemeral one,
// and while its server is down (killed to be restarted, or not started
// yet) any outgoing connection of a parallel test may take it as its
// local port, so the start fails with "address already in use". A port
// outside that range is only ever taken by an explicit bind.
func Ports(t testing.TB, n int) int {
	t.Helper()
	lo, hi := 10000, ephemeralLow()-1
	if hi-lo < 1000 {
		// An unusual range: fall back to its upper side.
		lo, hi = 61000, 65535
	}
	given.Lock()
	defer given.Unlock()
	for range 200 {
		first := lo + rand.IntN(hi-lo-n+2)
		if !taken(first, n) && bindable(first, n) {
			if given.ports == nil {
				given.ports = map[int]bool{}
			}
			for p := first; p < first+n; p++ {
				given.ports[p] = true
			}
			return first
		}
	}
	t.Fatalf("found no %d consecutive free loopback ports in %d-%d", n, lo, hi)
	return 0
}

// taken reports whether any of the n ports from first was given before.
func taken(first, n int) bool {
	for p := first; p < first+n; p++ {
		if given.ports[p] {
			return true
		}
	}
	return false
}

func bindable(first, n int) bool {
	for p := first; p < first+n; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1024 {
		return 32768
	}
	return n
}

// DeadAddr returns a 127.0.0.1 address nothing listens on: a socket bound
// to it and never listening holds it until the test ends, so that a
// connection there is refused and no listener of a parallel test can get
// the port (as it could one bound and closed at once).
func DeadAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind 127.0.0.1:0: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
