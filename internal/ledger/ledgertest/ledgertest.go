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
	"strings"
	"sync"
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
	}
	for _, tt := range tests {
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
