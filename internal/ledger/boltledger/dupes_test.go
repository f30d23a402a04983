package boltledger

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/popconnector/popconnector/internal/ledger"
)

// indexSize counts the entries and the expiry keys of ix (the duplicate
// index when none is given).
func indexSize(t *testing.T, l *Ledger, ix ...expiringIndex) (entries, expiries int) {
	t.Helper()
	which := dupIndex
	if len(ix) > 0 {
		which = ix[0]
	}
	err := l.view(func(tx *bolt.Tx) error {
		entries = tx.Bucket(which.data).Stats().KeyN
		expiries = tx.Bucket(which.expiry).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries, expiries
}

// Expired entries are pruned by later writes, oldest first, at most
// pruneBatch plus the entries written per transaction; a replaced entry
// leaves no stale expiry key behind, and a live one is never pruned.
func TestDuplicateIndexPruning(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := openAt(t, tempPath(t), Options{Now: clock})
	ctx := context.Background()

	const n = 200
	old := &ledger.Record{Mailbox: "sales", UIDL: "old", MessageID: "list-1@lists.example"}
	var acc []ledger.Acceptance
	for i := range n {
		acc = append(acc, ledger.Acceptance{MessageID: old.MessageID, Recipient: fmt.Sprintf("user%d@corp.example", i), At: now, Expires: now.Add(time.Hour)})
	}
	if err := l.PutAccepted(ctx, old, acc); err != nil {
		t.Fatal(err)
	}
	// Replacing an entry moves its expiry; the old expiry key goes.
	keep := &ledger.Record{Mailbox: "support", UIDL: "keep", MessageID: old.MessageID}
	if err := l.PutAccepted(ctx, keep, []ledger.Acceptance{{MessageID: old.MessageID, Recipient: "user0@corp.example", At: now, Expires: now.Add(48 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if e, x := indexSize(t, l); e != n || x != n {
		t.Fatalf("index %d entries, %d expiry keys; want %d each", e, x, n)
	}

	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	for i := 1; ; i++ {
		r := &ledger.Record{Mailbox: "sales", UIDL: fmt.Sprintf("new%d", i), MessageID: fmt.Sprintf("m%d@corp.example", i)}
		if err := l.PutAccepted(ctx, r, []ledger.Acceptance{{MessageID: r.MessageID, Recipient: "x@corp.example", At: now, Expires: now.Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		e, x := indexSize(t, l)
		// Live: the replaced entry and the i new ones.
		want := max(n-i*(pruneBatch+1), 1) + i
		if e != want || x != want {
			t.Fatalf("after write %d: %d entries, %d expiry keys; want %d each", i, e, x, want)
		}
		if want == 1+i {
			break
		}
	}
	m, err := l.Accepted(ctx, old.MessageID, []string{"user0@corp.example", "user1@corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m["user0@corp.example"].UIDL != "keep" {
		t.Errorf("Accepted = %+v, want only the replaced, still live entry", m)
	}
}
