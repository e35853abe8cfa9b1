// Package upgrade hands a process's listening sockets to a new copy of its
// binary, for an upgrade without downtime (SIGUSR2): the new process
// inherits every socket, so the kernel's accept queues stay and no client
// is refused; it tells the old one once it serves, and the old one stops
// accepting and drains. A new process that fails (missing, not
// executable, a bad config, never ready) leaves the old one as it was.
//
// Why not github.com/cloudflare/tableflip, which does the same: its Fds
// keeps a duplicate of every socket it ever handed out until the next
// upgrade or the process's end, with no way to release one. A listener a
// reload removes or moves would stay bound by that duplicate, accepting
// connections nobody serves, and a later reload could not bind its
// address again. Its Upgrader is also one per process, which rules out
// several servers in one test binary. What sluice needs is small: a
// registry of the sockets open now and a pipe for readiness.
//
// Inheriting must never turn the shared socket to blocking mode: O_NONBLOCK
// belongs to the open file description, which both processes share, and
// a blocking socket ties the old process's accept (and so its Close) to
// the next client. exec.Cmd.ExtraFiles with a file from
// (*net.TCPListener).File does exactly that (File.Fd switches such a file
// to blocking). Here descriptors are duplicated and passed as raw numbers
// through SyscallConn, and the new process wraps them with os.NewFile,
// whose Fd leaves a non-blocking descriptor as it is.
package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// envVar carries the inherited descriptors to the new process.
const envVar = "SLUICE_UPGRADE"

// handoff is what envVar holds (JSON).
type handoff struct {
	Ready int `json:"ready"` // write one byte, then close, once serving
	// Parent is the read end of a pipe the old process holds open until it
	// exits. This process does not need it (it may upgrade while the old
	// one drains) and closes it; it is still passed for binaries that
	// refuse an upgrade until it reads EOF (a rollback to one of them must
	// work).
	Parent  int      `json:"parent"`
	Sockets []socket `json:"sockets"` // in descriptor order from 3+2
}

type socket struct {
	FD      int    `json:"fd"`
	Kind    string `json:"kind"` // "listener" | "packet"
	Network string `json:"network"`
	Address string `json:"address"`
	// Link is the descriptor of the new process's end of a link to the
	// old one, beside a UDP socket (0: none; see Link).
	Link int `json:"link,omitempty"`
}

// key names a socket by what the config asks for, not what was bound: a
// listener at ":0" is handed over as ":0", so that the new process, asking
// for ":0" again, gets the same port. Sockets under one key (several at
// port 0) are handed over in the order they were asked for, and taken
// over in the order the new process asks.
type key struct{ kind, network, address string }

func (k key) String() string { return k.kind + ":" + k.network + ":" + k.address }

// Upgrader tracks a process's listening sockets and starts its successor.
// The zero value is not usable; call New.
type Upgrader struct {
	path string   // the binary, resolved at start
	args []string // os.Args[1:]
	dir  string   // the working directory at start

	mu        sync.Mutex
	live      map[key][]syscall.Conn // open now, by key
	inherited map[key][]*os.File     // from the parent, not claimed yet
	links     map[*os.File]*os.File  // an inherited socket's link (see Link)
	ready     *os.File               // to the parent (nil: none, or told)
	upgrading bool
	successor *os.File // the write end of handoff.Parent; kept open until exit

	hasParent bool // this process took over from another
}

// New returns the Upgrader of this process, taking over the sockets a
// parent handed over, if any. The binary a later Upgrade starts is the one
// this process was started as (os.Args[0], found as the shell found it).
func New() (*Upgrader, error) {
	u := &Upgrader{live: map[key][]syscall.Conn{}, inherited: map[key][]*os.File{}, links: map[*os.File]*os.File{}, args: os.Args[1:]}
	var err error
	if u.dir, err = os.Getwd(); err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	u.path = os.Args[0]
	if !strings.Contains(u.path, "/") {
		if u.path, err = exec.LookPath(u.path); err != nil {
			return nil, fmt.Errorf("upgrade: finding the binary: %w", err)
		}
	}
	if !filepath.IsAbs(u.path) {
		u.path = filepath.Join(u.dir, u.path)
	}
	if err := u.inherit(); err != nil {
		return nil, err
	}
	return u, nil
}

// inherit takes the descriptors named by envVar.
func (u *Upgrader) inherit() error {
	v, ok := os.LookupEnv(envVar)
	if !ok {
		return nil
	}
	os.Unsetenv(envVar)
	var h handoff
	if err := json.Unmarshal([]byte(v), &h); err != nil {
		return fmt.Errorf("upgrade: %s: %w", envVar, err)
	}
	for _, fd := range append([]int{h.Ready, h.Parent}, fds(h.Sockets)...) {
		syscall.CloseOnExec(fd) // not for the next process but through Upgrade
	}
	u.ready = os.NewFile(uintptr(h.Ready), "upgrade-ready")
	for _, s := range h.Sockets {
		k := key{s.Kind, s.Network, s.Address}
		f := os.NewFile(uintptr(s.FD), k.String())
		u.inherited[k] = append(u.inherited[k], f)
		if s.Link > 2 {
			syscall.CloseOnExec(s.Link)
			u.links[f] = os.NewFile(uintptr(s.Link), "link:"+k.String())
		}
	}
	u.hasParent = true
	if h.Parent > 2 {
		syscall.Close(h.Parent) // see handoff.Parent
	}
	return nil
}

func fds(ss []socket) []int {
	out := make([]int, len(ss))
	for i, s := range ss {
		out[i] = s.FD
	}
	return out
}

// takeLink returns the link that came with inherited socket f (nil: none).
func (u *Upgrader) takeLink(f *os.File) *os.File {
	l := u.links[f]
	delete(u.links, f)
	return l
}

// Binary is the path Upgrade starts.
func (u *Upgrader) Binary() string { return u.path }

// HasParent reports whether this process took over from another.
func (u *Upgrader) HasParent() bool { return u.hasParent }

// Listen returns the listening socket the parent handed over for network
// and address, or binds a new one. Either way it is handed over by the
// next Upgrade while open.
func (u *Upgrader) Listen(network, address string) (net.Listener, error) {
	k := key{"listener", network, address}
	u.mu.Lock()
	defer u.mu.Unlock()
	var ln net.Listener
	var err error
	if f := u.take(k); f != nil {
		ln, err = net.FileListener(f) // a duplicate: f is ours to close
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("upgrade: inheriting %s: %w", k, err)
		}
	} else if ln, err = net.Listen(network, address); err != nil {
		return nil, err
	}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("upgrade: a %T cannot be handed over", ln)
	}
	u.live[k] = append(u.live[k], sc)
	return &listener{Listener: ln, u: u, k: k, sc: sc}, nil
}

// ListenPacket is Listen for packet sockets (UDP, for HTTP/3).
func (u *Upgrader) ListenPacket(network, address string) (net.PacketConn, error) {
	k := key{"packet", network, address}
	u.mu.Lock()
	defer u.mu.Unlock()
	var pc net.PacketConn
	var link *os.File
	var err error
	if f := u.take(k); f != nil {
		link = u.takeLink(f)
		pc, err = net.FilePacketConn(f)
		f.Close()
		if err != nil {
			if link != nil {
				link.Close()
			}
			return nil, fmt.Errorf("upgrade: inheriting %s: %w", k, err)
		}
	} else if pc, err = net.ListenPacket(network, address); err != nil {
		return nil, err
	}
	sc, ok := pc.(syscall.Conn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("upgrade: a %T cannot be handed over", pc)
	}
	if uc, ok := pc.(*net.UDPConn); ok {
		// As itself, so that QUIC finds the UDP socket's batched and
		// ECN-aware calls (ReadMsgUDP and the like).
		c := &udpConn{UDPConn: uc, u: u, k: k, parent: link}
		u.live[k] = append(u.live[k], c)
		return c, nil
	}
	if link != nil {
		link.Close()
	}
	u.live[k] = append(u.live[k], sc)
	return &packetConn{PacketConn: pc, u: u, k: k, sc: sc}, nil
}

// take returns the next inherited socket under k (nil: none).
func (u *Upgrader) take(k key) *os.File {
	fs := u.inherited[k]
	if len(fs) == 0 {
		return nil
	}
	if len(fs) == 1 {
		delete(u.inherited, k)
	} else {
		u.inherited[k] = fs[1:]
	}
	return fs[0]
}

// forget drops a socket that closed from what the next Upgrade hands over.
func (u *Upgrader) forget(k key, sc syscall.Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	list := u.live[k]
	for i, x := range list {
		if x == sc {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(u.live, k)
	} else {
		u.live[k] = list
	}
}

// Ready tells the parent, if any, that this process serves: the parent's
// Upgrade returns and it stops accepting. Inherited sockets nobody asked
// for (a listener the new config dropped) are closed. Only the first call
// does anything.
func (u *Upgrader) Ready() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, fs := range u.inherited {
		for _, f := range fs {
			if l := u.takeLink(f); l != nil {
				l.Close()
			}
		}
		closeAll(fs)
		delete(u.inherited, k)
	}
	if u.ready == nil {
		return nil
	}
	defer func() { u.ready = nil }()
	defer u.ready.Close()
	if _, err := u.ready.Write([]byte{1}); err != nil {
		return fmt.Errorf("upgrade: telling the old process: %w", err)
	}
	return nil
}

// ErrBusy is returned by Upgrade while another upgrade is under way, and
// by a process that has handed over already.
var ErrBusy = errors.New("upgrade: busy")

// Upgrade starts the binary again with the same arguments, environment and
// working directory, hands it every open socket, and returns once it is
// ready (it called Ready), with its PID. It fails, leaving this process as
// it was, when the binary cannot be started, or exits or ctx ends before
// it is ready (it is then killed). After a successful Upgrade this process
// should stop accepting and drain: the new one accepts from now on.
//
// A process may upgrade while the one it replaced is still draining, as
// HAProxy's master lets several generations of old workers drain (nginx
// instead ignores a second binary upgrade until the old master has gone):
// each old process drains its own connections and exits by itself, and
// refusing would make an operator wait up to shutdown_timeout to correct
// a bad binary.
func (u *Upgrader) Upgrade(ctx context.Context) (pid int, err error) {
	u.mu.Lock()
	switch {
	case u.upgrading:
		u.mu.Unlock()
		return 0, fmt.Errorf("%w: an upgrade is under way", ErrBusy)
	case u.successor != nil:
		u.mu.Unlock()
		return 0, fmt.Errorf("%w: this process has handed over already", ErrBusy)
	}
	// The process this one replaced may still be draining: that does not
	// stop another upgrade (see Upgrade).
	u.upgrading = true
	files, h, links, err := u.dupLive()
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.upgrading = false
		u.mu.Unlock()
	}()
	defer closeAll(files)
	handedOver := false
	defer func() {
		if !handedOver {
			for _, l := range links {
				l.parent.Close()
			}
		}
	}()
	if err != nil {
		return 0, err
	}

	readyR, readyW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("upgrade: %w", err)
	}
	defer readyR.Close()
	parentR, parentW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return 0, fmt.Errorf("upgrade: %w", err)
	}
	keepParentW := false
	defer func() {
		if !keepParentW {
			parentW.Close()
		}
	}()
	// The new process's descriptors: 0-2 as ours, 3 ready, 4 parent, 5…
	// the sockets, then the links.
	child := append([]*os.File{os.Stdin, os.Stdout, os.Stderr, readyW, parentR}, files...)
	h.Ready, h.Parent = 3, 4
	for i := range h.Sockets {
		h.Sockets[i].FD = 5 + i
	}
	for _, l := range links {
		h.Sockets[l.socket].Link = len(child)
		child = append(child, l.child)
	}
	env, err := json.Marshal(h)
	if err != nil {
		return 0, fmt.Errorf("upgrade: %w", err)
	}
	proc, err := start(u.path, u.args, u.dir, append(environ(), envVar+"="+string(env)), child)
	readyW.Close()
	parentR.Close()
	for _, l := range links {
		l.child.Close() // the new process has its copy
	}
	if err != nil {
		return 0, fmt.Errorf("upgrade: starting %s: %w", u.path, err)
	}

	readyc := make(chan bool, 1)
	go func() {
		var b [1]byte
		n, _ := readyR.Read(b[:])
		readyc <- n == 1
	}()
	exited := make(chan error, 1)
	go func() {
		st, err := proc.Wait()
		if err == nil && !st.Success() {
			err = errors.New(st.String())
		}
		if err == nil {
			err = errors.New("exit status 0")
		}
		exited <- err
	}()
	select {
	case ok := <-readyc:
		if ok {
			u.mu.Lock()
			u.successor = parentW // closed by the kernel when this process exits
			u.mu.Unlock()
			keepParentW = true
			handedOver = true
			for _, l := range links {
				l.conn.handOver(l.parent)
			}
			return proc.Pid, nil
		}
		err := <-exited // the pipe closed without a byte: it exited
		return 0, fmt.Errorf("upgrade: the new process (pid %d) exited before it was ready: %v", proc.Pid, err)
	case err := <-exited:
		return 0, fmt.Errorf("upgrade: the new process (pid %d) exited before it was ready: %v", proc.Pid, err)
	case <-ctx.Done():
		proc.Kill()
		<-exited
		return 0, fmt.Errorf("upgrade: the new process (pid %d) was not ready in time and was killed: %w", proc.Pid, ctx.Err())
	}
}

// dupLive duplicates every open socket for the new process (sorted, so the
// hand-over is the same from run to run), with a link beside each UDP
// socket.
func (u *Upgrader) dupLive() ([]*os.File, handoff, []link, error) {
	var h handoff
	keys := make([]key, 0, len(u.live))
	for k := range u.live {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	var files []*os.File
	var links []link
	fail := func(k key, err error) ([]*os.File, handoff, []link, error) {
		closeAll(files)
		for _, l := range links {
			l.parent.Close()
			l.child.Close()
		}
		return nil, h, nil, fmt.Errorf("upgrade: %s: %w", k, err)
	}
	for _, k := range keys {
		for _, sc := range u.live[k] {
			f, err := dup(sc, k.String())
			if err != nil {
				return fail(k, err)
			}
			files = append(files, f)
			h.Sockets = append(h.Sockets, socket{Kind: k.kind, Network: k.network, Address: k.address})
			if c, ok := sc.(*udpConn); ok {
				fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
				if err != nil {
					return fail(k, fmt.Errorf("socketpair: %w", err))
				}
				links = append(links, link{conn: c, socket: len(h.Sockets) - 1,
					parent: os.NewFile(uintptr(fds[0]), "link:"+k.String()), child: os.NewFile(uintptr(fds[1]), "link:"+k.String())})
			}
		}
	}
	return files, h, links, nil
}

// dup duplicates the descriptor of sc (close-on-exec) without touching its
// blocking mode.
func dup(sc syscall.Conn, name string) (*os.File, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		nfd, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if errno != 0 {
		return nil, fmt.Errorf("fcntl F_DUPFD_CLOEXEC: %w", errno)
	}
	return os.NewFile(nfd, name), nil
}

// start starts path with files as descriptors 0, 1, 2… Raw descriptor
// numbers are taken through SyscallConn, never File.Fd (see the package
// doc).
func start(path string, args []string, dir string, env []string, files []*os.File) (*os.Process, error) {
	fds := make([]uintptr, len(files))
	for i, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, err
		}
		if err := rc.Control(func(fd uintptr) { fds[i] = fd }); err != nil {
			return nil, err
		}
	}
	pid, _, err := syscall.StartProcess(path, append([]string{path}, args...), &syscall.ProcAttr{Dir: dir, Env: env, Files: fds})
	runtime.KeepAlive(files) // the descriptors stay open until the new process has its copies
	if err != nil {
		return nil, err
	}
	return os.FindProcess(pid)
}

// environ is this process's environment without envVar.
func environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envVar+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
