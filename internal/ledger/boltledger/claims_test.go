package boltledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// claimsSize counts the claims and their expiry keys.
func claimsSize(t *testing.T, l *Ledger) (claims, expiries int) {
	t.Helper()
	return indexSize(t, l, claimIndex)
}

func fpClaim(mailbox, uidl string, at time.Time) ledger.Claim {
	return ledger.Claim{MessageID: "scan-7@Scanner.Example", Fingerprint: "v1:77", Mailbox: mailbox, UIDL: uidl, At: at, Expires: at.Add(10 * time.Minute)}
}

// PutAccepted of the holding record ends its claim in the same
// transaction; a plain Put, another record's PutAccepted, or the holder's
// PutAccepted of another fingerprint leave the claim alone.
func TestPutAcceptedEndsOwnClaim(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	holder := &ledger.Record{Mailbox: "sales", UIDL: "u1", MessageID: "<scan-7@scanner.example>", Fingerprint: "v1:77"}
	other := &ledger.Record{Mailbox: "support", UIDL: "u1", MessageID: holder.MessageID, Fingerprint: "v1:77"}
	sibling := &ledger.Record{Mailbox: "sales", UIDL: "u2", MessageID: holder.MessageID, Fingerprint: "v1:77"}
	steps := []struct {
		name  string
		write func(l *Ledger) error
		ended bool
	}{
		{"plain Put of the holder", func(l *Ledger) error { return l.Put(ctx, holder) }, false},
		{"PutAccepted of another record", func(l *Ledger) error { return l.PutAccepted(ctx, other, nil) }, false},
		{"PutAccepted of another UIDL of the mailbox", func(l *Ledger) error { return l.PutAccepted(ctx, sibling, nil) }, false},
		{"PutAccepted of the holder, other fingerprint", func(l *Ledger) error {
			r := *holder
			r.Fingerprint = "v1:78"
			err := l.PutAccepted(ctx, &r, nil)
			holder.Version = r.Version
			return err
		}, false},
		{"PutAccepted of the holder that conflicts", func(l *Ledger) error {
			r := *holder
			r.Version = 0
			if err := l.PutAccepted(ctx, &r, nil); !errors.Is(err, ledger.ErrConflict) {
				return fmt.Errorf("got %v, want a conflict", err)
			}
			return nil
		}, false},
		{"PutAccepted of the holder", func(l *Ledger) error {
			return l.PutAccepted(ctx, holder, []ledger.Acceptance{{MessageID: holder.MessageID, Recipient: "a@corp.example", At: now, Expires: now.Add(time.Hour), Fingerprint: "v1:77"}})
		}, true},
	}
	l := openAt(t, tempPath(t), Options{})
	if _, err := l.Claim(ctx, fpClaim("sales", "u1", now), nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if err := s.write(l); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		_, err := l.Claim(ctx, fpClaim("support", "u1", now.Add(time.Second)), nil)
		switch {
		case s.ended && err != nil:
			t.Fatalf("%s: the claim was not ended: %v", s.name, err)
		case !s.ended && !errors.Is(err, ledger.ErrClaimHeld):
			t.Fatalf("%s: Claim by another record = %v, want ErrClaimHeld", s.name, err)
		}
	}
	if c, x := claimsSize(t, l); c != 1 || x != 1 {
		t.Fatalf("%d claims, %d expiry keys; want support's one", c, x)
	}
}

// A claim taken over is the new holder's: the old holder's PutAccepted
// does not end it.
func TestPutAcceptedAfterTakeOver(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	l := openAt(t, tempPath(t), Options{})
	first := fpClaim("sales", "u1", now)
	if _, err := l.Claim(ctx, first, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Claim(ctx, fpClaim("support", "u2", now.Add(time.Second)), &first); err != nil {
		t.Fatal(err)
	}
	old := &ledger.Record{Mailbox: "sales", UIDL: "u1", MessageID: first.MessageID, Fingerprint: first.Fingerprint}
	if err := l.PutAccepted(ctx, old, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Claim(ctx, fpClaim("third", "u3", now.Add(2*time.Second)), nil); !errors.Is(err, ledger.ErrClaimHeld) {
		t.Fatalf("Claim after the old holder's PutAccepted = %v, want ErrClaimHeld", err)
	}
}

// Expired claims are pruned by later writes, oldest first and at most
// pruneBatch plus the claims written per transaction; a re-claimed one
// leaves no stale expiry key, and a live one is never pruned.
func TestClaimPruning(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := openAt(t, tempPath(t), Options{Now: clock})
	ctx := context.Background()

	const n = 150
	for i := range n {
		c := fpClaim("sales", fmt.Sprintf("u%d", i), now)
		c.MessageID = fmt.Sprintf("m%d@corp.example", i)
		if _, err := l.Claim(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The same record claims again for longer: its expiry key moves.
	long := fpClaim("sales", "u0", now.Add(time.Second))
	long.MessageID, long.Expires = "m0@corp.example", now.Add(48*time.Hour)
	if _, err := l.Claim(ctx, long, nil); err != nil {
		t.Fatal(err)
	}
	if c, x := claimsSize(t, l); c != n || x != n {
		t.Fatalf("%d claims, %d expiry keys; want %d each", c, x, n)
	}

	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	for i := 1; ; i++ {
		c := fpClaim("support", fmt.Sprintf("new%d", i), now)
		c.MessageID = fmt.Sprintf("new%d@corp.example", i)
		if _, err := l.Claim(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
		got, x := claimsSize(t, l)
		// Live: the long claim and the i new ones.
		want := max(n-i*(pruneBatch+1), 1) + i
		if got != want || x != want {
			t.Fatalf("after claim %d: %d claims, %d expiry keys; want %d each", i, got, x, want)
		}
		if want == 1+i {
			break
		}
	}
	other := fpClaim("support", "x", now)
	other.MessageID = long.MessageID
	if _, err := l.Claim(ctx, other, nil); !errors.Is(err, ledger.ErrClaimHeld) {
		t.Errorf("the live claim was pruned: Claim = %v", err)
	}
}
