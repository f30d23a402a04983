package ledgertest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/ledgertest"
)

// The memory ledger keeps the whole contract. Its subtests run in
// parallel: the suite's lease and expiry cases sleep on the real clock,
// and one ledger each keeps them apart.
func TestMemoryContract(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledger.Ledger {
		t.Parallel()
		l := ledgertest.NewMemory()
		t.Cleanup(func() { l.Close() })
		return l
	})
}

// What bolt's and DynamoDB's fixture tests read from a file written at
// eabc1cd, the memory ledger reads back from its own writes: the suite's
// compatibility fixture stands here for "written by one handle, read by
// the next".
func TestMemoryFixtureAcrossReopen(t *testing.T) {
	t.Parallel()
	clock := func() time.Time { return ledgertest.FixtureNow }
	first := ledgertest.NewMemory(ledgertest.WithClock(clock))
	ledgertest.WriteFixture(t, first)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := first.Reopen()
	defer again.Close()
	ledgertest.CheckFixture(t, again)
	// The fixture's lease was taken through a handle since closed: stale.
	le, err := again.Lease(context.Background(), ledgertest.FixtureLeaseMailbox, "another-poller", time.Minute)
	if err != nil {
		t.Fatalf("Lease over a closed handle's lease: %v", err)
	}
	if err := le.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A lease holds against other handles while the one that took it is
// open and until it expires by the ledger's clock.
func TestMemoryLeaseAcrossHandles(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()

	a := ledgertest.NewMemory(ledgertest.WithClock(clock))
	b := a.Reopen()
	if _, err := a.Lease(ctx, "box", "poller-a", time.Minute); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		do      func()
		handle  *ledgertest.Memory
		owner   string
		wantErr error
	}{
		{"other handle, live", func() {}, b, "poller-b", ledger.ErrLeaseHeld},
		{"just before expiry", func() { advance(time.Minute - time.Nanosecond) }, b, "poller-b", ledger.ErrLeaseHeld},
		{"at expiry", func() { advance(time.Nanosecond) }, b, "poller-b", nil},
		{"taken back after b's expiry", func() { advance(2 * time.Minute) }, a, "poller-a", nil},
		{"holder's handle closed", func() { a.Close() }, b, "poller-b", nil},
	}
	for _, s := range steps {
		s.do()
		_, err := s.handle.Lease(ctx, "box", s.owner, time.Minute)
		if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: Lease = %v, want %v", s.name, err, s.wantErr)
		}
	}
}

// A closed handle refuses every call; the data stays for the next handle.
func TestMemoryClosedHandle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := ledgertest.NewMemory()
	r := &ledger.Record{Mailbox: "box", UIDL: "u1", FirstSeen: time.Now()}
	if err := l.Put(ctx, r); err != nil {
		t.Fatal(err)
	}
	le, err := l.Lease(ctx, "box", "p", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	calls := map[string]func() error{
		"Get":         func() error { _, err := l.Get(ctx, "box", []string{"u1"}); return err },
		"List":        func() error { _, err := l.List(ctx, "box"); return err },
		"Put":         func() error { return l.Put(ctx, &ledger.Record{Mailbox: "box", UIDL: "u2"}) },
		"PutAccepted": func() error { return l.PutAccepted(ctx, &ledger.Record{Mailbox: "box", UIDL: "u3"}, nil) },
		"Accepted":    func() error { _, err := l.Accepted(ctx, "id@x", []string{"a@x"}); return err },
		"Lease":       func() error { _, err := l.Lease(ctx, "box", "p", time.Minute); return err },
		"Renew":       func() error { return le.Renew(ctx) },
		"Release":     func() error { return le.Release(ctx) },
		"Claim": func() error {
			now := time.Now()
			_, err := l.Claim(ctx, ledger.Claim{MessageID: "id@x", Fingerprint: "f", Mailbox: "box", UIDL: "u1", At: now, Expires: now.Add(time.Minute)}, nil)
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ledgertest.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	m, err := l.Reopen().Get(ctx, "box", []string{"u1", "u2", "u3"})
	if err != nil || len(m) != 1 || m["u1"].Version != 1 {
		t.Fatalf("after reopen: %v, %v; want only u1 at version 1", m, err)
	}
}
