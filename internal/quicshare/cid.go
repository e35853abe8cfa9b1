package quicshare

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"

	"github.com/quic-go/quic-go"
)

// cidLen is the length of the connection IDs a process chooses: one AES
// block.
const cidLen = aes.BlockSize

// IDs chooses this process's QUIC connection IDs
// (quic.ConnectionIDGenerator) and recognises them: each is one AES block,
// a random per-process tag of 8 bytes and 8 random bytes, encrypted with a
// key of this process's own. Only the process that chose an ID can read
// its tag, so the process is recognised without a table of connections,
// while IDs stay unlinkable for an observer (quic-go's contract for
// generators; a tag in clear would mark every connection of the process).
// A 16-byte ID that this process did not choose (a client's Initial, or
// another process's) decrypts to this tag with probability 2^-64.
type IDs struct {
	block cipher.Block
	tag   [8]byte
}

var _ quic.ConnectionIDGenerator = (*IDs)(nil)

// NewIDs returns a generator with a new key and tag.
func NewIDs() *IDs {
	var key [16]byte
	rand.Read(key[:]) // never fails (crypto/rand)
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	g := &IDs{block: block}
	rand.Read(g.tag[:])
	return g
}

// GenerateConnectionID implements quic.ConnectionIDGenerator.
func (g *IDs) GenerateConnectionID() (quic.ConnectionID, error) {
	var b [cidLen]byte
	copy(b[:8], g.tag[:])
	rand.Read(b[8:])
	g.block.Encrypt(b[:], b[:])
	return quic.ConnectionIDFromBytes(b[:]), nil
}

// ConnectionIDLen implements quic.ConnectionIDGenerator.
func (g *IDs) ConnectionIDLen() int { return cidLen }

// Owns reports whether id is one of this process's connection IDs.
func (g *IDs) Owns(id []byte) bool {
	if len(id) != cidLen {
		return false
	}
	var b [cidLen]byte
	g.block.Decrypt(b[:], id)
	return subtle.ConstantTimeCompare(b[:8], g.tag[:]) == 1
}
