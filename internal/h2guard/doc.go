// Package h2guard closes HTTP/2 client connections that flood the server
// with frames which cost it work but do nothing useful: the defences against
// rapid reset (CVE-2023-44487), CONTINUATION floods (CVE-2024-27316), ping,
// settings and other control-frame floods and empty-frame floods that
// golang.org/x/net/http2's Server lacks or has only in part.
//
// A Conn sits between the client's connection (after TLS) and the HTTP/2
// server: sluice's own (package h2, which batches its writes itself:
// Config.Unbatched) or x/net's http2.Server.ServeConn:
//
//	c := h2guard.New(tlsConn, &h2guard.Config{Limits: lim, Stats: stats, OnClose: logIt})
//	h2srv.ServeConn(c, &http2.ServeConnOpts{...})
//
// The audit below is of x/net's server, which the defences were written
// against; package h2 follows x/net's rules (its doc says where it differs)
// and runs beneath the same Conn.
//
// Its Read passes the client's bytes through unchanged (no allocation; over
// cleartext small reads go through a pooled buffer, see readBuf, so that
// x/net's two reads per frame are not two system calls) while it follows
// the frame stream: the 24-byte preface, then
// each 9-byte frame header (split across Reads or not), the Pad Length byte
// of padded DATA and HEADERS frames, and the payload lengths it skips. Its
// Write passes the server's bytes through and counts the server's DATA and
// HEADERS frames, which earn the client PING and WINDOW_UPDATE allowances;
// beneath it the bytes are batched (batchConn: one writer goroutine per
// connection sends, in one write, all that x/net flushed while its previous
// send was in progress; Close sends what waits, for at most 1 s). When the client exceeds a limit the Conn writes a GOAWAY
// (ENHANCE_YOUR_CALM, debug data "h2guard: <reason>") once no server write
// is in progress and the server's stream is at a frame boundary (it waits
// up to 1 s for that, or closes without), shuts the write side and
// drains the client for up to 1 s (a delayed close, as Envoy's, so that
// no TCP RST destroys the GOAWAY), closes the connection, counts the reason in Stats, calls OnClose and returns an
// *Error (which unwraps to net.ErrClosed, so x/net logs nothing) from Read.
// New returns a *TLSConn, which has ConnectionState, when the wrapped
// connection has it: x/net needs it for Request.TLS and RFC 9113 §9.2.
//
// Wrap a connection where both directions are at the start of HTTP/2: the
// client's preface is the next thing read (or Config.PrefaceRead when the
// listener consumed it and passes http2.ServeConnOpts.SawClientPreface) and
// the server's SETTINGS the next thing written. For "Upgrade: h2c" that is
// the hijacked connection after the 101 response.
//
// # What x/net v0.62.0 already does
//
// Read from $GOMODCACHE/golang.org/x/net@v0.62.0/http2. With go 1.26 (this
// module's go.mod) the original server.go is built; from Go 1.27 x/net builds
// server_wrap.go instead, which hands connections to net/http's internal
// copy of the server (audit that copy again when sluice moves to Go 1.27).
//
// Every frame the client sends costs the server a round trip between its
// reader goroutine and its serve loop (server.go:697-716 readFrames, with a
// gate channel per frame, and processFrameFromReader at 1392), so a frame
// that x/net accepts and ignores is still the unit of CPU an attacker buys
// with 9 to 17 bytes.
//
//   - Rapid reset (CVE-2023-44487): partly. Handler goroutines are bounded
//     by MaxConcurrentStreams (server.go:62 defaultMaxStreams = 250,
//     config.go:101; scheduleHandler at 2262-2281 starts a handler only
//     while curHandlers < advMaxStreams and queues the rest), and more than
//     4×MaxConcurrentStreams queued handlers closes the connection with
//     ENHANCE_YOUR_CALM ("too_many_early_resets", 2270-2272); handlerDone
//     (2283-2308) drops queued handlers of reset streams. A stream over the
//     concurrency limit is refused (processHeaders, 1926-1937). Nothing
//     limits the rate or proportion of resets: processResetStream
//     (1564-1580) closes the stream, which frees a slot for the next HEADERS
//     at once. A client that opens and resets streams while handlers return
//     quickly keeps the server parsing requests and starting handlers at
//     line rate (TestServerXNetAlone/rapid_reset: 2000 streams opened and
//     reset, connection fine). Added here: RapidReset and PrematureReset
//     (Envoy's rule) and the RSTStream bucket.
//   - CONTINUATION floods (CVE-2024-27316): partly. Framer.readMetaFrame
//     (frame.go:1707-1843) decodes the header block as it arrives, against
//     a budget of MaxHeaderListSize (server.go:332, maxHeaderListSize at
//     501-506: http.Server.MaxHeaderBytes or 1 MiB, plus 320 per
//     config.go:120-126); once a block has gone over the budget, or a frame
//     is bigger than twice what is left, the connection is closed
//     (frame.go:1788-1797), as it is after a CONTINUATION that follows an
//     invalid field (1800-1807); an oversized block that ends in the frame
//     that overflowed gets a 431 (server.go:1984-1986). checkFrameOrder
//     (frame.go:591-623) keeps CONTINUATIONs contiguous. Two holes: there
//     is no limit on the number of CONTINUATION frames, and zero-length ones
//     pass the size check (0 > 2×remaining is false; hpack's Write returns
//     at once on empty input, hpack/hpack.go:243-248); and HPACK dynamic
//     table size updates decode to no header field, and hpack accepts them
//     anywhere in a block while the dynamic table is empty
//     (hpack/hpack.go:411-416), so a block of size updates never spends the
//     budget: x/net reads a header block of any size
//     (TestServerXNetAlone/continuation_size_updates: 4 MiB against a 64 KiB
//     MaxHeaderBytes, then serves the request). Added here:
//     MaxHeaderBlockBytes on the encoded block and MaxContinuationFrames.
//   - PING floods: partly. Each PING is answered with a PING ACK queued as
//     a control frame (processPing, server.go:1504-1526); more than
//     maxQueuedControlFrames = 10000 queued (64-67, checked in the serve
//     loop at 897-904, counted in writeFrame at 1127-1134; control means no
//     stream, writesched.go:49-51) closes the connection. That stops a
//     client that does not read; a client that reads the ACKs can ping at
//     line rate (TestServerXNetAlone/ping). Added here: the Ping bucket.
//   - SETTINGS floods: partly. A SETTINGS frame with more than 100 entries
//     or duplicates closes the connection (processSettings, 1626-1652); ACKs
//     are coalesced into one flag (needToSendSettingsAck, 1649, written at
//     1301-1304), so they do not queue; an ACK the server did not ask for
//     closes the connection ("ack_mystery", 1628-1636). No rate limit
//     (TestServerXNetAlone/settings; a frame of 10 entries or more also
//     allocates a map in HasDuplicates, frame.go:850). Added here: the
//     Settings bucket.
//   - Empty frames: nothing. A DATA frame of length 0 without END_STREAM
//     passes processData (server.go:1712-1807) and does nothing
//     (TestServerXNetAlone/empty_data). Added here:
//     MaxConsecutiveEmptyFrames (DATA, HEADERS and CONTINUATION).
//   - RST_STREAM counting: none beyond the handler bounds above; an
//     RST_STREAM for an idle stream closes the connection (1568-1575).
//   - PRIORITY frames: nothing to abuse but CPU. With the default RFC 9218
//     write scheduler they are checked for self-dependency and ignored
//     (processPriority, 2071-2085; writeSchedIgnoresRFC7540, 488-497). No
//     rate limit (TestServerXNetAlone/priority). Added here: the Priority
//     allowance and bucket (PRIORITY_UPDATE too).
//   - WINDOW_UPDATE floods: nothing but validity. An increment that
//     overflows a window is a flow-control error (processWindowUpdate,
//     1528-1562), an increment of 0 a protocol error (frame.go:1008-1021);
//     no rate limit (TestServerXNetAlone/window_update). Added here: the
//     WindowUpdate allowance (Envoy's) and bucket.
//   - Unknown frame types are ignored (server.go:1498-1500), PING ACKs not
//     matching a PING of the server's are ignored (1506-1515): no limit.
//     Added here: the Other bucket.
//   - Frames larger than SETTINGS_MAX_FRAME_SIZE: handled. The Framer's
//     limit is set from MaxReadFrameSize (server.go:333; default 1 MiB,
//     http2.go:85, config.go:114; advertised at 781) and ReadFrameHeader
//     returns ErrFrameTooLarge (frame.go:511-531), answered with GOAWAY
//     FRAME_SIZE_ERROR (server.go:1396-1398). The Conn does not check it and
//     skips such frames correctly.
//   - Bounded elsewhere: concurrent streams (above), flow-control windows
//     (MaxUploadBufferPerConnection/PerStream, default 1 MiB each,
//     config.go:104-113), the decoded header list (above), the preface (10 s,
//     server.go:59) and first SETTINGS (2 s, 60) timeouts, and queued
//     control frames (above).
//
// What the Conn does not see: frames of the server's own that a client
// provokes (a stream error answered with RST_STREAM is a queued control
// frame and falls under x/net's 10000 limit), and anything the server does
// per request (the handler limit is x/net's).
//
// # Defaults
//
// Every zero field of Limits means its default; a negative one turns the
// check off. The defaults follow Envoy's http2_protocol_options where
// Envoy has the knob, nghttp2's or Node's where it does not:
//
//	Ping, Settings, Priority,      token buckets of 1000 frames refilled at
//	RSTStream, WindowUpdate, Other 100/s each (Node: 1000 and 33/s for resets)
//	PriorityPerStream          100  Envoy max_inbound_priority_frames_per_stream
//	WindowUpdatesPerDataFrame   10  Envoy max_inbound_window_update_frames_per_data_frame_sent
//	MaxConsecutiveEmptyFrames    1  Envoy max_consecutive_inbound_frames_with_empty_payload
//	MaxHeaderBlockBytes      65536  sluice's max_header_bytes default
//	MaxContinuationFrames       16  4 × (MaxHeaderBlockBytes / 16 KiB), at least 8 (nghttp2)
//	RapidResetMax/Window  200/10 s  premature resets in a window (the figure)
//	PrematureResetAge          1 s  Envoy premature_reset_min_stream_lifetime_seconds
//	PrematureResetMinStreams   500  Envoy premature_reset_total_stream_count (50% rule)
//
// A PING is free when the server has written a DATA or HEADERS frame since
// the client's previous PING (gRPC's BDP pings, one per round trip while
// data flows), and WINDOW_UPDATEs are free up to Envoy's 1 + 2 × (streams +
// 10 × DATA frames sent): a fast download through Go's Transport sends one
// WINDOW_UPDATE per 4 KiB read, far above 100/s. Only resets of streams
// younger than PrematureResetAge count towards RapidReset and
// PrematureReset, so clients that cancel long-lived streams (watches,
// gRPC streams) are not taken for attackers.
//
// Set MaxHeaderBlockBytes to the listener's max_header_bytes and
// http.Server.MaxHeaderBytes (the base config given to ServeConn) to the
// same value, so that x/net's decoded limit and this encoded one agree: a
// block under the limit whose decoded list is too big still gets x/net's
// 431 or its GOAWAY; a block over it closes the connection.
package h2guard
