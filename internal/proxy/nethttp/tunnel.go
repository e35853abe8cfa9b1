package nethttp

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// tunnel completes a protocol switch the backend accepted: it hijacks the
// client connection, relays the 101 response and then copies bytes both
// ways until either side closes.
func (a *httpAttempt) tunnel(resp *http.Response, b *pool.Backend) proxy.Outcome {
	backConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return proxy.Outcome{Class: proxy.Reset, Err: fmt.Errorf("backend switched protocols but its body is not writable")}
	}
	if got := strings.ToLower(resp.Header.Get("Upgrade")); a.upType == "" || got != a.upType {
		backConn.Close()
		return proxy.Outcome{Class: proxy.Reset, Err: fmt.Errorf("backend tried to switch protocol %q when %q was requested", got, a.upType)}
	}
	if !a.h.tunnels.Admits(a.t.Pool.Name, b) {
		backConn.Close()
		return proxy.Outcome{Class: proxy.ClientError, Status: http.StatusServiceUnavailable, Err: proxy.ErrTunnelRefused}
	}
	conn, brw, err := http.NewResponseController(a.w).Hijack()
	if err != nil {
		backConn.Close()
		return proxy.Outcome{Class: proxy.ClientGone, Err: fmt.Errorf("hijack client connection: %w", err)}
	}
	defer conn.Close()
	defer backConn.Close()
	// Registered before the 101 goes out: a reload or shutdown from now on
	// sees this tunnel.
	tn := proxy.NewTunnel(conn, backConn, a.t.Pool.Name, b)
	if !a.h.tunnels.Add(tn) {
		// Shutdown began between Admits and now: the connection is
		// hijacked, so it just closes.
		return proxy.Outcome{Class: proxy.ClientGone, Err: proxy.ErrTunnelRefused}
	}
	defer a.h.tunnels.Remove(tn)

	removeHopHeaders(resp.Header)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", a.upType)
	resp.Header.Set("X-Request-Id", a.id)
	resp.Body = nil
	var head bytes.Buffer
	resp.Write(&head)
	if err := tn.Open(head.Bytes()); err != nil {
		return proxy.Outcome{Class: proxy.Done, Status: resp.StatusCode, Err: err}
	}
	// brw.Reader holds any bytes the client sent after its request.
	out, in := tn.Relay(brw.Reader, backConn, backConn)
	a.rec.Bytes += out
	a.rec.BytesIn += in
	return proxy.Outcome{Class: proxy.Done, Status: resp.StatusCode}
}
