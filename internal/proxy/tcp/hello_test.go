package tcp

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// captureConn records what a TLS client writes and answers nothing.
type captureConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *captureConn) Read(p []byte) (int, error)       { return 0, io.EOF }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// clientHello returns the first flight crypto/tls sends for cfg: its
// ClientHello in one record.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &captureConn{}
	tls.Client(c, cfg).Handshake() // fails on EOF, after writing the hello
	if c.out.Len() == 0 {
		t.Fatal("crypto/tls wrote no ClientHello")
	}
	return c.out.Bytes()
}

// refragment splits the handshake message of one record into records of at
// most size bytes each.
func refragment(rec []byte, size int) []byte {
	msg := rec[5:]
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 0x16, 3, 1)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestServerName(t *testing.T) {
	hello := func(name string) []byte {
		return clientHello(t, &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	}
	db := hello("db.example.com")
	tests := []struct {
		name string
		in   []byte
		want string
		err  error // nil, errShort, errNotTLS, or any helloError (helloError(""))
	}{
		{"crypto/tls hello", db, "db.example.com", nil},
		{"upper case kept", hello("DB.Example.com"), "DB.Example.com", nil},
		{"no server name (an IP target)", clientHello(t, &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true}), "", nil},
		{"tls 1.2 only", clientHello(t, &tls.Config{ServerName: "old.example.com", MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}), "old.example.com", nil},
		{"split in 3 records", refragment(db, 100), "db.example.com", nil},
		{"split in byte-sized records", refragment(db, 1), "db.example.com", nil},
		{"followed by more", append(append([]byte{}, db...), "early data"...), "db.example.com", nil},
		{"cut", db[:len(db)-1], "", errShort},
		{"cut in the header", db[:3], "", errShort},
		{"cut across records", refragment(db, 100)[:150], "", errShort},
		{"empty", nil, "", errShort},
		{"http", []byte("GET / HTTP/1.1\r\n"), "", errNotTLS},
		{"one byte of http", []byte("G"), "", errNotTLS},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), "", errNotTLS},
		{"alert record", []byte{0x15, 3, 1, 0, 2, 2, 40}, "", errNotTLS},
		{"record too long", []byte{0x16, 3, 1, 0x40, 0x01}, "", helloError("")},
		{"server hello", append([]byte{0x16, 3, 3, 0, 4}, 2, 0, 0, 0), "", helloError("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := serverName(tt.in)
			var he helloError
			switch {
			case tt.err == nil && err != nil, tt.err != nil && !errors.Is(err, tt.err) && !(errors.As(tt.err, &he) && errors.As(err, &he)):
				t.Fatalf("serverName = %q, %v; want error %v", got, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("serverName = %q, want %q", got, tt.want)
			}
		})
	}
	for i := range len(db) {
		if _, err := serverName(db[:i]); err != errShort {
			t.Fatalf("serverName of the first %d of %d bytes: %v, want errShort", i, len(db), err)
		}
	}
}

// TestServerNameMalformed changes one field of a real ClientHello at a
// time: each is refused, never read past.
func TestServerNameMalformed(t *testing.T) {
	db := clientHello(t, &tls.Config{ServerName: "db.example.com", InsecureSkipVerify: true})
	at := bytes.Index(db, []byte("db.example.com"))
	tests := []struct {
		name   string
		change func(b []byte)
	}{
		{"not a ClientHello", func(b []byte) { b[5] = 2 }},
		{"trailing dot", func(b []byte) { b[at+len("db.example.com")-1] = '.' }},
		{"space in the name", func(b []byte) { b[at+2] = ' ' }},
		{"empty label", func(b []byte) { b[at+2] = '.'; b[at+3] = '.' }},
		{"name longer than its extension", func(b []byte) { b[at-1] += 5 }},
		{"session id too long", func(b []byte) { b[5+4+2+32] = 200 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(db)
			tt.change(b)
			name, err := serverName(b)
			var he helloError
			if !errors.As(err, &he) {
				t.Errorf("serverName = %q, %v; want a helloError", name, err)
			}
		})
	}
}

// FuzzServerName: never panics, never returns a name that is not a host
// name, and a prefix of what it parses is errShort or the same answer.
func FuzzServerName(f *testing.F) {
	db := clientHello(f, &tls.Config{ServerName: "db.example.com", InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	f.Add(db)
	f.Add(refragment(db, 64))
	f.Add(clientHello(f, &tls.Config{ServerName: "x", MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := serverName(b)
		if err != nil {
			if name != "" {
				t.Fatalf("name %q with error %v", name, err)
			}
			return
		}
		if name != "" && (!validName([]byte(name)) || strings.ContainsAny(name, " \x00")) {
			t.Fatalf("serverName = %q, not a host name", name)
		}
		for _, cut := range []int{len(b) / 2, len(b) - 1} {
			if cut < 0 {
				continue
			}
			if got, err := serverName(b[:cut]); err == nil && got != name {
				t.Fatalf("a prefix of %d bytes gave %q, the whole %q", cut, got, name)
			}
		}
	})
}

// TestReadHello reads a ClientHello that arrives in pieces over a real
// socket, and gives up with what it read on a silent or non-TLS client.
func TestReadHello(t *testing.T) {
	db := clientHello(t, &tls.Config{ServerName: "db.example.com", InsecureSkipVerify: true})
	tests := []struct {
		name  string
		parts [][]byte
		want  string
	}{
		{"in pieces", [][]byte{db[:3], db[3:100], db[100:]}, "db.example.com"},
		{"not tls", [][]byte{[]byte("SSH-2.0-x\r\n")}, ""},
		{"silent after a few bytes", [][]byte{db[:10]}, ""},
		{"silent", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cl, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			sv, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sv.Close()
			var sent []byte
			go func() {
				for _, p := range tt.parts {
					cl.Write(p)
					time.Sleep(10 * time.Millisecond)
				}
			}()
			for _, p := range tt.parts {
				sent = append(sent, p...)
			}
			name, read, _ := readHello(sv, time.Now().Add(300*time.Millisecond), make([]byte, maxHello))
			if name != tt.want {
				t.Errorf("name = %q, want %q", name, tt.want)
			}
			if !bytes.Equal(read, sent) {
				t.Errorf("read %d bytes, want the %d sent", len(read), len(sent))
			}
		})
	}
}
