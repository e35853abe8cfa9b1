package h2guard

import (
	"math"
	"time"
)

// Rate is a token bucket: Burst frames at once, refilled at PerSecond
// frames a second. The zero value means the default (1000 frames, 100 a
// second); a negative Burst turns the bucket off (no limit).
type Rate struct {
	Burst     int
	PerSecond float64
}

// Limits are the per-connection limits of a Conn. Every zero field means its
// default, chosen to match what an Envoy operator expects from Envoy's
// http2_protocol_options (or, where Envoy has no knob, what nghttp2 or Node
// do); a negative field turns that check off.
type Limits struct {
	// Token buckets for control frames, one per kind and connection.
	// Default for each: burst 1000, 100 a second (the figures Node's
	// streamResetBurst/streamResetRate use for RST_STREAM, applied to every
	// kind). A frame that exceeds its bucket closes the connection.
	//
	// Ping counts PING frames without ACK. A PING that follows a DATA or
	// HEADERS frame the server wrote since the previous PING is free: gRPC
	// clients measure bandwidth-delay with one PING per round trip while
	// data flows (grpc-go's server allows this the same way, by forgiving
	// pings after it sent data).
	Ping Rate
	// Settings counts SETTINGS frames without ACK.
	Settings Rate
	// Priority counts PRIORITY and PRIORITY_UPDATE frames beyond
	// PriorityPerStream.
	Priority Rate
	// RSTStream counts every RST_STREAM from the client.
	RSTStream Rate
	// WindowUpdate counts WINDOW_UPDATE frames beyond Envoy's allowance
	// (see WindowUpdatesPerDataFrame).
	WindowUpdate Rate
	// Other counts frames that make the server do nothing useful: PING
	// with ACK, SETTINGS with ACK, GOAWAY, PUSH_PROMISE and unknown types.
	Other Rate

	// PriorityPerStream: PRIORITY (and PRIORITY_UPDATE) frames are free
	// while the connection has received at most PriorityPerStream × (1 +
	// streams opened) of them; beyond that each takes a token of Priority.
	// Default 100, Envoy's max_inbound_priority_frames_per_stream.
	PriorityPerStream int
	// WindowUpdatesPerDataFrame: WINDOW_UPDATE frames are free while the
	// connection has received at most 1 + 2 × (streams opened +
	// WindowUpdatesPerDataFrame × DATA frames the server wrote); beyond
	// that each takes a token of WindowUpdate. Default 10, Envoy's
	// max_inbound_window_update_frames_per_data_frame_sent, with Envoy's
	// formula. A client downloading fast answers every DATA frame or two
	// with WINDOW_UPDATEs (Go's Transport: one per 4 KiB read), far above
	// any fixed rate, so a plain token bucket would close good clients.
	WindowUpdatesPerDataFrame int

	// MaxConsecutiveEmptyFrames bounds the run of DATA, HEADERS and
	// CONTINUATION frames with no payload (after padding and priority
	// fields) and no END_STREAM. Default 1, Envoy's
	// max_consecutive_inbound_frames_with_empty_payload. Frames of other
	// types neither extend nor break the run (as in Envoy).
	MaxConsecutiveEmptyFrames int

	// MaxHeaderBlockBytes bounds the HPACK-encoded size of one header block
	// (the fragments of a HEADERS frame and its CONTINUATION frames, without
	// padding). Default 65536, sluice's max_header_bytes default; set it to
	// the listener's max_header_bytes. x/net bounds the decoded size
	// (http.Server.MaxHeaderBytes) but not the encoded bytes; see the
	// package documentation.
	MaxHeaderBlockBytes int
	// MaxContinuationFrames bounds the CONTINUATION frames of one header
	// block. Default: 4 × the frames of minimum size (16 KiB) that
	// MaxHeaderBlockBytes needs, at least 8 (nghttp2's default since the
	// CONTINUATION-flood fix); 16 for 64 KiB. hyper's h2 uses the same
	// shape of formula.
	MaxContinuationFrames int

	// RapidResetMax premature resets (see PrematureResetAge) within
	// RapidResetWindow close the connection (CVE-2023-44487). Defaults 200
	// and 10 s. A client that cancels more than 20 requests a second within
	// a second of sending them, sustained over 10 s, needs a higher value.
	RapidResetMax    int
	RapidResetWindow time.Duration
	// PrematureResetAge: a client RST_STREAM for a stream opened less than
	// this long ago is premature. Default 1 s, Envoy's
	// premature_reset_min_stream_lifetime_seconds. The age is measured in
	// quarters of it: a reset is premature for certain below 3/4 of the age
	// and never at the age or above. Negative: every reset is premature.
	PrematureResetAge time.Duration
	// PrematureResetMinStreams: Envoy's overall rule. The connection is
	// closed once premature resets reach half of max(streams opened,
	// PrematureResetMinStreams). Default 500, Envoy's
	// premature_reset_total_stream_count.
	PrematureResetMinStreams int
}

// Defaults, as documented on Limits.
const (
	DefaultBurst                     = 1000
	DefaultPerSecond                 = 100
	DefaultPriorityPerStream         = 100
	DefaultWindowUpdatesPerDataFrame = 10
	DefaultMaxConsecutiveEmptyFrames = 1
	DefaultMaxHeaderBlockBytes       = 65536
	DefaultRapidResetMax             = 200
	DefaultRapidResetWindow          = 10 * time.Second
	DefaultPrematureResetAge         = time.Second
	DefaultPrematureResetMinStreams  = 500

	minContinuations = 8
	minFrameSize     = 16384 // RFC 9113 §4.2, SETTINGS_MAX_FRAME_SIZE's floor
)

// Bucket kinds.
const (
	kPing = iota
	kSettings
	kPriority
	kRST
	kWindowUpdate
	kOther
	numKinds
)

// resolved holds Limits with defaults applied, in the units the parser uses.
// A negative value means off.
type resolved struct {
	interval [numKinds]int64 // ns per token; < 0: bucket off
	tau      [numKinds]int64 // GCRA tolerance: (burst-1) × interval

	prioPerStream int64
	wuPerData     int64
	maxEmpty      int
	maxBlock      int64
	maxConts      int
	rapidMax      int
	rapidWindow   int64
	prematureQ    int64 // a quarter of PrematureResetAge; < 0: all premature
	minStreams    int64
}

func def(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

func defDur(v, d time.Duration) int64 {
	if v == 0 {
		return int64(d)
	}
	return int64(v)
}

func (l *Limits) resolve() resolved {
	var r resolved
	for k, rate := range [numKinds]Rate{l.Ping, l.Settings, l.Priority, l.RSTStream, l.WindowUpdate, l.Other} {
		burst := def(rate.Burst, DefaultBurst)
		if burst < 0 {
			r.interval[k] = -1
			continue
		}
		ps := rate.PerSecond
		if ps <= 0 {
			ps = DefaultPerSecond
		}
		iv := 1e9 / ps
		iv = math.Max(1, math.Min(iv, 1<<50))
		r.interval[k] = int64(iv)
		r.tau[k] = int64(math.Min(float64(burst-1)*iv, 1<<62))
	}
	// Capped so that the allowances cannot overflow.
	r.prioPerStream = int64(min(def(l.PriorityPerStream, DefaultPriorityPerStream), 1<<20))
	r.wuPerData = int64(min(def(l.WindowUpdatesPerDataFrame, DefaultWindowUpdatesPerDataFrame), 1<<20))
	r.maxEmpty = def(l.MaxConsecutiveEmptyFrames, DefaultMaxConsecutiveEmptyFrames)
	r.maxBlock = int64(def(l.MaxHeaderBlockBytes, DefaultMaxHeaderBlockBytes))
	r.maxConts = l.MaxContinuationFrames
	if r.maxConts == 0 {
		r.maxConts = minContinuations
		if r.maxBlock > 0 {
			r.maxConts = max(minContinuations, int(4*((r.maxBlock+minFrameSize-1)/minFrameSize)))
		}
	}
	r.rapidMax = def(l.RapidResetMax, DefaultRapidResetMax)
	r.rapidWindow = defDur(l.RapidResetWindow, DefaultRapidResetWindow)
	r.prematureQ = defDur(l.PrematureResetAge, DefaultPrematureResetAge) / 4
	if l.PrematureResetAge < 0 {
		r.prematureQ = -1
	} else if r.prematureQ == 0 {
		r.prematureQ = 1
	}
	r.minStreams = int64(def(l.PrematureResetMinStreams, DefaultPrematureResetMinStreams))
	return r
}
