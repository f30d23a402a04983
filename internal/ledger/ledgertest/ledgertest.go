// Package ledgertest checks that a ledger.Ledger keeps the contract of
// package ledger. Every implementation runs the same suite from its tests:
//
//	func TestContract(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T) ledger.Ledger { ... })
//	}
//
// The lease tests use the real clock with TTLs of up to a second, so the
// suite takes a few seconds.
//
// What it cannot check: durability across a crash or reopen, and behaviour
// under several processes; implementations test those themselves.
package ledgertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// Run runs the contract suite. open returns a new, empty ledger for each
// subtest; it should register its own cleanup (Close) with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) ledger.Ledger) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l ledger.Ledger)
	}{
		{"GetUnknown", testGetUnknown},
		{"CreateThenGet", testCreateThenGet},
		{"ConditionalWrites", testConditionalWrites},
		{"ConflictChangesNothing", testConflictChangesNothing},
		{"MultiRecordAllOrNone", testMultiRecordAllOrNone},
		{"MultiRecordCommit", testMultiRecordCommit},
		{"SameRecordTwiceInOnePut", testSameRecordTwice},
		{"EmptyPut", testEmptyPut},
		{"MailboxesAreSeparate", testMailboxesSeparate},
		{"GetSubset", testGetSubset},
		{"ListOrder", testListOrder},
		{"ReturnsCopies", testReturnsCopies},
		{"UIDLCharacters", testUIDLCharacters},
		{"TimeInstantsKept", testTimeInstants},
		{"CancelledContext", testCancelledContext},
		{"ConcurrentPutOneWinnerPerVersion", testConcurrentOneWinner},
		{"ConcurrentIncrementsLoseNothing", testConcurrentIncrements},
		{"LeaseExclusive", testLeaseExclusive},
		{"LeasePerMailbox", testLeasePerMailbox},
		{"LeaseRelease", testLeaseRelease},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseRenewExtends", testLeaseRenewExtends},
		{"LeaseLost", testLeaseLost},
		{"LeaseInvalidArguments", testLeaseInvalid},
		{"DuplicateIndexFindsCopy", testDupFindsCopy},
		{"DuplicateIndexAllOrNone", testDupAllOrNone},
		{"DuplicateIndexNeverBeforeRecord", testDupNeverBeforeRecord},
		{"DuplicateIndexExpiry", testDupExpiry},
		{"DuplicateIndexNoMessageID", testDupNoMessageID},
		{"DuplicateIndexRetryOfOwnRecord", testDupRetryOwnRecord},
		{"DuplicateIndexCase", testDupCase},
		{"DuplicateIndexLaterCopyReplaces", testDupLaterReplaces},
		{"DuplicateIndexKeysDoNotCollide", testDupKeysSeparate},
	}
	for _, tt := range append(append(tests, claimTests...), lifeTests...) {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

const box = "user@example.com"

var t0 = time.Date(2024, 5, 17, 8, 30, 15, 123456789, time.UTC)

// newRecord returns a fully populated record of box, not yet stored.
func newRecord(mailbox, uidl string) *ledger.Record {
	return &ledger.Record{
		Mailbox:       mailbox,
		UIDL:          uidl,
		FirstSeen:     t0,
		Size:          20480,
		ArchiveKey:    "user@example.com/2024/05/17/" + uidl + ".eml",
		SHA256:        strings.Repeat("ab", 32),
		ArchivedAt:    t0.Add(time.Second),
		MessageID:     "id-" + uidl + "@example.com",
		Sender:        "sender@example.org",
		Needs8BitMIME: true,
		NeedsSMTPUTF8: false,
		Recipients: []ledger.Recipient{
			{Address: "a@example.com", Status: ledger.Accepted, Code: 250, Enhanced: "2.0.0", Reply: "queued as 1234", At: t0.Add(2 * time.Second)},
			{Address: "b@example.com", Status: ledger.Deferred, Code: 451, Enhanced: "4.2.2", Reply: "mailbox full", At: t0.Add(2 * time.Second)},
		},
		Attempts:    1,
		LastAttempt: t0.Add(2 * time.Second),
		NextAttempt: t0.Add(5 * time.Minute),
		LastError:   "451 4.2.2 mailbox full",
	}
}

func ctx() context.Context { return context.Background() }

// encode gives a record's JSON, the form in which records are compared.
func encode(t *testing.T, r *ledger.Record) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustPut(t *testing.T, l ledger.Ledger, recs ...*ledger.Record) {
	t.Helper()
	if err := l.Put(ctx(), recs...); err != nil {
		t.Fatalf("Put: %v", err)
	}
}

// stored returns the record of mailbox/uidl, or nil.
func stored(t *testing.T, l ledger.Ledger, mailbox, uidl string) *ledger.Record {
	t.Helper()
	m, err := l.Get(ctx(), mailbox, []string{uidl})
	if err != nil {
		t.Fatalf("Get(%s, %q): %v", mailbox, uidl, err)
	}
	return m[uidl]
}

func wantConflict(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("Put = %v, want an error wrapping ledger.ErrConflict", err)
	}
}

func testGetUnknown(t *testing.T, l ledger.Ledger) {
	m, err := l.Get(ctx(), box, []string{"a", "b"})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(m) != 0 {
		t.Fatalf("Get on an empty ledger = %v, want no records", m)
	}
	list, err := l.List(ctx(), box)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 0 {
		t.Fatalf("List on an empty ledger = %v, want no records", list)
	}
}

func testCreateThenGet(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "uidl-1")
	mustPut(t, l, r)
	if r.Version != 1 {
		t.Fatalf("Version after create = %d, want 1", r.Version)
	}
	got := stored(t, l, box, "uidl-1")
	if got == nil {
		t.Fatalf("record not found after Put")
	}
	if encode(t, got) != encode(t, r) {
		t.Fatalf("Get = %s\nwant %s", encode(t, got), encode(t, r))
	}
}

func testConditionalWrites(t *testing.T, l ledger.Ledger) {
	// Each step puts a copy of the record with the given Version; the
	// stored record starts absent.
	steps := []struct {
		name        string
		version     int64
		conflict    bool
		wantStored  int64 // stored Version after the step (0 = absent)
		attemptsSet int
	}{
		{"update of absent record", 3, true, 0, 1},
		{"create", 0, false, 1, 1},
		{"double create", 0, true, 1, 2},
		{"update from current", 1, false, 2, 3},
		{"update from stale", 1, true, 2, 4},
		{"update from future", 7, true, 2, 5},
		{"update from current again", 2, false, 3, 6},
	}
	for _, s := range steps {
		r := newRecord(box, "cond")
		r.Version = s.version
		r.Attempts = s.attemptsSet
		err := l.Put(ctx(), r)
		if s.conflict {
			if !errors.Is(err, ledger.ErrConflict) {
				t.Fatalf("%s: Put = %v, want ErrConflict", s.name, err)
			}
			if r.Version != s.version {
				t.Fatalf("%s: caller's Version changed to %d on conflict", s.name, r.Version)
			}
		} else {
			if err != nil {
				t.Fatalf("%s: Put = %v", s.name, err)
			}
			if r.Version != s.version+1 {
				t.Fatalf("%s: caller's Version = %d, want %d", s.name, r.Version, s.version+1)
			}
		}
		got := stored(t, l, box, "cond")
		switch {
		case s.wantStored == 0 && got != nil:
			t.Fatalf("%s: record stored, want none", s.name)
		case s.wantStored != 0 && got == nil:
			t.Fatalf("%s: record absent", s.name)
		case got != nil && got.Version != s.wantStored:
			t.Fatalf("%s: stored Version = %d, want %d", s.name, got.Version, s.wantStored)
		case got != nil && !s.conflict && got.Attempts != s.attemptsSet:
			t.Fatalf("%s: stored Attempts = %d, want %d", s.name, got.Attempts, s.attemptsSet)
		}
	}
}

func testConflictChangesNothing(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "x")
	mustPut(t, l, r)
	before := encode(t, r)
	stale := newRecord(box, "x") // Version 0: written from state read before the create
	stale.Attempts = 99
	wantConflict(t, l.Put(ctx(), stale))
	if got := stored(t, l, box, "x"); encode(t, got) != before {
		t.Fatalf("stored record changed by a conflicting Put:\n%s\nwant %s", encode(t, got), before)
	}
}

func testMultiRecordAllOrNone(t *testing.T, l ledger.Ledger) {
	existing := newRecord(box, "existing")
	mustPut(t, l, existing)
	fresh := newRecord(box, "fresh")
	otherBox := newRecord("other@example.com", "fresh")
	stale := newRecord(box, "existing") // Version 0, but the record exists
	err := l.Put(ctx(), fresh, otherBox, stale)
	wantConflict(t, err)
	if fresh.Version != 0 || otherBox.Version != 0 || stale.Version != 0 {
		t.Fatalf("caller Versions changed by a failed Put: %d %d %d", fresh.Version, otherBox.Version, stale.Version)
	}
	if stored(t, l, box, "fresh") != nil || stored(t, l, "other@example.com", "fresh") != nil {
		t.Fatalf("a record of a failed multi-record Put was written")
	}
	if got := stored(t, l, box, "existing"); got.Version != 1 || got.Attempts != existing.Attempts {
		t.Fatalf("existing record changed by a failed Put: %s", encode(t, got))
	}
}

func testMultiRecordCommit(t *testing.T, l ledger.Ledger) {
	a := newRecord(box, "a")
	mustPut(t, l, a)
	a.Attempts = 2
	b := newRecord(box, "b")
	c := newRecord("other@example.com", "c")
	mustPut(t, l, a, b, c)
	if a.Version != 2 || b.Version != 1 || c.Version != 1 {
		t.Fatalf("Versions after Put = %d %d %d, want 2 1 1", a.Version, b.Version, c.Version)
	}
	for _, r := range []*ledger.Record{a, b, c} {
		if got := stored(t, l, r.Mailbox, r.UIDL); got == nil || encode(t, got) != encode(t, r) {
			t.Fatalf("stored %s/%s = %v, want %s", r.Mailbox, r.UIDL, got, encode(t, r))
		}
	}
}

func testSameRecordTwice(t *testing.T, l ledger.Ledger) {
	a := newRecord(box, "twice")
	b := newRecord(box, "twice")
	other := newRecord(box, "other")
	if err := l.Put(ctx(), other, a, b); err == nil {
		t.Fatalf("Put naming one record twice succeeded")
	}
	if stored(t, l, box, "twice") != nil || stored(t, l, box, "other") != nil {
		t.Fatalf("records written by a rejected Put")
	}
}

func testEmptyPut(t *testing.T, l ledger.Ledger) {
	if err := l.Put(ctx()); err != nil {
		t.Fatalf("Put of no records = %v, want nil", err)
	}
}

func testMailboxesSeparate(t *testing.T, l ledger.Ledger) {
	a := newRecord("a@example.com", "same-uidl")
	b := newRecord("b@example.com", "same-uidl")
	b.Size = 7
	mustPut(t, l, a)
	mustPut(t, l, b) // Version 0 is right: the UIDL is new in this mailbox
	if got := stored(t, l, "a@example.com", "same-uidl"); got.Size != a.Size {
		t.Fatalf("mailbox a's record changed by mailbox b's: size %d", got.Size)
	}
	// Prefixes of one another must not mix either.
	c := newRecord("a@example.co", "same-uidl")
	mustPut(t, l, c)
	list, err := l.List(ctx(), "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Mailbox != "a@example.com" {
		t.Fatalf("List(a@example.com) = %d records, want exactly its own one", len(list))
	}
}

func testGetSubset(t *testing.T, l ledger.Ledger) {
	for _, u := range []string{"1", "2", "3"} {
		mustPut(t, l, newRecord(box, u))
	}
	m, err := l.Get(ctx(), box, []string{"1", "3", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["1"] == nil || m["3"] == nil {
		t.Fatalf("Get = %v, want exactly records 1 and 3", m)
	}
	if _, ok := m["missing"]; ok {
		t.Fatalf("Get holds a key for a UIDL without record")
	}
	if m["1"].UIDL != "1" || m["3"].UIDL != "3" {
		t.Fatalf("Get keyed records under the wrong UIDL")
	}
	m, err = l.Get(ctx(), box, nil)
	if err != nil || len(m) != 0 {
		t.Fatalf("Get of no UIDLs = %v, %v; want no records", m, err)
	}
}

func testListOrder(t *testing.T, l ledger.Ledger) {
	// Put in an order that is neither FirstSeen nor UIDL order.
	in := []struct {
		uidl string
		at   time.Duration
	}{{"m", 2}, {"b", 1}, {"z", 0}, {"a", 1}, {"c", 3}, {"y", 0}}
	for _, x := range in {
		r := newRecord(box, x.uidl)
		r.FirstSeen = t0.Add(x.at * time.Minute)
		mustPut(t, l, r)
	}
	mustPut(t, l, newRecord("other@example.com", "0"))
	list, err := l.List(ctx(), box)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range list {
		got = append(got, r.UIDL)
	}
	if want := "y z a b m c"; strings.Join(got, " ") != want {
		t.Fatalf("List order = %v, want %s", got, want)
	}
}

func testReturnsCopies(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "copy")
	mustPut(t, l, r)
	want := encode(t, r)
	r.Attempts = 50 // the caller's record is not the stored one
	r.Recipients[0].Status = ledger.Rejected
	got := stored(t, l, box, "copy")
	got.Attempts = 60
	got.Recipients[1].Status = ledger.Rejected
	list, err := l.List(ctx(), box)
	if err != nil {
		t.Fatal(err)
	}
	list[0].Size = 1
	if again := stored(t, l, box, "copy"); encode(t, again) != want {
		t.Fatalf("stored record changed without Put:\n%s\nwant %s", encode(t, again), want)
	}
}

func testUIDLCharacters(t *testing.T, l ledger.Ledger) {
	// RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21..0x7E.
	var all strings.Builder
	for c := byte(0x21); c <= 0x7e; c++ {
		all.WriteByte(c)
	}
	uidls := []string{
		all.String()[:70], all.String()[70:],
		"a/b", "a\\b", "..", "%00", "x:y", "~", strings.Repeat("Z", 70),
	}
	for _, u := range uidls {
		mustPut(t, l, newRecord(box, u))
	}
	m, err := l.Get(ctx(), box, uidls)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range uidls {
		if m[u] == nil || m[u].UIDL != u {
			t.Fatalf("record of UIDL %q not found back", u)
		}
	}
	list, err := l.List(ctx(), box)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(uidls) {
		t.Fatalf("List = %d records, want %d", len(list), len(uidls))
	}
}

func testTimeInstants(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "zone")
	zone := time.FixedZone("CEST", 2*60*60)
	r.FirstSeen = t0.In(zone)
	r.DeletedAt = t0.Add(time.Hour).In(zone)
	mustPut(t, l, r)
	got := stored(t, l, box, "zone")
	if !got.FirstSeen.Equal(r.FirstSeen) || !got.DeletedAt.Equal(r.DeletedAt) {
		t.Fatalf("times came back as %s / %s, want instants %s / %s", got.FirstSeen, got.DeletedAt, r.FirstSeen, r.DeletedAt)
	}
	if !got.Deleted() {
		t.Fatalf("Deleted() = false after storing DeletedAt")
	}
	blank := newRecord(box, "zero-times")
	blank.ArchivedAt, blank.LastAttempt, blank.NextAttempt, blank.DeletedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	mustPut(t, l, blank)
	if got := stored(t, l, box, "zero-times"); !got.DeletedAt.IsZero() || !got.NextAttempt.IsZero() || got.Deleted() {
		t.Fatalf("zero times came back non-zero: %s", encode(t, got))
	}
}

func testCancelledContext(t *testing.T, l ledger.Ledger) {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	r := newRecord(box, "cancelled")
	if err := l.Put(c, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled context = %v, want context.Canceled", err)
	}
	if r.Version != 0 {
		t.Fatalf("Version changed by a cancelled Put")
	}
	if stored(t, l, box, "cancelled") != nil {
		t.Fatalf("cancelled Put wrote its record")
	}
	if _, err := l.Get(c, box, []string{"cancelled"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with cancelled context = %v, want context.Canceled", err)
	}
	if _, err := l.List(c, box); !errors.Is(err, context.Canceled) {
		t.Fatalf("List with cancelled context = %v, want context.Canceled", err)
	}
	if _, err := l.Lease(c, box, "owner", time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lease with cancelled context = %v, want context.Canceled", err)
	}
}

// Writers that all read the same Version race to Put: exactly one wins each round.
func testConcurrentOneWinner(t *testing.T, l ledger.Ledger) {
	const writers, rounds = 6, 5
	mustPut(t, l, newRecord(box, "race"))
	for round := range rounds {
		base := stored(t, l, box, "race")
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			winners   []int
			conflicts int
			others    []error
		)
		for w := range writers {
			rec := *base
			rec.Attempts = w
			wg.Go(func() {
				err := l.Put(ctx(), &rec)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, w)
				case errors.Is(err, ledger.ErrConflict):
					conflicts++
				default:
					others = append(others, err)
				}
			})
		}
		wg.Wait()
		if len(others) > 0 {
			t.Fatalf("round %d: unexpected errors: %v", round, others)
		}
		if len(winners) != 1 || conflicts != writers-1 {
			t.Fatalf("round %d: %d winners and %d conflicts, want 1 and %d", round, len(winners), conflicts, writers-1)
		}
		got := stored(t, l, box, "race")
		if got.Version != base.Version+1 || got.Attempts != winners[0] {
			t.Fatalf("round %d: stored Version %d Attempts %d, want %d and the winner's %d", round, got.Version, got.Attempts, base.Version+1, winners[0])
		}
	}
}

// Read-modify-write loops retrying on conflict lose no increment.
func testConcurrentIncrements(t *testing.T, l ledger.Ledger) {
	const writers, each = 4, 10
	mustPut(t, l, newRecord(box, "counter"))
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for n := 0; n < each; {
				m, err := l.Get(ctx(), box, []string{"counter"})
				if err != nil {
					errs <- err
					return
				}
				r := m["counter"]
				r.Attempts++
				switch err := l.Put(ctx(), r); {
				case err == nil:
					n++
				case errors.Is(err, ledger.ErrConflict):
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	got := stored(t, l, box, "counter")
	want := newRecord(box, "counter").Attempts + writers*each
	if got.Attempts != want || got.Version != int64(1+writers*each) {
		t.Fatalf("after %d increments: Attempts %d Version %d, want %d and %d", writers*each, got.Attempts, got.Version, want, 1+writers*each)
	}
}

func mustLease(t *testing.T, l ledger.Ledger, mailbox, owner string, ttl time.Duration) ledger.Lease {
	t.Helper()
	le, err := l.Lease(ctx(), mailbox, owner, ttl)
	if err != nil {
		t.Fatalf("Lease(%s, %s): %v", mailbox, owner, err)
	}
	return le
}

func wantHeld(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ledger.ErrLeaseHeld) {
		t.Fatalf("got %v, want an error wrapping ledger.ErrLeaseHeld", err)
	}
}

func testLeaseExclusive(t *testing.T, l ledger.Ledger) {
	a := mustLease(t, l, box, "poller-a", time.Minute)
	_, err := l.Lease(ctx(), box, "poller-b", time.Minute)
	wantHeld(t, err)
	// The holder may take it again (a restarted run of the same poller).
	again := mustLease(t, l, box, "poller-a", time.Minute)
	if err := a.Renew(ctx()); err != nil {
		t.Fatalf("Renew by holder: %v", err)
	}
	if err := again.Release(ctx()); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func testLeasePerMailbox(t *testing.T, l ledger.Ledger) {
	mustLease(t, l, "a@example.com", "poller-a", time.Minute)
	mustLease(t, l, "b@example.com", "poller-b", time.Minute)
	_, err := l.Lease(ctx(), "a@example.com", "poller-b", time.Minute)
	wantHeld(t, err)
}

func testLeaseRelease(t *testing.T, l ledger.Ledger) {
	a := mustLease(t, l, box, "poller-a", time.Minute)
	if err := a.Release(ctx()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	b := mustLease(t, l, box, "poller-b", time.Minute)
	// a's second Release must not free b's lease.
	if err := a.Release(ctx()); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	_, err := l.Lease(ctx(), box, "poller-c", time.Minute)
	wantHeld(t, err)
	if err := a.Renew(ctx()); err == nil {
		t.Fatalf("Renew of a released lease succeeded")
	}
	if err := b.Release(ctx()); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func testLeaseExpiry(t *testing.T, l ledger.Ledger) {
	mustLease(t, l, box, "poller-a", 200*time.Millisecond)
	_, err := l.Lease(ctx(), box, "poller-b", time.Minute)
	wantHeld(t, err)
	time.Sleep(400 * time.Millisecond)
	mustLease(t, l, box, "poller-b", time.Minute)
}

func testLeaseRenewExtends(t *testing.T, l ledger.Ledger) {
	const ttl = time.Second
	a := mustLease(t, l, box, "poller-a", ttl)
	time.Sleep(ttl * 6 / 10)
	if err := a.Renew(ctx()); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	time.Sleep(ttl * 6 / 10) // past the first expiry, before the renewed one
	_, err := l.Lease(ctx(), box, "poller-b", time.Minute)
	wantHeld(t, err)
}

func testLeaseLost(t *testing.T, l ledger.Ledger) {
	a := mustLease(t, l, box, "poller-a", 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	b := mustLease(t, l, box, "poller-b", time.Minute)
	wantHeld(t, a.Renew(ctx()))
	// Releasing a lost lease is not an error and leaves the new holder's.
	if err := a.Release(ctx()); err != nil {
		t.Fatalf("Release of a lost lease: %v", err)
	}
	_, err := l.Lease(ctx(), box, "poller-c", time.Minute)
	wantHeld(t, err)
	if err := b.Renew(ctx()); err != nil {
		t.Fatalf("Renew by the new holder: %v", err)
	}
}

func testLeaseInvalid(t *testing.T, l ledger.Ledger) {
	for _, c := range []struct {
		mailbox, owner string
		ttl            time.Duration
	}{{box, "", time.Minute}, {box, "a", 0}, {box, "a", -time.Second}, {"", "a", time.Minute}} {
		if _, err := l.Lease(ctx(), c.mailbox, c.owner, c.ttl); err == nil {
			t.Errorf("Lease(%q, %q, %s) succeeded", c.mailbox, c.owner, c.ttl)
		}
	}
}

// accept is a duplicate-index entry for rcpt of r's Message-ID, accepted
// at t0 and expiring at expires.
func accept(r *ledger.Record, rcpt string, expires time.Time) ledger.Acceptance {
	return ledger.Acceptance{MessageID: r.MessageID, Recipient: rcpt, At: t0.Add(2 * time.Second), Expires: expires}
}

func mustPutAccepted(t *testing.T, l ledger.Ledger, r *ledger.Record, acc ...ledger.Acceptance) {
	t.Helper()
	if err := l.PutAccepted(ctx(), r, acc); err != nil {
		t.Fatalf("PutAccepted: %v", err)
	}
}

func accepted(t *testing.T, l ledger.Ledger, messageID string, rcpts ...string) map[string]ledger.Acceptance {
	t.Helper()
	m, err := l.Accepted(ctx(), messageID, rcpts)
	if err != nil {
		t.Fatalf("Accepted(%q, %v): %v", messageID, rcpts, err)
	}
	return m
}

// later is an expiry safely in the future of the real clock.
func later() time.Time { return time.Now().Add(time.Hour).UTC() }

// The entry names the record it was written with; only the recipients
// asked for and stored are returned; the record is stored as by Put.
func testDupFindsCopy(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "u1")
	exp := later()
	mustPutAccepted(t, l, r, accept(r, "a@example.com", exp))
	if r.Version != 1 {
		t.Fatalf("Version after PutAccepted = %d, want 1", r.Version)
	}
	if got := stored(t, l, box, "u1"); got == nil || encode(t, got) != encode(t, r) {
		t.Fatalf("stored record %+v, want %+v", got, r)
	}
	m := accepted(t, l, r.MessageID, "a@example.com", "b@example.com")
	a, ok := m["a@example.com"]
	if len(m) != 1 || !ok {
		t.Fatalf("Accepted = %+v, want only a@example.com", m)
	}
	if a.Mailbox != box || a.UIDL != "u1" || a.MessageID != r.MessageID || a.Recipient != "a@example.com" ||
		!a.At.Equal(t0.Add(2*time.Second)) || !a.Expires.Equal(exp) {
		t.Errorf("entry %+v does not name the copy it was written with", a)
	}
	if m := accepted(t, l, "other@example.com", "a@example.com"); len(m) != 0 {
		t.Errorf("another Message-ID found %+v", m)
	}
	if m := accepted(t, l, r.MessageID); len(m) != 0 {
		t.Errorf("no recipients asked, got %+v", m)
	}
}

// A PutAccepted whose record conflicts writes no entry either.
func testDupAllOrNone(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "u1")
	mustPut(t, l, r)
	stale := *r
	stale.Version = 0
	wantConflict(t, l.PutAccepted(ctx(), &stale, []ledger.Acceptance{accept(r, "a@example.com", later())}))
	if m := accepted(t, l, r.MessageID, "a@example.com"); len(m) != 0 {
		t.Fatalf("entry written by a conflicting PutAccepted: %+v", m)
	}
	if stale.Version != 0 {
		t.Errorf("conflicting PutAccepted changed Version to %d", stale.Version)
	}
}

// An entry is never visible before the 250 it stands for is recorded: a
// reader racing PutAccepted that finds an entry always finds the record
// holding that acceptance (whether the store writes both at once or the
// record first).
func testDupNeverBeforeRecord(t *testing.T, l ledger.Ledger) {
	const n = 30
	recs := make([]*ledger.Record, n)
	for i := range recs {
		recs[i] = newRecord(box, fmt.Sprintf("u%d", i))
		recs[i].Recipients[0].Status, recs[i].Recipients[0].Code = ledger.Deferred, 451
		mustPut(t, l, recs[i])
	}
	var (
		writing atomic.Int64 // index of the record being written; n when done
		seen    atomic.Int64 // 1 + the index of the last entry the reader found
		wg      sync.WaitGroup
	)
	done := make(chan struct{}) // the reader stopped
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for {
			i := writing.Load()
			if i >= n {
				return
			}
			r := recs[i]
			m, err := l.Accepted(ctx(), r.MessageID, []string{"a@example.com"})
			if err != nil {
				t.Errorf("Accepted: %v", err)
				return
			}
			if _, ok := m["a@example.com"]; !ok {
				continue
			}
			seen.Store(i + 1)
			got, err := l.Get(ctx(), box, []string{r.UIDL})
			if err != nil {
				t.Errorf("Get: %v", err)
				return
			}
			if g := got[r.UIDL]; g == nil || g.Version < 2 || g.Recipients[0].Status != ledger.Accepted {
				t.Errorf("entry of %s visible while its record is %+v", r.UIDL, g)
				return
			}
		}
	}()
	for i, r := range recs {
		writing.Store(int64(i))
		r.Recipients[0].Status, r.Recipients[0].Code = ledger.Accepted, 250
		if err := l.PutAccepted(ctx(), r, []ledger.Acceptance{accept(r, "a@example.com", later())}); err != nil {
			t.Errorf("PutAccepted %s: %v", r.UIDL, err)
			break
		}
		// Let the reader find the entry before the next write begins.
		for deadline := time.Now().Add(time.Second); seen.Load() <= int64(i) && time.Now().Before(deadline); {
			select {
			case <-done:
				deadline = time.Time{}
			case <-time.After(time.Millisecond):
			}
		}
	}
	writing.Store(n)
	wg.Wait()
	if seen.Load() == 0 {
		t.Error("the reader never found an entry")
	}
}

// An expired entry is never returned; one that expires later is, until then.
func testDupExpiry(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "u1")
	soon := time.Now().Add(700 * time.Millisecond)
	mustPutAccepted(t, l, r,
		accept(r, "gone@example.com", time.Now().Add(-time.Second)),
		accept(r, "soon@example.com", soon))
	m := accepted(t, l, r.MessageID, "gone@example.com", "soon@example.com")
	if _, ok := m["gone@example.com"]; ok {
		t.Errorf("an expired entry was returned: %+v", m)
	}
	if _, ok := m["soon@example.com"]; !ok {
		t.Fatalf("an entry not yet expired is missing: %+v", m)
	}
	time.Sleep(time.Until(soon) + 100*time.Millisecond)
	// A later write gives the store its chance to prune.
	r2 := newRecord(box, "u2")
	mustPutAccepted(t, l, r2, accept(r2, "a@example.com", later()))
	if m := accepted(t, l, r.MessageID, "gone@example.com", "soon@example.com"); len(m) != 0 {
		t.Errorf("entries returned after their expiry: %+v", m)
	}
	if m := accepted(t, l, r2.MessageID, "a@example.com"); len(m) != 1 {
		t.Errorf("pruning removed a live entry: %+v", m)
	}
}

// A message without a Message-ID is never indexed: the record is written,
// no entry is.
func testDupNoMessageID(t *testing.T, l ledger.Ledger) {
	for i, id := range []string{"", "<>", "  "} {
		r := newRecord(box, fmt.Sprintf("u%d", i))
		r.MessageID = id
		mustPutAccepted(t, l, r, accept(r, "a@example.com", later()))
		if got := stored(t, l, box, r.UIDL); got == nil || got.Version != 1 {
			t.Fatalf("Message-ID %q: record not written: %+v", id, got)
		}
		if m := accepted(t, l, id, "a@example.com"); len(m) != 0 {
			t.Errorf("Message-ID %q: found %+v", id, m)
		}
	}
}

// A retry of the same record (after a 4xx for another recipient) adds its
// entry beside the first attempt's; both name the record itself, so a
// caller can tell its own deliveries from another copy's. A later plain
// Put (a deletion mark) leaves the entries alone.
func testDupRetryOwnRecord(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "u1")
	mustPutAccepted(t, l, r, accept(r, "a@example.com", later()))
	r.Recipients[1].Status, r.Recipients[1].Code = ledger.Accepted, 250
	retry := accept(r, "b@example.com", later())
	retry.At = t0.Add(time.Hour)
	mustPutAccepted(t, l, r, retry)
	r.DeletedAt = t0.Add(2 * time.Hour)
	mustPut(t, l, r)
	m := accepted(t, l, r.MessageID, "a@example.com", "b@example.com")
	if len(m) != 2 {
		t.Fatalf("Accepted = %+v, want both recipients", m)
	}
	for rcpt, a := range m {
		if a.Mailbox != box || a.UIDL != "u1" {
			t.Errorf("%s: entry names %s/%s, want the record itself", rcpt, a.Mailbox, a.UIDL)
		}
	}
	if !m["a@example.com"].At.Equal(t0.Add(2*time.Second)) || !m["b@example.com"].At.Equal(t0.Add(time.Hour)) {
		t.Errorf("entries %+v: the retry changed the first attempt's entry", m)
	}
}

// The Message-ID's left part and the recipient's local part are compared
// exactly; the domains without regard to case; angle brackets are ignored.
func testDupCase(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "u1")
	r.MessageID = "Abc.DEF@Example.ORG"
	mustPutAccepted(t, l, r, accept(r, "Alice@Example.COM", later()))
	for _, tc := range []struct {
		id, rcpt string
		found    bool
	}{
		{"Abc.DEF@Example.ORG", "Alice@Example.COM", true},
		{"<Abc.DEF@example.org>", "Alice@example.com", true},
		{"Abc.DEF@EXAMPLE.org", "Alice@EXAMPLE.com", true},
		{"abc.def@example.org", "Alice@example.com", false},
		{"Abc.DEF@example.org", "alice@example.com", false},
	} {
		m := accepted(t, l, tc.id, tc.rcpt)
		a, ok := m[tc.rcpt]
		if ok != tc.found {
			t.Errorf("Accepted(%q, %q) found=%v, want %v", tc.id, tc.rcpt, ok, tc.found)
		}
		if ok && (a.MessageID != "Abc.DEF@example.org" || a.Recipient != "Alice@example.com") {
			t.Errorf("entry keyed %q/%q, want the normalized Abc.DEF@example.org/Alice@example.com", a.MessageID, a.Recipient)
		}
	}
}

// An entry for the same Message-ID and recipient from another copy
// replaces the earlier one (both were delivered).
func testDupLaterReplaces(t *testing.T, l ledger.Ledger) {
	r1, r2 := newRecord(box, "u1"), newRecord("other@example.com", "u9")
	r2.MessageID = r1.MessageID
	mustPutAccepted(t, l, r1, accept(r1, "a@example.com", later()))
	second := accept(r2, "a@example.com", later().Add(time.Minute))
	second.At = t0.Add(time.Minute)
	mustPutAccepted(t, l, r2, second)
	a := accepted(t, l, r1.MessageID, "a@example.com")["a@example.com"]
	if a.Mailbox != "other@example.com" || a.UIDL != "u9" || !a.At.Equal(t0.Add(time.Minute)) {
		t.Errorf("entry %+v, want the later copy's", a)
	}
}

// Message-ID and recipient cannot run into each other.
func testDupKeysSeparate(t *testing.T, l ledger.Ledger) {
	r := newRecord(box, "u1")
	r.MessageID = "a"
	mustPutAccepted(t, l, r, accept(r, "bc@d.example", later()))
	if m := accepted(t, l, "ab", "c@d.example"); len(m) != 0 {
		t.Errorf("Message-ID %q recipient %q found the entry of %q/%q: %+v", "ab", "c@d.example", "a", "bc@d.example", m)
	}
	if m := accepted(t, l, "a", "bc@d.example"); len(m) != 1 {
		t.Errorf("entry not found: %+v", m)
	}
}
