package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// Tunnels tracks upgraded (WebSocket) connections, which net/http no longer
// sees after they are hijacked, so that shutdown can close them. The zero
// value is ready.
type Tunnels struct {
	mu    sync.Mutex // guards conns and wg.Add
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func (t *Tunnels) add(c net.Conn) {
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
}

func (t *Tunnels) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	t.wg.Done()
}

// Len returns the number of open tunnels.
func (t *Tunnels) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// CloseAll closes every tunnel and waits until their copies have ended.
func (t *Tunnels) CloseAll() {
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// tunnel completes a protocol switch the backend accepted: it hijacks the
// client connection, relays the 101 response and then copies bytes both
// ways until either side closes.
func (a *httpAttempt) tunnel(resp *http.Response) Outcome {
	backConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return Outcome{Class: Reset, Err: fmt.Errorf("backend switched protocols but its body is not writable")}
	}
	if got := strings.ToLower(resp.Header.Get("Upgrade")); a.upType == "" || got != a.upType {
		backConn.Close()
		return Outcome{Class: Reset, Err: fmt.Errorf("backend tried to switch protocol %q when %q was requested", got, a.upType)}
	}
	conn, brw, err := http.NewResponseController(a.w).Hijack()
	if err != nil {
		backConn.Close()
		return Outcome{Class: ClientGone, Err: fmt.Errorf("hijack client connection: %w", err)}
	}
	defer conn.Close()
	defer backConn.Close()

	removeHopHeaders(resp.Header)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", a.upType)
	resp.Header.Set("X-Request-Id", a.id)
	resp.Body = nil
	if err := resp.Write(brw); err != nil {
		return Outcome{Class: Done, Status: resp.StatusCode, Err: err}
	}
	if err := brw.Flush(); err != nil {
		return Outcome{Class: Done, Status: resp.StatusCode, Err: err}
	}

	a.h.tunnels.add(conn)
	defer a.h.tunnels.remove(conn)
	errc := make(chan error, 2)
	go func() {
		// brw.Reader holds any bytes the client sent after its request.
		_, err := io.Copy(backConn, brw.Reader)
		errc <- err
	}()
	go func() {
		n, err := io.Copy(conn, backConn)
		a.bytes += n
		errc <- err
	}()
	<-errc
	conn.Close()
	backConn.Close()
	<-errc
	return Outcome{Class: Done, Status: resp.StatusCode}
}
