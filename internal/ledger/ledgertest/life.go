package ledgertest

import (
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// lifeTests are the suite's cases for the fields of a message's life:
// stored failures, one timer per purpose, and the upgrade of records in
// the shape older builds wrote.
var lifeTests = []struct {
	name string
	fn   func(t *testing.T, l ledger.Ledger)
}{
	{"FailureAndTimersStored", testLifeFieldsStored},
	{"UpgradeOnRead", testUpgradeOnRead},
}

func testLifeFieldsStored(t *testing.T, l ledger.Ledger) {
	held := newRecord(box, "held")
	held.Recipients[0].Status = ledger.Pending
	held.Recipients[1].Failure = &ledger.Failure{Op: "data", Code: 451, Enhanced: "4.2.2", Temporary: true, Message: "mailbox full"}
	held.Held, held.NextAttempt, held.NextRefetch = "listed 10, sent 9", time.Time{}, t0.Add(time.Hour)
	aside := newRecord(box, "aside")
	aside.Recipients[1] = ledger.Recipient{Address: "b@example.com", Status: ledger.Rejected, At: t0,
		Failure: &ledger.Failure{Op: "mail", Local: true, Message: "message of 30000000 octets exceeds the server's SIZE 25000000"}}
	aside.NextAttempt, aside.NextNotice, aside.TooLargeLimit = time.Time{}, t0.Add(2*time.Hour), 25000000
	aside.Disposition, aside.DispositionAt, aside.BadmailKey = ledger.DispositionBadmail, t0, "badmail/x.eml"
	mustPut(t, l, held, aside)
	list, err := l.List(ctx(), box)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("List = %d records, want 2", len(list))
	}
	for _, want := range []*ledger.Record{aside, held} { // FirstSeen ties: UIDL order
		got := stored(t, l, box, want.UIDL)
		if encode(t, got) != encode(t, want) {
			t.Errorf("Get = %s\nwant %s", encode(t, got), encode(t, want))
		}
	}
	for i, want := range []*ledger.Record{aside, held} {
		if encode(t, list[i]) != encode(t, want) {
			t.Errorf("List[%d] = %s\nwant %s", i, encode(t, list[i]), encode(t, want))
		}
	}
}

// A record in the shape an older build wrote (NextAttempt standing for
// every timer) reads upgraded from Get and from List.
func testUpgradeOnRead(t *testing.T, l ledger.Ledger) {
	held := newRecord(box, "old-held")
	held.Held, held.NextAttempt = "listed 10, sent 9", t0.Add(time.Hour)
	aside := newRecord(box, "old-badmail")
	aside.Disposition, aside.BadmailKey, aside.NextAttempt = ledger.DispositionBadmail, "badmail/x.eml", t0.Add(2*time.Hour)
	deferred := newRecord(box, "deferred")
	mustPut(t, l, held, aside, deferred)

	wantHeld, wantAside, wantDeferred := *held, *aside, *deferred
	wantHeld.NextRefetch, wantHeld.NextAttempt = held.NextAttempt, time.Time{}
	wantAside.NextNotice, wantAside.NextAttempt = aside.NextAttempt, time.Time{}
	list, err := l.List(ctx(), box)
	if err != nil {
		t.Fatal(err)
	}
	byUIDL := map[string]*ledger.Record{}
	for _, r := range list {
		byUIDL[r.UIDL] = r
	}
	for _, want := range []*ledger.Record{&wantHeld, &wantAside, &wantDeferred} {
		if got := stored(t, l, box, want.UIDL); encode(t, got) != encode(t, want) {
			t.Errorf("Get = %s\nwant %s", encode(t, got), encode(t, want))
		}
		if got := byUIDL[want.UIDL]; got == nil || encode(t, got) != encode(t, want) {
			t.Errorf("List has %s\nwant %s", encode(t, got), encode(t, want))
		}
	}
	// The upgraded record is what the next Put stores.
	up := stored(t, l, box, "old-held")
	mustPut(t, l, up)
	if got := stored(t, l, box, "old-held"); encode(t, got) != encode(t, up) {
		t.Errorf("after Put of the upgraded record: %s\nwant %s", encode(t, got), encode(t, up))
	}
}
