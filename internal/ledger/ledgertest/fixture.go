package ledgertest

import (
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// The compatibility fixture: a few records in the states the connector
// writes, with their duplicate-index entries, written once by the code of
// commit eabc1cd (before records had a Fingerprint) into the files each
// implementation keeps in its testdata/. WriteFixture is that generator;
// CheckFixture reads a ledger loaded from such a file and checks that
// today's code sees what was written then.

// FixtureNow is the clock the fixture was written with and must be read
// with: its duplicate-index entries expire a week after it.
var FixtureNow = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

// Fixture lease: held by FixtureLeaseOwner until an hour after FixtureNow.
const (
	FixtureLeaseMailbox = "global@example.com"
	FixtureLeaseOwner   = "poller-eabc1cd"
	FixtureLeaseTTL     = time.Hour
)

// fixtureEntry is one record of the fixture and how it was written: Put
// of rec, then, with accepted, PutAccepted, then, with deleted, Put of
// the deletion mark. The other fields say how today's code reads it.
type fixtureEntry struct {
	rec      ledger.Record
	accepted []string // recipients whose 250 the PutAccepted indexes
	deleted  time.Time

	// upgraded changes rec as ledger.Record.Upgrade does on every read
	// (spelled out here, not by calling it); nil when the record reads as
	// written.
	upgraded func(r *ledger.Record)
	state    ledger.State               // at FixtureNow
	failures map[string]*ledger.Failure // LastFailure by recipient; absent = nil
}

func fixtureEntries() []fixtureEntry {
	t := FixtureNow.Add(-time.Hour)
	cest := time.FixedZone("CEST", 2*60*60)
	base := func(mailbox, uidl, id string, rcpts ...string) ledger.Record {
		r := ledger.Record{
			Mailbox: mailbox, UIDL: uidl, FirstSeen: t, Size: 4096, ListSize: 4110,
			ArchiveKey: mailbox + "/2026/06/01/" + uidl + ".eml", SHA256: strings.Repeat("5e", 32),
			ArchivedAt: t.Add(time.Second), MessageID: id, Sender: "sender@example.org",
		}
		for _, a := range rcpts {
			r.Recipients = append(r.Recipients, ledger.Recipient{Address: a, Status: ledger.Pending})
		}
		return r
	}
	acc := func(addr string, at time.Time) ledger.Recipient {
		return ledger.Recipient{Address: addr, Status: ledger.Accepted, Code: 250, Enhanced: "2.6.0", Reply: "queued as " + addr, At: at}
	}

	archived := base("user@example.com", "1001.archived", "archived.1@example.org", "a@contoso.example")
	archived.Needs8BitMIME = true

	delivered := base("user@example.com", "1002.delivered", "Delivered.2@Example.ORG", "a@contoso.example", "B@Contoso.EXAMPLE")
	delivered.Recipients = []ledger.Recipient{acc("a@contoso.example", t.Add(2*time.Second)), acc("B@Contoso.EXAMPLE", t.Add(2*time.Second))}
	delivered.Attempts, delivered.LastAttempt = 1, t.Add(2*time.Second)

	deferred := base("user@example.com", "1003.deferred", "deferred.3@example.org", "a@contoso.example")
	deferred.Recipients[0] = ledger.Recipient{Address: "a@contoso.example", Status: ledger.Deferred, Code: 451, Enhanced: "4.2.2", Reply: "mailbox full", At: t.Add(3 * time.Second)}
	deferred.Attempts, deferred.LastAttempt, deferred.NextAttempt = 2, t.Add(3*time.Second), t.Add(18*time.Minute)
	deferred.LastError = "451 4.2.2 mailbox full"

	rejected := base("user@example.com", "1004.rejected", "rejected.4@example.org", "nobody@contoso.example")
	rejected.Recipients[0] = ledger.Recipient{Address: "nobody@contoso.example", Status: ledger.Rejected, Code: 550, Enhanced: "5.1.10", Reply: "recipient not found", At: t.Add(4 * time.Second)}
	rejected.Attempts, rejected.LastAttempt, rejected.NextAttempt = 1, t.Add(4*time.Second), t.Add(4*time.Hour)
	rejected.LastError = "550 5.1.10 recipient not found"
	rejected.Disposition, rejected.DispositionReason, rejected.DispositionAt = ledger.DispositionDeletedRejected, "550 listed under undeliverable delete", t.Add(4*time.Second)
	rejected.Notified = []string{"rejected"}

	badmail := base("user@example.com", "1005.badmail", "badmail.5@example.org", "a@contoso.example")
	badmail.TraceHops = 9
	badmail.Disposition, badmail.DispositionReason, badmail.DispositionAt = ledger.DispositionBadmail, "mail loop: 9 Received fields by this connector", t.Add(5*time.Second).In(cest)
	badmail.BadmailKey = "badmail/user@example.com/2026/06/01/1005.badmail.eml"
	badmail.Notified = []string{"badmail", "loop"}

	held := base("user@example.com", "1006.held", "held.6@example.org", "a@contoso.example")
	held.Held = "fetched 4096 bytes, LIST said 4110"

	// A copy of the delivered message in a global mailbox: one recipient
	// suppressed as a duplicate, another delivered and then deleted.
	deleted := base(FixtureLeaseMailbox, "g-77", "Delivered.2@example.org", "a@contoso.example", "c@contoso.example")
	deleted.RecipientSource, deleted.MessageIDAdded, deleted.NeedsSMTPUTF8 = "To, Cc", false, true
	deleted.Recipients = []ledger.Recipient{
		{Address: "a@contoso.example", Status: ledger.Suppressed, Reply: "accepted by user@example.com/1002.delivered at " + t.Add(2*time.Second).Format(time.RFC3339), At: t.Add(6 * time.Second)},
		acc("c@contoso.example", t.Add(6*time.Second)),
	}
	deleted.Attempts, deleted.LastAttempt = 1, t.Add(6*time.Second)

	noID := base(FixtureLeaseMailbox, "g-78", "popconn.g-78.global@example.com", "c@contoso.example")
	noID.MessageIDAdded = true

	return []fixtureEntry{
		{rec: archived, state: ledger.StateDue},
		{rec: delivered, accepted: []string{"a@contoso.example", "B@Contoso.EXAMPLE"}, state: ledger.StateDelivered},
		// Due: its NextAttempt (18 minutes after t) is before FixtureNow.
		{rec: deferred, state: ledger.StateDue, failures: map[string]*ledger.Failure{
			"a@contoso.example": {Code: 451, Enhanced: "4.2.2", Temporary: true, Message: "mailbox full"}}},
		// Its NextAttempt was the notice timer of a message set aside.
		{rec: rejected, state: ledger.StateDeletedOnReject,
			upgraded: func(r *ledger.Record) { r.NextNotice, r.NextAttempt = t.Add(4*time.Hour), time.Time{} },
			failures: map[string]*ledger.Failure{
				"nobody@contoso.example": {Code: 550, Enhanced: "5.1.10", Message: "recipient not found"}}},
		{rec: badmail, state: ledger.StateBadmail},
		{rec: held, state: ledger.StateHeld},
		{rec: deleted, accepted: []string{"c@contoso.example"}, deleted: t.Add(7 * time.Second), state: ledger.StateDeleted},
		{rec: noID, state: ledger.StateDue},
	}
}

// fixtureAcceptance is the entry PutAccepted was given for rcpt of r.
func fixtureAcceptance(r *ledger.Record, rcpt string) ledger.Acceptance {
	var at time.Time
	for _, rc := range r.Recipients {
		if rc.Address == rcpt {
			at = rc.At
		}
	}
	return ledger.Acceptance{MessageID: r.MessageID, Recipient: rcpt, At: at, Expires: at.Add(7 * 24 * time.Hour)}
}

// WriteFixture writes the fixture into l, an empty ledger whose clock is
// FixtureNow, and takes the fixture lease. It is the generator of the
// testdata files; it uses only what the ledger API had at eabc1cd.
func WriteFixture(t *testing.T, l ledger.Ledger) {
	t.Helper()
	for _, e := range fixtureEntries() {
		r := e.rec
		mustPut(t, l, &r)
		if e.accepted != nil {
			var acc []ledger.Acceptance
			for _, a := range e.accepted {
				acc = append(acc, fixtureAcceptance(&r, a))
			}
			mustPutAccepted(t, l, &r, acc...)
		}
		if !e.deleted.IsZero() {
			r.DeletedAt = e.deleted
			mustPut(t, l, &r)
		}
	}
	mustLease(t, l, FixtureLeaseMailbox, FixtureLeaseOwner, FixtureLeaseTTL)
}

// CheckFixture checks that l, loaded from a file written by WriteFixture
// and read with the clock at FixtureNow, holds the fixture's records as
// written (Version counting the writes), upgraded as every read upgrades
// them, with their state and recipients' failures as today's code derives
// them, and returns its duplicate-index entries, Fingerprint empty,
// normalized as DuplicateKey keys them.
func CheckFixture(t *testing.T, l ledger.Ledger) {
	t.Helper()
	byMailbox := map[string][]string{}
	for _, e := range fixtureEntries() {
		want := e.rec
		want.Version = 1
		if e.accepted != nil {
			want.Version++
		}
		if !e.deleted.IsZero() {
			want.DeletedAt = e.deleted
			want.Version++
		}
		if e.upgraded != nil {
			e.upgraded(&want)
		}
		byMailbox[want.Mailbox] = append(byMailbox[want.Mailbox], want.UIDL)
		got := stored(t, l, want.Mailbox, want.UIDL)
		if got == nil {
			t.Errorf("record %s/%s missing", want.Mailbox, want.UIDL)
			continue
		}
		if encode(t, got) != encode(t, &want) {
			t.Errorf("record %s/%s reads\n%s\nwant %s", want.Mailbox, want.UIDL, encode(t, got), encode(t, &want))
		}
		if s := got.State(FixtureNow); s != e.state {
			t.Errorf("record %s/%s: State = %s, want %s", want.Mailbox, want.UIDL, s, e.state)
		}
		for _, rc := range got.Recipients {
			f, wf := rc.LastFailure(), e.failures[rc.Address]
			if (f == nil) != (wf == nil) || (f != nil && *f != *wf) {
				t.Errorf("record %s/%s: LastFailure of %s = %+v, want %+v", want.Mailbox, want.UIDL, rc.Address, f, wf)
			}
		}
		for _, rcpt := range e.accepted {
			wa := fixtureAcceptance(&want, rcpt)
			id, nrcpt, _ := ledger.DuplicateKey(wa.MessageID, rcpt)
			a, ok := accepted(t, l, want.MessageID, rcpt)[rcpt]
			switch {
			case !ok:
				t.Errorf("entry %s/%s not found", want.MessageID, rcpt)
			case a.MessageID != id || a.Recipient != nrcpt || a.Mailbox != want.Mailbox || a.UIDL != want.UIDL ||
				!a.At.Equal(wa.At) || !a.Expires.Equal(wa.Expires) || a.Fingerprint != "":
				t.Errorf("entry %s/%s reads %+v, want %s/%s of %s/%s at %s until %s",
					want.MessageID, rcpt, a, id, nrcpt, want.Mailbox, want.UIDL, wa.At, wa.Expires)
			}
		}
	}
	for mailbox, uidls := range byMailbox {
		list, err := l.List(ctx(), mailbox)
		if err != nil {
			t.Fatalf("List(%s): %v", mailbox, err)
		}
		if len(list) != len(uidls) {
			t.Errorf("List(%s) = %d records, want %d", mailbox, len(list), len(uidls))
		}
	}
}
