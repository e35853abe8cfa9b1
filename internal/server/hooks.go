package server

import (
	"fmt"
	"net"

	"github.com/sluice-lb/sluice/internal/metrics"
)

// Notifier hears of the server's life cycle: systemd's notify protocol is
// one, the process hand-over of an upgrade another. Calls come from the
// goroutine that makes the change and must return quickly.
type Notifier interface {
	// Ready: every listener and the admin listener are bound and serve.
	// Called once, by Run.
	Ready()
	// Reloading: a reload (SIGHUP, the admin API, -watch) begins.
	Reloading()
	// Reloaded: that reload ended; err is why the new config was refused
	// (the previous one keeps serving), nil when it applies.
	Reloaded(err error)
	// Stopping: shutdown begins (Run's context ended).
	Stopping()
}

// nopNotifier is the Notifier of Options without one.
type nopNotifier struct{}

func (nopNotifier) Ready()         {}
func (nopNotifier) Reloading()     {}
func (nopNotifier) Reloaded(error) {}
func (nopNotifier) Stopping()      {}

// BuildInfo is what sluice_build_info reports about the binary. Empty
// fields are reported empty.
type BuildInfo struct {
	Version   string // module version or git describe
	Revision  string // VCS revision
	GoVersion string // the Go release that built it
}

// Build implements metrics.Source.
func (s *Server) Build() metrics.Build {
	b := s.opts.Build
	return metrics.Build{Version: b.Version, Revision: b.Revision, GoVersion: b.GoVersion}
}

// ListenError is a listening socket that could not be had: Run returns one
// (wrapped or not: use errors.As) when the admin listener or a listener
// cannot bind, and so does a reload that adds or moves a listener.
type ListenError struct {
	// Listener is the listener's name; "" for the admin listener.
	Listener string
	// Address is the address as the config gives it.
	Address string
	// Err is what the socket call returned (a *net.OpError for a port in
	// use).
	Err error
}

func (e *ListenError) Error() string {
	if e.Listener == "" {
		return fmt.Sprintf("admin listener: %v (is another sluice running? change admin.address)", e.Err)
	}
	return fmt.Sprintf("listener %q: %v (is the port in use? change its address)", e.Listener, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// listen binds a listening socket through Options.Listen; name is the
// listener's, "" for the admin one.
func (s *Server) listen(name, address string) (net.Listener, error) {
	listen := s.opts.Listen
	if listen == nil {
		listen = net.Listen
	}
	ln, err := listen("tcp", address)
	if err != nil {
		return nil, &ListenError{Listener: name, Address: address, Err: err}
	}
	return ln, nil
}

// ConfigJSON implements admin.Runtime: the config in effect, admin and
// access_log as started (a reload does not change them), secrets left out.
func (s *Server) ConfigJSON() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.PublicJSON()
}
