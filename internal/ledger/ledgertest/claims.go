package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// claimTests are the suite's cases for Claim and the fingerprint.
var claimTests = []struct {
	name string
	fn   func(t *testing.T, l ledger.Ledger)
}{
	{"ClaimFree", testClaimFree},
	{"ClaimHeld", testClaimHeld},
	{"ClaimRules", testClaimRules},
	{"ClaimKeyNormalized", testClaimCase},
	{"ClaimInvalid", testClaimInvalid},
	{"ClaimCancelledContext", testClaimCancelled},
	{"ClaimConcurrentOneWinner", testClaimConcurrent},
	{"FingerprintStored", testFingerprintStored},
}

// claimAt is a claim by (mailbox, uidl) taken at at for a minute. Claims
// compare the callers' clocks only, so the tests choose their instants;
// they lie around the real clock so that a store pruning expired claims
// by its own clock keeps the live ones.
func claimAt(mailbox, uidl string, at time.Time) ledger.Claim {
	return ledger.Claim{MessageID: "scan-0001@Scanner.Example", Fingerprint: "v1:" + strings.Repeat("3c", 32),
		Mailbox: mailbox, UIDL: uidl, At: at, Expires: at.Add(time.Minute)}
}

func mustClaim(t *testing.T, l ledger.Ledger, c ledger.Claim, takeOver *ledger.Claim) {
	t.Helper()
	got, err := l.Claim(ctx(), c, takeOver)
	if err != nil {
		t.Fatalf("Claim(%s/%s at %s): %v", c.Mailbox, c.UIDL, c.At, err)
	}
	if got != c {
		t.Fatalf("Claim returned %+v, want the claim given %+v", got, c)
	}
}

// wantClaimHeld checks that Claim of c fails with ErrClaimHeld naming
// holder (with the Message-ID normalized) and returns that error.
func wantClaimHeld(t *testing.T, l ledger.Ledger, c ledger.Claim, takeOver *ledger.Claim, holder ledger.Claim) {
	t.Helper()
	held, err := l.Claim(ctx(), c, takeOver)
	if !errors.Is(err, ledger.ErrClaimHeld) {
		t.Fatalf("Claim(%s/%s at %s) = %v, want an error wrapping ErrClaimHeld", c.Mailbox, c.UIDL, c.At, err)
	}
	id, _ := ledger.ClaimKey(holder.MessageID, holder.Fingerprint)
	if held.MessageID != id || held.Fingerprint != holder.Fingerprint || held.Mailbox != holder.Mailbox || held.UIDL != holder.UIDL ||
		!held.At.Equal(holder.At) || !held.Expires.Equal(holder.Expires) {
		t.Fatalf("held claim %+v, want the holder's %+v (Message-ID %q)", held, holder, id)
	}
}

// A claim on a free key is taken, and suppresses nothing.
func testClaimFree(t *testing.T, l ledger.Ledger) {
	c := claimAt(box, "u1", time.Now())
	mustClaim(t, l, c, nil)
	if m := accepted(t, l, c.MessageID, "a@example.com"); len(m) != 0 {
		t.Errorf("a claim made Accepted find %+v", m)
	}
	// Another fingerprint of the same Message-ID is another key.
	other := claimAt("other@example.com", "u9", c.At)
	other.Fingerprint = "v1:" + strings.Repeat("4d", 32)
	mustClaim(t, l, other, nil)
}

// Another record's claim on a live key is refused with the holder's claim,
// and writes nothing.
func testClaimHeld(t *testing.T, l ledger.Ledger) {
	now := time.Now()
	a := claimAt(box, "u1", now)
	mustClaim(t, l, a, nil)
	b := claimAt("other@example.com", "u1", now.Add(10*time.Second))
	wantClaimHeld(t, l, b, nil, a)
	// Same mailbox, other UIDL: another record too.
	wantClaimHeld(t, l, claimAt(box, "u2", now.Add(20*time.Second)), nil, a)
	// Still a's (b wrote nothing): a third claimant sees a.
	wantClaimHeld(t, l, claimAt("third@example.com", "u3", now.Add(30*time.Second)), nil, a)
}

// The rules by which a stored claim gives way, step by step on one key.
func testClaimRules(t *testing.T, l ledger.Ledger) {
	now := time.Now()
	holder := claimAt(box, "u1", now)
	other := func(d time.Duration) ledger.Claim { return claimAt("other@example.com", "u7", now.Add(d)) }
	steps := []struct {
		name     string
		c        ledger.Claim
		takeOver *ledger.Claim
		taken    bool // else held by the claim of the last step taken
	}{
		{"free key", holder, nil, true},
		{"same record again, later", claimAt(box, "u1", now.Add(20*time.Second)), nil, true},
		{"other record, live (by the renewed expiry)", other(70 * time.Second), nil, false},
		{"take-over naming another At", other(30 * time.Second), &ledger.Claim{Mailbox: box, UIDL: "u1", At: now}, false},
		{"take-over naming another UIDL", other(30 * time.Second), &ledger.Claim{Mailbox: box, UIDL: "u2", At: now.Add(20 * time.Second)}, false},
		{"take-over naming another mailbox", other(30 * time.Second), &ledger.Claim{Mailbox: "x@example.com", UIDL: "u1", At: now.Add(20 * time.Second)}, false},
		{"take-over of the holder's attempt", other(30 * time.Second), &ledger.Claim{Mailbox: box, UIDL: "u1", At: now.Add(20 * time.Second)}, true},
		{"first holder again, live", claimAt(box, "u1", now.Add(40*time.Second)), nil, false},
		// other's claim runs from now+30s to now+90s.
		{"first holder at the expiry instant", claimAt(box, "u1", now.Add(90*time.Second)), nil, true},
		{"other after expiry", other(3 * time.Minute), nil, true},
	}
	var last ledger.Claim
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.taken {
				mustClaim(t, l, s.c, s.takeOver)
				last = s.c
			} else {
				wantClaimHeld(t, l, s.c, s.takeOver, last)
			}
		})
		if t.Failed() {
			return
		}
	}
}

// The key is the Message-ID as DuplicateKey normalizes it: the domain
// without regard to case, the left part exactly, no angle brackets; the
// fingerprint exactly.
func testClaimCase(t *testing.T, l ledger.Ledger) {
	now := time.Now()
	a := claimAt(box, "u1", now)
	a.MessageID = "Abc.DEF@Example.ORG"
	mustClaim(t, l, a, nil)
	for i, tc := range []struct {
		id, fingerprint string
		held            bool
	}{
		{"<Abc.DEF@example.org>", a.Fingerprint, true},
		{" Abc.DEF@EXAMPLE.org ", a.Fingerprint, true},
		{"abc.def@example.org", a.Fingerprint, false},
		{"Abc.DEF@example.org", strings.ToUpper(a.Fingerprint), false},
	} {
		c := claimAt("other@example.com", fmt.Sprintf("u9-%d", i), now.Add(time.Second))
		c.MessageID, c.Fingerprint = tc.id, tc.fingerprint
		if tc.held {
			wantClaimHeld(t, l, c, nil, a)
		} else {
			mustClaim(t, l, c, nil)
		}
	}
}

// A claim with no key, or malformed, is an error that is not ErrClaimHeld,
// and writes nothing.
func testClaimInvalid(t *testing.T, l ledger.Ledger) {
	now := time.Now()
	good := claimAt(box, "u1", now)
	for name, edit := range map[string]func(c *ledger.Claim){
		"no Message-ID":          func(c *ledger.Claim) { c.MessageID = "" },
		"empty angle brackets":   func(c *ledger.Claim) { c.MessageID = "<>" },
		"Message-ID too long":    func(c *ledger.Claim) { c.MessageID = strings.Repeat("x", ledger.MaxIndexedMessageID) + "@example.com" },
		"empty fingerprint":      func(c *ledger.Claim) { c.Fingerprint = "" },
		"fingerprint too long":   func(c *ledger.Claim) { c.Fingerprint = strings.Repeat("f", ledger.MaxClaimFingerprint+1) },
		"no mailbox":             func(c *ledger.Claim) { c.Mailbox = "" },
		"no UIDL":                func(c *ledger.Claim) { c.UIDL = "" },
		"no At":                  func(c *ledger.Claim) { c.At = time.Time{} },
		"expires at At":          func(c *ledger.Claim) { c.Expires = c.At },
		"expires before it ends": func(c *ledger.Claim) { c.Expires = c.At.Add(-time.Second) },
	} {
		c := good
		c.UIDL = "bad"
		edit(&c)
		if _, err := l.Claim(ctx(), c, nil); err == nil || errors.Is(err, ledger.ErrClaimHeld) {
			t.Errorf("%s: Claim = %v, want an error that is not ErrClaimHeld", name, err)
		}
	}
	mustClaim(t, l, good, nil) // nothing was written
}

func testClaimCancelled(t *testing.T, l ledger.Ledger) {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	claim := claimAt(box, "u1", time.Now())
	if _, err := l.Claim(c, claim, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Claim with cancelled context = %v, want context.Canceled", err)
	}
	mustClaim(t, l, claimAt("other@example.com", "u2", claim.At), nil) // nothing was written
}

// Records racing for one key: exactly one takes it, every other one is
// told that one holds it.
func testClaimConcurrent(t *testing.T, l ledger.Ledger) {
	const claimants = 8
	now := time.Now()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []ledger.Claim
		helds   []ledger.Claim
		others  []error
	)
	start := make(chan struct{})
	for i := range claimants {
		c := claimAt(fmt.Sprintf("box%d@example.com", i), fmt.Sprintf("u%d", i), now.Add(time.Duration(i)*time.Millisecond))
		wg.Go(func() {
			<-start
			held, err := l.Claim(ctx(), c, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, c)
			case errors.Is(err, ledger.ErrClaimHeld):
				helds = append(helds, held)
			default:
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("unexpected errors: %v", others)
	}
	if len(winners) != 1 || len(helds) != claimants-1 {
		t.Fatalf("%d winners and %d refused, want 1 and %d", len(winners), len(helds), claimants-1)
	}
	w := winners[0]
	for _, h := range helds {
		if h.Mailbox != w.Mailbox || h.UIDL != w.UIDL || !h.At.Equal(w.At) {
			t.Errorf("refused claimant told %s/%s at %s holds it, want the winner %s/%s at %s", h.Mailbox, h.UIDL, h.At, w.Mailbox, w.UIDL, w.At)
		}
	}
}

// A record's Fingerprint is stored; an index entry's is stored and
// returned by Accepted; one written without it reads as "".
func testFingerprintStored(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "u1")
	r.Fingerprint = "v1:" + strings.Repeat("a5", 32)
	a := accept(r, "a@example.com", later())
	a.Fingerprint = r.Fingerprint
	mustPutAccepted(t, l, r, a, accept(r, "b@example.com", later()))
	if got := stored(t, l, box, "u1"); got == nil || got.Fingerprint != r.Fingerprint || encode(t, got) != encode(t, r) {
		t.Fatalf("stored record %+v, want %+v", got, r)
	}
	m := accepted(t, l, r.MessageID, "a@example.com", "b@example.com")
	if m["a@example.com"].Fingerprint != r.Fingerprint || m["b@example.com"].Fingerprint != "" || len(m) != 2 {
		t.Fatalf("Accepted = %+v, want a's entry with fingerprint %q and b's without", m, r.Fingerprint)
	}
	// PutAccepted ends nothing but its own record's claim: the holder may
	// claim again, whatever the store did with the claim.
	c := claimAt(box, "u1", time.Now())
	c.MessageID, c.Fingerprint = r.MessageID, r.Fingerprint
	mustClaim(t, l, c, nil)
	r.Recipients[1].Status = ledger.Accepted
	mustPutAccepted(t, l, r, accept(r, "b@example.com", later()))
	c.At, c.Expires = c.At.Add(time.Second), c.Expires.Add(time.Second)
	mustClaim(t, l, c, nil)
}
