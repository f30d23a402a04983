package ledger

import (
	"errors"
	"fmt"
	"time"
)

// Claim says that the record (Mailbox, UIDL) is delivering the message
// MessageID with content Fingerprint, from At until Expires.
type Claim struct {
	MessageID   string
	Fingerprint string
	Mailbox     string
	UIDL        string
	At          time.Time // when it was taken (the caller's clock)
	Expires     time.Time // it no longer counts from this instant
}

// MaxClaimFingerprint is the longest Fingerprint a claim takes. A
// fingerprint is a digest in hex or base64 (tens of bytes); the limit
// keeps the key within DynamoDB's sort key limit.
const MaxClaimFingerprint = 512

// ClaimKey returns the normalized Message-ID a claim for messageID and
// fingerprint is keyed on (with the fingerprint, compared exactly), and
// false when no claim can be taken for them: the Message-ID is one
// DuplicateKey never indexes, or the fingerprint is empty or longer than
// MaxClaimFingerprint.
func ClaimKey(messageID, fingerprint string) (id string, ok bool) {
	id, ok = normalMessageID(messageID)
	if !ok || fingerprint == "" || len(fingerprint) > MaxClaimFingerprint {
		return "", false
	}
	return id, true
}

// Validate checks c as every Ledger's Claim does and returns its
// normalized Message-ID (ClaimKey): it must have a key, a Mailbox and a
// UIDL, an At, and an Expires after At. Its errors never wrap
// ErrClaimHeld.
func (c Claim) Validate() (id string, err error) {
	id, ok := ClaimKey(c.MessageID, c.Fingerprint)
	switch {
	case !ok && c.Fingerprint == "":
		return "", errors.New("ledger: claim: empty fingerprint")
	case !ok && len(c.Fingerprint) > MaxClaimFingerprint:
		return "", fmt.Errorf("ledger: claim: fingerprint longer than %d bytes", MaxClaimFingerprint)
	case !ok:
		return "", fmt.Errorf("ledger: claim: Message-ID %q is never indexed", c.MessageID)
	case c.Mailbox == "" || c.UIDL == "":
		return "", fmt.Errorf("ledger: claim: record %q/%q is not named", c.Mailbox, c.UIDL)
	case c.At.IsZero() || !c.Expires.After(c.At):
		return "", fmt.Errorf("ledger: claim: expiry %s is not after %s", c.Expires, c.At)
	}
	return id, nil
}

// Live reports whether the stored claim c still counts at now: it is live
// until its Expires.
func (c Claim) Live(now time.Time) bool { return c.Expires.After(now) }

// Admits reports whether a claimant may replace the stored claim c with
// next: c has expired at next.At, or next is by the same record, or
// takeOver names c's holder and attempt. It is Claim's condition, for
// stores that check it in code (DynamoDB checks the same in its
// condition expression).
func (c Claim) Admits(next Claim, takeOver *Claim) bool {
	switch {
	case !c.Live(next.At):
		return true
	case c.Mailbox == next.Mailbox && c.UIDL == next.UIDL:
		return true
	case takeOver != nil:
		return c.Mailbox == takeOver.Mailbox && c.UIDL == takeOver.UIDL && c.At.Equal(takeOver.At)
	}
	return false
}
