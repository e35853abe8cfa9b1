package quicshare

import "time"

// dcid returns the destination connection ID of datagram b, by the
// version-independent invariants of QUIC (RFC 8999): a long header (first
// bit set) says the ID's length in its sixth byte; a short header does
// not, and carries one of ours, cidLen long. ok is false for a datagram
// too short for its header, or whose ID is longer than any QUIC version
// in use allows (20 bytes): such a datagram is not routed, the transport
// that reads it drops it or answers it.
func dcid(b []byte) (id []byte, long, ok bool) {
	switch {
	case len(b) == 0:
		return nil, false, false
	case b[0]&0x80 == 0:
		if len(b) < 1+cidLen {
			return nil, false, false
		}
		return b[1 : 1+cidLen], false, true
	case len(b) < 6:
		return nil, true, false
	}
	n := int(b[5])
	if n > 20 || len(b) < 6+n {
		return nil, true, false
	}
	return b[6 : 6+n], true, true
}

// A client picks the destination connection ID of its first Initial
// packets itself; it moves to one of the server's once the server's first
// Initial reaches it. recent remembers the client-chosen IDs whose
// handshakes this process took, so that the rest of such a handshake
// (a ClientHello spread over two packets, a retransmission) stays here
// after the hand-over instead of going to the new process, which would
// know nothing of it.
const (
	recentSize = 4096
	// recentTTL is longer than any handshake (sluice's handshake timeout
	// is at most 10 s).
	recentTTL = 30 * time.Second
)

type recentKey [21]byte // the length, then the ID

type recent struct {
	at   map[recentKey]time.Time
	ring [recentSize]recentKey // the keys in order of arrival, to forget the oldest
	next int
	now  func() time.Time
}

func keyOf(id []byte) (k recentKey) {
	k[0] = byte(len(id))
	copy(k[1:], id)
	return k
}

// add remembers id (at most 20 bytes) from now on.
func (r *recent) add(id []byte) {
	if r.at == nil {
		r.at = make(map[recentKey]time.Time)
	}
	k := keyOf(id)
	now := r.now()
	if _, ok := r.at[k]; ok {
		r.at[k] = now
		return
	}
	delete(r.at, r.ring[r.next]) // the oldest goes (the map holds at most recentSize+1)
	r.ring[r.next] = k
	r.next = (r.next + 1) % recentSize
	r.at[k] = now
}

// has reports whether id was added within recentTTL.
func (r *recent) has(id []byte) bool {
	t, ok := r.at[keyOf(id)]
	return ok && r.now().Sub(t) < recentTTL
}

// router decides, for each datagram this process reads, whether it keeps
// it or forwards it to the process it handed the socket to.
type router struct {
	ids    *IDs
	recent recent
}

// keep reports whether this process keeps datagram b. forwarding says that
// a new process takes what is not this one's: then this process keeps
// only the datagrams of its own connections (its connection IDs) and of
// the handshakes it had begun (recent); otherwise it keeps all, and
// remembers the client-chosen IDs of the handshakes it takes.
func (r *router) keep(b []byte, forwarding bool) bool {
	id, long, ok := dcid(b)
	switch {
	case !ok:
		return true
	case !long:
		return !forwarding || r.ids.Owns(id)
	case r.ids.Owns(id), r.recent.has(id):
		return true
	case forwarding:
		return false
	}
	r.recent.add(id)
	return true
}
