package connector

import (
	"strconv"
	"strings"

	"github.com/popconnector/popconnector/internal/ledger"
)

// A POP3 UIDL names a message only while it is on the server: RFC 1939 §7
// lets a server reuse one after the message is gone, and some do. The
// ledger therefore keys a message by its UIDL plus, for a reused UIDL, a
// generation: "<uidl> <n>" for n >= 2. A space cannot occur in a UIDL
// (0x21-0x7E), so the key cannot collide with a real UIDL.

// baseUID returns the server UIDL of a ledger key.
func baseUID(key string) string {
	if i := strings.IndexByte(key, ' '); i >= 0 {
		return key[:i]
	}
	return key
}

func generation(key string) int {
	i := strings.IndexByte(key, ' ')
	if i < 0 {
		return 1
	}
	n, err := strconv.Atoi(key[i+1:])
	if err != nil {
		return 1
	}
	return n
}

// nextGeneration returns the ledger key for a new message under the same UIDL.
func nextGeneration(key string) string {
	return baseUID(key) + " " + strconv.Itoa(generation(key)+1)
}

// currentRecords maps each server UIDL to its newest generation's record.
func currentRecords(recs []*ledger.Record) map[string]*ledger.Record {
	by := make(map[string]*ledger.Record, len(recs))
	for _, r := range recs {
		base := baseUID(r.UIDL)
		if cur, ok := by[base]; !ok || generation(r.UIDL) > generation(cur.UIDL) {
			by[base] = r
		}
	}
	return by
}

// sizeMatches reports whether a message of got octets is what the server
// listed as listed octets. Dovecot does not count the CRLF it adds to a
// message that lacks a final line break, hence the +2.
func sizeMatches(listed, got int64) bool {
	return got == listed || got == listed+2
}

// sameMessage reports whether the listed message m is the one rec
// describes. Only a record whose fetch is known can tell; the LIST size is
// compared with the LIST size recorded at fetch time (older records, which
// lack it, with the archived size).
func sameMessage(m ServerMessage, rec *ledger.Record) bool {
	if !rec.Archived() {
		return true
	}
	if rec.ListSize > 0 {
		return m.Size == rec.ListSize
	}
	return sizeMatches(m.Size, rec.Size)
}
