package dynamoledger

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

func testClaim(id, mailbox, uidl string, at time.Time) ledger.Claim {
	return ledger.Claim{MessageID: id, Fingerprint: "v1:0123456789abcdef", Mailbox: mailbox, UIDL: uidl, At: at, Expires: at.Add(10 * time.Minute)}
}

// The claim item: its own partition under the normalized Message-ID, the
// fingerprint in the sort key, instants in nanoseconds, a ttl not before
// Expires.
func (e *env) testClaimItem(t *testing.T) {
	l := e.ledger(t, Options{})
	at := time.Date(2026, 12, 4, 9, 0, 0, 123456789, time.UTC)
	c := testClaim("<Scan.1@Scanner.EXAMPLE>", "box", "u1", at)
	if _, err := l.Claim(bg(), c, nil); err != nil {
		t.Fatal(err)
	}
	item := e.getItem(t, l.table, "CLAIM#Scan.1@scanner.example", "FP#"+c.Fingerprint)
	if item == nil {
		t.Fatal("no claim item under CLAIM#<normalized Message-ID> / FP#<fingerprint>")
	}
	for name, want := range map[string]string{"message_id": "Scan.1@scanner.example", "fingerprint": c.Fingerprint, "mailbox": "box", "uidl": "u1"} {
		if got := stringAttr(item, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if got := numberAttr(item, "at_ns"); got != at.UnixNano() {
		t.Errorf("at_ns = %d, want %d", got, at.UnixNano())
	}
	if got := numberAttr(item, "expires_ns"); got != c.Expires.UnixNano() {
		t.Errorf("expires_ns = %d, want %d", got, c.Expires.UnixNano())
	}
	if ttl := numberAttr(item, attrTTL); time.Unix(ttl, 0).Before(c.Expires) || ttl > c.Expires.Unix()+1 {
		t.Errorf("ttl = %d, want Expires (%d) rounded up", ttl, c.Expires.Unix())
	}
	if size := itemSize(item); size > 1024 {
		t.Errorf("claim item is %d bytes: more than one write unit", size)
	}
	// The index's Query of the Message-ID does not meet it.
	if m, err := l.Accepted(bg(), c.MessageID, []string{"a@example.com"}); err != nil || len(m) != 0 {
		t.Errorf("Accepted beside a claim = %v, %v", m, err)
	}
}

// DynamoDB's PutAccepted leaves the claim, which ends by expiring (the
// holder's own next claim, or a take-over, replaces it before that).
func (e *env) testClaimOutlivesPutAccepted(t *testing.T) {
	l := e.ledger(t, Options{})
	now := time.Now()
	c := testClaim("scan.2@scanner.example", "box", "u1", now)
	if _, err := l.Claim(bg(), c, nil); err != nil {
		t.Fatal(err)
	}
	r := rec("box", "u1")
	r.MessageID, r.Fingerprint = c.MessageID, c.Fingerprint
	if err := l.PutAccepted(bg(), r, []ledger.Acceptance{{MessageID: r.MessageID, Recipient: "rcpt@example.com", At: now, Expires: now.Add(time.Hour), Fingerprint: r.Fingerprint}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Claim(bg(), testClaim(c.MessageID, "other", "u2", now.Add(time.Second)), nil); !errors.Is(err, ledger.ErrClaimHeld) {
		t.Fatalf("Claim after the holder's PutAccepted = %v, want ErrClaimHeld (the claim expires, it is not deleted)", err)
	}
	if _, err := l.Claim(bg(), testClaim(c.MessageID, "other", "u2", c.Expires), nil); err != nil {
		t.Fatalf("Claim once it expired: %v", err)
	}
}

// A Claim whose write landed but whose answer was lost succeeds on the
// client's retry: the stored claim is the claimant's own by then.
func (e *env) testClaimLostAnswer(t *testing.T) {
	ft := newFaultTransport(nil)
	l := e.faultLedger(t, ft, Options{})
	c := testClaim("scan.3@scanner.example", "box", "u1", time.Now())
	ft.reset(firstN("PutItem", 1, fault{after: true, err: timeoutError{}}))
	if _, err := l.Claim(bg(), c, nil); err != nil {
		t.Fatalf("Claim whose first answer was lost: %v", err)
	}
	if n := len(ft.answered("PutItem")); n != 2 {
		t.Fatalf("%d PutItems reached DynamoDB Local, want 2 (the lost one and the retry)", n)
	}
	held, err := l.Claim(bg(), testClaim(c.MessageID, "other", "u2", c.At.Add(time.Second)), nil)
	if !errors.Is(err, ledger.ErrClaimHeld) || held.Mailbox != "box" || held.UIDL != "u1" {
		t.Fatalf("Claim by another record = %+v, %v; want held by box/u1", held, err)
	}
}

// When a failed condition comes back without the stored item, the held
// claim is read with a GetItem.
func (e *env) testClaimHeldWithoutItem(t *testing.T) {
	ft := newFaultTransport(nil)
	l := e.faultLedger(t, ft, Options{})
	now := time.Now()
	c := testClaim("scan.4@scanner.example", "box", "u1", now)
	if _, err := l.Claim(bg(), c, nil); err != nil {
		t.Fatal(err)
	}
	stripItem := func(_, resp []byte) []byte {
		var m map[string]any
		if json.Unmarshal(resp, &m) != nil {
			return resp
		}
		delete(m, "Item")
		out, _ := json.Marshal(m)
		return out
	}
	ft.reset(firstN("PutItem", 1, fault{rewrite: stripItem}))
	l.ResetStats()
	held, err := l.Claim(bg(), testClaim(c.MessageID, "other", "u2", now.Add(time.Second)), nil)
	if !errors.Is(err, ledger.ErrClaimHeld) {
		t.Fatalf("Claim = %v, want ErrClaimHeld", err)
	}
	if held.Mailbox != "box" || held.UIDL != "u1" || !held.At.Equal(c.At) || !held.Expires.Equal(c.Expires) || held.Fingerprint != c.Fingerprint {
		t.Fatalf("held claim %+v, want %+v", held, c)
	}
	if s := l.Stats(); s.Calls["GetItem"] != 1 {
		t.Fatalf("calls %v, want one GetItem", s.Calls)
	}
}
