package h2guard

import (
	"bytes"
	"testing"
)

// FuzzConn feeds arbitrary bytes after the preface, split two ways: the
// bytes must pass unchanged and the Conn must decide the same, at the same
// byte, whatever the split.
func FuzzConn(f *testing.F) {
	f.Add(newWire(false).settings().get(1).data(1, 0, false).data(1, 0, false).bytes(), uint8(3))
	f.Add(newWire(false).headers(1, []byte{0x82}, false, false).cont(1, nil, false).bytes(), uint8(1))
	f.Add(newWire(false).dataPadded(1, 0, 3, false).dataPadded(1, 0, 0, false).bytes(), uint8(9))
	f.Add(newWire(false).ping(false).ping(false).ping(false).rst(1).rst(1).wu(0).wu(0).prio(1).bytes(), uint8(4))
	f.Add([]byte{0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1}, uint8(2))
	cfg := &Config{PrefaceRead: true, Limits: Limits{Ping: slow(2), Settings: slow(2), Priority: slow(2),
		PriorityPerStream: 1, RSTStream: slow(3), WindowUpdate: slow(2), Other: slow(2),
		MaxHeaderBlockBytes: 200, MaxContinuationFrames: 3, RapidResetMax: 2}}
	run := func(t *testing.T, data []byte, chunk int) (Reason, int64) {
		sc := &scriptConn{}
		sc.push(data, chunk)
		g := New(sc, cfg)
		var got bytes.Buffer
		buf := make([]byte, 1+chunk%7)
		for {
			n, err := g.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				break
			}
		}
		r := From(g).Reason()
		if !bytes.HasPrefix(data, got.Bytes()) || (r == None && got.Len() != len(data)) {
			t.Fatalf("chunk %d: bytes changed or lost (%d of %d, %v)", chunk, got.Len(), len(data), r)
		}
		return r, From(g).failAt
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		r1, at1 := run(t, data, 1<<20)
		r2, at2 := run(t, data, 1+int(chunk))
		if r1 != r2 || at1 != at2 {
			t.Fatalf("whole: %v at %d; chunks of %d: %v at %d", r1, at1, 1+int(chunk), r2, at2)
		}
		if r1 != None && (at1 < 9 || at1 > int64(len(data))) {
			t.Fatalf("decided at %d of %d", at1, len(data))
		}
	})
}
