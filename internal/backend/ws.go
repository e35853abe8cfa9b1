package backend

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/coder/websocket"
)

// wsReadLimit is the largest WebSocket message /ws echoes; a bigger one
// closes the connection with status 1009 (message too big).
const wsReadLimit = 1 << 20

// handleWebSocket echoes every text and binary message back with the same
// type, streaming it, until the client closes, the server shuts down
// (close status 1001, going away) or the grace period ends.
func (s *Server) handleWebSocket(w http.ResponseWriter, r *http.Request) {
	// A test backend: accept any Origin.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered the request.
	}
	s.stats.websockets.Add(1)
	c.SetReadLimit(wsReadLimit)
	defer c.CloseNow()

	// Cancelling ctx makes the library drop the connection at once: that is
	// for the end of the grace period only.
	ctx, cancel := context.WithCancel(s.abort)
	defer cancel()
	echoed := make(chan error, 1)
	go func() { echoed <- echoMessages(ctx, c) }()
	select {
	case <-echoed:
	case <-s.stopping.Done():
		// The echo loop reads the client's answering close frame and ends.
		_ = c.Close(websocket.StatusGoingAway, "server shutting down")
		<-echoed
	}
}

func echoMessages(ctx context.Context, c *websocket.Conn) error {
	for {
		typ, r, err := c.Reader(ctx)
		if err != nil {
			return err
		}
		w, err := c.Writer(ctx, typ)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, r); err != nil {
			return errors.Join(err, w.Close())
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
}
