package h2

import (
	"net/http"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// The frames a client sends, as the connection's goroutine acts on them
// (RFC 9113 §6), and the flow-control credit sluice gives back for what it
// received (§5.2).

// process acts on one frame from the client.
func (c *conn) process(f http2.Frame) error {
	if !c.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			c.handleError(c.connErr("first_settings", http2.ErrCodeProtocol))
			return nil
		}
		c.sawSettings = true
		c.mu.Lock()
		if !c.lingering { // a GOAWAY may have come first (Shutdown)
			c.setReadDeadlineLocked(time.Time{})
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.processLocked(f); err != nil {
		if !c.handleErrorLocked(err) {
			return err
		}
	}
	return nil
}

// processLocked acts on f; an error is the stream or connection error to
// answer with.
func (c *conn) processLocked(f http2.Frame) error {
	if c.goAway && (c.goAwayCode != http2.ErrCodeNo || f.Header().StreamID > c.maxID) {
		// After GOAWAY: new streams are ignored, and after an error
		// everything; DATA still gives its flow-control credit back.
		if d, ok := f.(*http2.DataFrame); ok {
			if d.Length > uint32(c.recvWin) {
				return c.connErr("data_flow", http2.ErrCodeFlowControl)
			}
			c.recvWin -= int32(d.Length)
			c.giveBackLocked(int32(d.Length))
		}
		return nil
	}
	var err error
	switch f := f.(type) {
	case *http2.SettingsFrame:
		err = c.settingsLocked(f)
	case *http2.MetaHeadersFrame:
		err = c.headersLocked(f)
	case *http2.DataFrame:
		err = c.dataLocked(f)
	case *http2.WindowUpdateFrame:
		err = c.windowUpdateLocked(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.out = appendFrameHeader(c.out, 8, http2.FramePing, http2.FlagPingAck, 0)
			c.out = append(c.out, f.Data[:]...)
		}
	case *http2.RSTStreamFrame:
		if c.idleLocked(f.StreamID) {
			return c.connErr("reset_idle_stream", http2.ErrCodeProtocol)
		}
		if st := c.streams[f.StreamID]; st != nil && !st.reset {
			st.reset, st.peerReset = true, true
			c.settleLocked(st)
			st.abortLocked(errStreamReset{f.ErrCode})
			if st.lo != nil {
				c.closeStreamLocked(st) // no handler will
			}
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return c.streamErr("priority", f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		c.goAwayLocked(http2.ErrCodeNo, "")
	case *http2.PushPromiseFrame:
		return c.connErr("push_promise", http2.ErrCodeProtocol)
	}
	if err == nil {
		if c.pendingLocked() > maxControlPending {
			return c.connErr("control_backlog", http2.ErrCodeEnhanceYourCalm)
		}
		c.flushLocked()
	}
	return err
}

// idleLocked reports whether stream id is idle: never opened.
func (c *conn) idleLocked(id uint32) bool {
	return id%2 == 1 && id > c.maxID
}

func (c *conn) settingsLocked(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if f.NumSettings() > 100 {
		return c.connErr("settings_big", http2.ErrCodeProtocol)
	}
	err := f.ForeachSetting(c.settingLocked)
	if err != nil {
		return err
	}
	c.out = appendFrameHeader(c.out, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
	return nil
}

func (c *conn) settingLocked(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		c.count("bad_setting")
		return err
	}
	switch s.ID {
	case http2.SettingHeaderTableSize:
		// sluice's encoder uses no dynamic table (hpack.go), and says so
		// at the start of the next header block (RFC 7541 §4.2: a decoder
		// told a smaller size than the default may insist on hearing it).
		c.sizeUpdate = true
	case http2.SettingInitialWindowSize:
		// Applies to every stream's window, as a change (§6.9.2).
		delta := int32(s.Val) - c.peerWindow
		for _, st := range c.streams {
			if w := int64(st.sendWin) + int64(delta); w > 1<<31-1 {
				return c.connErr("setting_win_size", http2.ErrCodeFlowControl)
			}
			st.sendWin += delta
		}
		c.peerWindow = int32(s.Val)
		c.wakeWritersLocked()
	case http2.SettingMaxFrameSize:
		c.peerMaxFrame = s.Val
	case http2.SettingNoRFC7540Priorities:
		if s.Val > 1 {
			return c.connErr("bad_setting", http2.ErrCodeProtocol)
		}
	}
	return nil
}

func (c *conn) windowUpdateLocked(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if int64(c.sendWin)+inc > 1<<31-1 {
			return c.connErr("bad_flow", http2.ErrCodeFlowControl)
		}
		c.sendWin += int32(inc)
		c.wakeWritersLocked()
		return nil
	}
	if c.idleLocked(f.StreamID) {
		return c.connErr("stream_idle", http2.ErrCodeProtocol)
	}
	st := c.streams[f.StreamID]
	if st == nil || st.reset {
		return nil // a closed stream: allowed (§5.1)
	}
	if int64(st.sendWin)+inc > 1<<31-1 {
		return c.streamErr("bad_flow", f.StreamID, http2.ErrCodeFlowControl)
	}
	st.sendWin += int32(inc)
	st.cond.Broadcast()
	if st.lo != nil {
		c.pushLocked(st)
	}
	return nil
}

// wakeWritersLocked wakes the handlers that may wait for a window, and
// frames what the streams forwarded on the loop hold.
func (c *conn) wakeWritersLocked() {
	for _, st := range c.streams {
		st.cond.Broadcast()
		if st.lo != nil {
			c.pushLocked(st)
		}
	}
}

func (c *conn) dataLocked(f *http2.DataFrame) error {
	id := f.StreamID
	if c.idleLocked(id) {
		return c.connErr("data_on_idle", http2.ErrCodeProtocol)
	}
	// The client's flow control is enforced whatever becomes of the data.
	if f.Length > uint32(c.recvWin) {
		return c.connErr("flow_on_data_length", http2.ErrCodeFlowControl)
	}
	c.recvWin -= int32(f.Length)
	st := c.streams[id]
	if st == nil && c.resetRecently(id) {
		c.giveBackLocked(int32(f.Length))
		return nil // in flight when sluice reset it: ignored (§5.1)
	}
	if st == nil || st.remoteDone || st.reset {
		c.giveBackLocked(int32(f.Length))
		if st != nil && st.reset && !st.peerReset {
			return nil // sluice's reset is on its way already
		}
		return c.streamErr("closed", id, http2.ErrCodeStreamClosed)
	}
	if f.Length > uint32(st.recvWin) {
		return c.connErr("flow_on_data_length", http2.ErrCodeFlowControl)
	}
	st.recvWin -= int32(f.Length)
	data := f.Data()
	// Padding is given back now; the data when the handler reads it.
	st.unacked += int32(f.Length) - int32(len(data))
	c.unacked += int32(f.Length) - int32(len(data))
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		c.giveBackLocked(int32(len(data)))
		st.abortLocked(errBodyLength)
		return c.streamErr("send_too_much", id, http2.ErrCodeProtocol)
	}
	if st.bodyClosed {
		c.giveBackLocked(int32(len(data)))
	} else if len(data) > 0 {
		st.body = append(st.body, data...)
		st.cond.Broadcast()
	}
	if f.StreamEnded() {
		return st.endLocked()
	}
	c.ackLocked(st)
	return nil
}

// headersLocked opens a stream, or takes a stream's trailers.
func (c *conn) headersLocked(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return c.connErr("headers_even", http2.ErrCodeProtocol)
	}
	if st := c.streams[id]; st != nil {
		if st.peerReset {
			return c.streamErr("headers_after_reset", id, http2.ErrCodeStreamClosed)
		}
		if st.reset {
			return nil
		}
		if st.remoteDone && st.localDone {
			// Closed both ways, its handler not yet gone (§5.1).
			return c.connErr("headers_closed", http2.ErrCodeStreamClosed)
		}
		if st.remoteDone {
			return c.streamErr("headers_half_closed", id, http2.ErrCodeStreamClosed)
		}
		return c.trailersLocked(st, f)
	}
	if id <= c.maxID {
		if c.resetRecently(id) {
			return nil // trailers in flight when sluice reset the stream
		}
		return c.connErr("stream_went_down", http2.ErrCodeProtocol)
	}
	c.maxID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		return c.streamErr("priority", id, http2.ErrCodeProtocol)
	}
	if uint32(c.active) >= c.maxStreams {
		return c.streamErr("over_max_streams", id, http2.ErrCodeRefusedStream)
	}
	if f.Truncated {
		// The header list is over SETTINGS_MAX_HEADER_LIST_SIZE: 431, as
		// x/net answers.
		c.count("header_list_too_long")
		c.writeStatusLocked(id, http.StatusRequestHeaderFieldsTooLarge, "request header fields too large\n")
		if !f.StreamEnded() {
			c.writeRSTLocked(id, http2.ErrCodeNo)
		}
		return nil
	}
	if c.lw != nil {
		if ok, err := c.lw.forwardLocked(f); ok || err != nil {
			return err
		}
	}
	req, st, err := c.newRequestLocked(f)
	if err != nil {
		return err
	}
	c.startLocked(st, req)
	return nil
}

func (c *conn) trailersLocked(st *stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() {
		return c.streamErr("trailers_not_ended", st.id, http2.ErrCodeProtocol)
	}
	if len(f.PseudoFields()) > 0 {
		return c.streamErr("trailers_pseudo", st.id, http2.ErrCodeProtocol)
	}
	for _, hf := range f.RegularFields() {
		key := http.CanonicalHeaderKey(hf.Name)
		if !httpguts.ValidTrailerHeader(key) {
			return c.streamErr("trailers_bogus", st.id, http2.ErrCodeProtocol)
		}
		if st.trailerIn == nil {
			st.trailerIn = http.Header{}
		}
		st.trailerIn[key] = append(st.trailerIn[key], hf.Value)
	}
	return st.endLocked()
}

// giveBackLocked returns n bytes of connection credit that no handler will
// read (discarded, padding, closed streams).
func (c *conn) giveBackLocked(n int32) {
	c.unacked += n
	c.ackLocked(nil)
}

// ackLocked sends the WINDOW_UPDATEs that are due: a quarter of a window
// read at least (fewer, larger updates; the client still has three
// quarters to send meanwhile).
func (c *conn) ackLocked(st *stream) {
	if c.unacked >= c.connWindow/4 {
		c.out = appendWindowUpdate(c.out, 0, uint32(c.unacked))
		c.recvWin += c.unacked
		c.unacked = 0
	}
	if st != nil && !st.remoteDone && !st.reset && st.unacked >= c.streamWindow/4 {
		c.out = appendWindowUpdate(c.out, st.id, uint32(st.unacked))
		st.recvWin += st.unacked
		st.unacked = 0
	}
}
