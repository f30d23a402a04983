package ledger_test

import (
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

func TestState(t *testing.T) {
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	rcpt := func(statuses ...ledger.RecipientStatus) []ledger.Recipient {
		var rs []ledger.Recipient
		for _, s := range statuses {
			rs = append(rs, ledger.Recipient{Address: "a@example.com", Status: s})
		}
		return rs
	}
	// archived returns an archived record with one pending recipient,
	// changed by fn.
	archived := func(fn func(r *ledger.Record)) *ledger.Record {
		r := &ledger.Record{Mailbox: "m", UIDL: "u", ArchiveKey: "k", SHA256: "ab", Recipients: rcpt(ledger.Pending)}
		if fn != nil {
			fn(r)
		}
		return r
	}
	for _, c := range []struct {
		name string
		rec  *ledger.Record
		want ledger.State
	}{
		{"nothing archived", &ledger.Record{Mailbox: "m", UIDL: "u"}, ledger.StateNew},
		{"archive key without digest", &ledger.Record{ArchiveKey: "k"}, ledger.StateNew},
		{"given up before archiving is still new", &ledger.Record{GaveUp: true}, ledger.StateNew},
		{"archived, no attempt yet", archived(nil), ledger.StateDue},
		{"archived, no recipients yet", archived(func(r *ledger.Record) { r.Recipients = nil }), ledger.StateDue},
		{"next attempt in the past", archived(func(r *ledger.Record) { r.NextAttempt = now.Add(-time.Nanosecond) }), ledger.StateDue},
		{"next attempt is now", archived(func(r *ledger.Record) { r.NextAttempt = now }), ledger.StateDue},
		{"next attempt just after now", archived(func(r *ledger.Record) { r.NextAttempt = now.Add(time.Nanosecond) }), ledger.StateWaiting},
		{"deferred recipient waiting", archived(func(r *ledger.Record) {
			r.Recipients = rcpt(ledger.Accepted, ledger.Deferred)
			r.NextAttempt = now.Add(time.Hour)
		}), ledger.StateWaiting},
		{"other timers do not make it wait", archived(func(r *ledger.Record) {
			r.NextRefetch, r.NextNotice = now.Add(time.Hour), now.Add(time.Hour)
		}), ledger.StateDue},
		{"held", archived(func(r *ledger.Record) { r.Held = "listed 10, sent 9" }), ledger.StateHeld},
		{"held beats waiting", archived(func(r *ledger.Record) {
			r.Held, r.NextAttempt = "listed 10, sent 9", now.Add(time.Hour)
		}), ledger.StateHeld},
		{"held with its refetch due", archived(func(r *ledger.Record) {
			r.Held, r.NextRefetch = "listed 10, sent 9", now.Add(-time.Hour)
		}), ledger.StateHeld},
		{"given up", archived(func(r *ledger.Record) { r.GaveUp = true }), ledger.StateGivenUp},
		{"given up, copied to badmail, left on the server", archived(func(r *ledger.Record) {
			r.GaveUp, r.BadmailKey = true, "badmail/k"
		}), ledger.StateGivenUp},
		{"given up beats held", archived(func(r *ledger.Record) { r.GaveUp, r.Held = true, "listed 10, sent 9" }), ledger.StateGivenUp},
		{"delivered", archived(func(r *ledger.Record) { r.Recipients = rcpt(ledger.Accepted, ledger.Accepted) }), ledger.StateDelivered},
		{"delivered, one from another copy", archived(func(r *ledger.Record) {
			r.Recipients = rcpt(ledger.Suppressed, ledger.Accepted)
		}), ledger.StateDelivered},
		{"delivered while waiting for a stale timer", archived(func(r *ledger.Record) {
			r.Recipients, r.NextAttempt = rcpt(ledger.Accepted), now.Add(time.Hour)
		}), ledger.StateDelivered},
		{"suppressed", archived(func(r *ledger.Record) { r.Recipients = rcpt(ledger.Suppressed, ledger.Suppressed) }), ledger.StateSuppressed},
		{"one recipient still deferred", archived(func(r *ledger.Record) {
			r.Recipients = rcpt(ledger.Suppressed, ledger.Deferred)
		}), ledger.StateDue},
		{"badmail", archived(func(r *ledger.Record) {
			r.Disposition, r.BadmailKey = ledger.DispositionBadmail, "badmail/k"
		}), ledger.StateBadmail},
		{"given up with a disposition is the disposition", archived(func(r *ledger.Record) {
			r.GaveUp, r.Disposition, r.BadmailKey = true, ledger.DispositionBadmail, "badmail/k"
		}), ledger.StateBadmail},
		{"held set aside as badmail", archived(func(r *ledger.Record) {
			r.Held, r.Disposition = "listed 10, sent 9", ledger.DispositionBadmail
		}), ledger.StateBadmail},
		{"deleted on reject", archived(func(r *ledger.Record) {
			r.Recipients = rcpt(ledger.Rejected)
			r.Disposition = ledger.DispositionDeletedRejected
		}), ledger.StateDeletedOnReject},
		{"given up and deleted on reject", archived(func(r *ledger.Record) {
			r.GaveUp, r.Disposition = true, ledger.DispositionDeletedRejected
		}), ledger.StateDeletedOnReject},
		{"unknown disposition stays on the server", archived(func(r *ledger.Record) { r.Disposition = "later-build" }), ledger.StateGivenUp},
		{"deleted", archived(func(r *ledger.Record) {
			r.Recipients, r.DeletedAt = rcpt(ledger.Accepted), now.Add(-time.Minute)
		}), ledger.StateDeleted},
		{"deleted whatever else", archived(func(r *ledger.Record) {
			r.Held, r.GaveUp, r.Disposition, r.DeletedAt = "x", true, ledger.DispositionBadmail, now.Add(time.Hour)
		}), ledger.StateDeleted},
		{"deleted before archiving", &ledger.Record{DeletedAt: now}, ledger.StateDeleted},
	} {
		got := c.rec.State(now)
		if got != c.want {
			t.Errorf("%s: State = %s, want %s", c.name, got, c.want)
		}
		if !c.rec.Deleted() && c.rec.Disposition != "later-build" && got.Settled() != c.rec.Settled() {
			t.Errorf("%s: State %s settled %v, Record.Settled %v", c.name, got, got.Settled(), c.rec.Settled())
		}
	}
}

func TestStateSettled(t *testing.T) {
	for s, want := range map[ledger.State]bool{
		ledger.StateNew: false, ledger.StateHeld: false, ledger.StateWaiting: false, ledger.StateDue: false,
		ledger.StateGivenUp: false, ledger.StateDeleted: false,
		ledger.StateDelivered: true, ledger.StateSuppressed: true, ledger.StateBadmail: true, ledger.StateDeletedOnReject: true,
	} {
		if got := s.Settled(); got != want {
			t.Errorf("%s.Settled() = %v, want %v", s, got, want)
		}
	}
}
