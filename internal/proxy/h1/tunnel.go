package h1

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/pool"
	"github.com/sluice-lb/sluice/internal/proxy"
)

// tunnel completes a switch to WebSocket that the backend accepted: the
// 101 response goes to the client, then bytes flow both ways until either
// side closes.
func (c *h1conn) tunnel(uc *upConn, rh *edge.ResponseHead, n int, b *pool.Backend) proxy.Outcome {
	q := &c.req
	q.closeAfter = true
	if !q.websocket || !edge.EqualFold(rh.Upgrade, "websocket") {
		uc.nc.Close()
		return proxy.Outcome{Class: proxy.Reset, Err: fmt.Errorf("backend switched to protocol %q, which the request did not ask for (only websocket is passed on)", rh.Upgrade)}
	}
	if q.body.running || !q.body.consumed {
		// The tunnel would read the client while the body writer still
		// does: an upgrade request whose body has not ended is refused.
		uc.nc.Close()
		c.endStream(uc, true)
		return proxy.Outcome{Class: proxy.ClientError, Status: 400,
			Err: errors.New("upgrade request with a body that had not ended when the backend switched protocols")}
	}
	head := uc.buf[uc.r : uc.r+n]
	uc.r += n
	o := append(c.out[:0], "HTTP/1.1 101 Switching Protocols\r\n"...)
	o = c.appendResponseFields(o, head, rh.First, false, false, b)
	o = append(o, "Connection: Upgrade\r\nUpgrade: websocket\r\nX-Request-Id: "...)
	o = append(o, q.id...)
	o = append(o, "\r\n\r\n"...)
	c.out = o
	uc.nc.SetDeadline(time.Time{})
	c.nc.SetDeadline(time.Time{})
	// Registered before the 101 goes out: a reload or shutdown from now on
	// sees this tunnel and retires it.
	tn := proxy.NewTunnel(c.nc, uc.nc, q.t.Pool.Name, b)
	if !c.e.o.Tunnels.Add(tn) {
		uc.nc.Close()
		return proxy.Outcome{Class: proxy.ClientError, Status: 503, Err: proxy.ErrTunnelRefused}
	}
	defer c.e.o.Tunnels.Remove(tn)
	if err := tn.Open(o); err != nil {
		uc.nc.Close()
		return proxy.Outcome{Class: proxy.Done, Status: 101, Err: err}
	}
	fromClient := io.MultiReader(bytes.NewReader(c.buf[c.r:c.w]), c.nc)
	c.r = c.w
	fromBack := io.MultiReader(bytes.NewReader(uc.buf[uc.r:uc.w]), uc.nc)
	q.rec.Bytes, q.tunnelIn = tn.Relay(fromClient, fromBack, uc.nc)
	return proxy.Outcome{Class: proxy.Done, Status: 101}
}
