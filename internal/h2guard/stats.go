package h2guard

import (
	"net"
	"sync/atomic"
)

// Reason is why a Conn closed its connection. The zero Reason is None.
type Reason uint8

// Reasons. Their String values are stable metric label values.
const (
	None                Reason = iota
	PingFlood                  // "ping_flood": PING frames over Limits.Ping
	SettingsFlood              // "settings_flood": SETTINGS frames over Limits.Settings
	PriorityFlood              // "priority_flood": PRIORITY frames over the allowance and Limits.Priority
	RSTStreamFlood             // "rst_stream_flood": RST_STREAM frames over Limits.RSTStream
	WindowUpdateFlood          // "window_update_flood": WINDOW_UPDATE frames over the allowance and Limits.WindowUpdate
	OtherFlood                 // "other_frame_flood": PING ACK, SETTINGS ACK, GOAWAY, unknown frames over Limits.Other
	RapidReset                 // "rapid_reset": premature resets over Limits.RapidResetMax in a window
	PrematureReset             // "premature_reset": premature resets reaching half of the streams (Envoy)
	EmptyFrames                // "empty_frames": consecutive empty frames over Limits.MaxConsecutiveEmptyFrames
	HeaderBlockTooLarge        // "header_block_too_large": a header block over Limits.MaxHeaderBlockBytes
	ContinuationFlood          // "continuation_flood": a header block with more than Limits.MaxContinuationFrames CONTINUATIONs
	numReasons
)

var reasonNames = [numReasons]string{
	None:                "none",
	PingFlood:           "ping_flood",
	SettingsFlood:       "settings_flood",
	PriorityFlood:       "priority_flood",
	RSTStreamFlood:      "rst_stream_flood",
	WindowUpdateFlood:   "window_update_flood",
	OtherFlood:          "other_frame_flood",
	RapidReset:          "rapid_reset",
	PrematureReset:      "premature_reset",
	EmptyFrames:         "empty_frames",
	HeaderBlockTooLarge: "header_block_too_large",
	ContinuationFlood:   "continuation_flood",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every Reason but None, for exporting Stats.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := None + 1; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Error is what Read returns once a Conn has closed its connection. It
// unwraps to net.ErrClosed, so http2.Server treats it as a client that went
// away (no log line; server.go isClosedConnError).
type Error struct{ Reason Reason }

func (e *Error) Error() string { return "h2guard: connection closed: " + e.Reason.String() }

// Unwrap returns net.ErrClosed.
func (e *Error) Unwrap() error { return net.ErrClosed }

// One Error per reason, so failing does not allocate.
var errs = func() (a [numReasons]*Error) {
	for r := range a {
		a[r] = &Error{Reason: Reason(r)}
	}
	return
}()

// Stats counts connections and why they were closed. One Stats is shared by
// many Conns (Config.Stats); its fields are safe for concurrent use.
type Stats struct {
	Conns atomic.Uint64 // connections wrapped by New (or NewScanner)

	// Streams the clients opened (HEADERS on a new stream), and the
	// RST_STREAM frames the clients sent and the server sent: counted
	// per Read or Write, not per frame, so that the connections of a
	// listener share one cache line less often.
	Streams        atomic.Uint64
	ResetsReceived atomic.Uint64
	ResetsSent     atomic.Uint64

	PingFlood           atomic.Uint64
	SettingsFlood       atomic.Uint64
	PriorityFlood       atomic.Uint64
	RSTStreamFlood      atomic.Uint64
	WindowUpdateFlood   atomic.Uint64
	OtherFlood          atomic.Uint64
	RapidReset          atomic.Uint64
	PrematureReset      atomic.Uint64
	EmptyFrames         atomic.Uint64
	HeaderBlockTooLarge atomic.Uint64
	ContinuationFlood   atomic.Uint64
}

func (s *Stats) counter(r Reason) *atomic.Uint64 {
	switch r {
	case PingFlood:
		return &s.PingFlood
	case SettingsFlood:
		return &s.SettingsFlood
	case PriorityFlood:
		return &s.PriorityFlood
	case RSTStreamFlood:
		return &s.RSTStreamFlood
	case WindowUpdateFlood:
		return &s.WindowUpdateFlood
	case OtherFlood:
		return &s.OtherFlood
	case RapidReset:
		return &s.RapidReset
	case PrematureReset:
		return &s.PrematureReset
	case EmptyFrames:
		return &s.EmptyFrames
	case HeaderBlockTooLarge:
		return &s.HeaderBlockTooLarge
	case ContinuationFlood:
		return &s.ContinuationFlood
	}
	return nil
}

// Closed returns how many connections were closed for r.
func (s *Stats) Closed(r Reason) uint64 {
	if c := s.counter(r); c != nil {
		return c.Load()
	}
	return 0
}
