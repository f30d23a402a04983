package ledger

import (
	"strings"
	"time"
)

// Acceptance is one entry of the duplicate index: Recipient accepted the
// message MessageID, delivered from the copy (Mailbox, UIDL), at At. The
// index lets a later copy of the same message (from another mailbox, a
// second copy in a global mailbox, or a UIDL the server changed) skip the
// recipients that already have it.
type Acceptance struct {
	MessageID string
	Recipient string
	Mailbox   string // the record whose 250 this entry stands for
	UIDL      string
	At        time.Time // when the recipient accepted (the 250)
	// Fingerprint is the content fingerprint of the copy that was
	// accepted (Record.Fingerprint). It is "" in entries written before
	// fingerprints existed, and when the copy had none: such an entry can
	// never suppress a copy, the connector delivers.
	Fingerprint string
	// Expires is when the entry stops counting: At plus the duplicate
	// window of the mailbox that delivered. An expired entry is never
	// returned and is removed by the store (bolt: pruned during writes;
	// DynamoDB: its ttl attribute).
	Expires time.Time
}

// Limits on what the duplicate index keys on. RFC 5322 §2.1.1 limits a
// line, and so a Message-ID, to 998 octets; RFC 5321 §4.5.3.1.3 a path to
// 256. Longer values (not seen in real mail) are never indexed, so such a
// message is never suppressed; they also keep the keys within DynamoDB's
// key size limits.
const (
	MaxIndexedMessageID = 998
	MaxIndexedRecipient = 512
)

// DuplicateKey returns the normalized Message-ID and recipient the
// duplicate index is keyed on, and false when the pair is never indexed.
//
// The Message-ID is taken as the inspector records it, without angle
// brackets (any left around it and surrounding white space are removed).
// Its left part (id-left, RFC 5322 §3.6.4) is compared exactly, case
// included: RFC 5322 gives no rule to fold it and generators use case
// freely. Its right part (after the last "@", a domain in practice) is
// compared without regard to ASCII case. An empty Message-ID is never
// indexed: a message without one is never suppressed.
//
// The recipient keeps its local part exactly (RFC 5321 §2.4: only the
// receiving host may interpret its case) and gets its domain lower-cased.
func DuplicateKey(messageID, recipient string) (id, rcpt string, ok bool) {
	id, ok = normalMessageID(messageID)
	if !ok || recipient == "" || len(recipient) > MaxIndexedRecipient {
		return "", "", false
	}
	rcpt = recipient
	if at := strings.LastIndexByte(rcpt, '@'); at >= 0 {
		rcpt = rcpt[:at+1] + strings.ToLower(rcpt[at+1:])
	}
	return id, rcpt, true
}

// normalMessageID is DuplicateKey's rule for the Message-ID.
func normalMessageID(messageID string) (string, bool) {
	id := strings.Trim(strings.TrimSpace(messageID), "<>")
	if id == "" || len(id) > MaxIndexedMessageID {
		return "", false
	}
	if at := strings.LastIndexByte(id, '@'); at >= 0 {
		id = id[:at+1] + strings.ToLower(id[at+1:])
	}
	return id, true
}
