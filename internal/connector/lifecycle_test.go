package connector

import (
	"fmt"
	"github.com/popconnector/popconnector/internal/config"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// rec builds a record in a named state, as the pipeline leaves it.
func recIn(state string, edit ...func(*ledger.Record)) *ledger.Record {
	r := &ledger.Record{Mailbox: "sales", UIDL: "u1", FirstSeen: t0, Size: 1000, ListSize: 1000,
		Recipients: []ledger.Recipient{{Address: "a@corp.example", Status: ledger.Pending}}}
	archived := func() { r.ArchiveKey, r.SHA256, r.ArchivedAt = "sales/k.eml", "ab", t0 }
	switch state {
	case "new":
		r.Recipients = nil
	case "due":
		archived()
	case "waiting":
		archived()
		r.Attempts, r.LastAttempt, r.NextAttempt = 1, t0, t0.Add(time.Hour)
		r.Recipients[0] = ledger.Recipient{Address: "a@corp.example", Status: ledger.Deferred, Code: 451, Reply: "smtp rcpt: 451 later",
			Failure: &ledger.Failure{Op: "rcpt", Code: 451, Temporary: true, Message: "later"}}
	case "held":
		archived()
		r.Size, r.Recipients = 999, nil
		r.Held, r.HeldFetches, r.NextRefetch = "the server listed 1000 octets but sent 999", 1, t0.Add(10*time.Minute)
	case "given-up":
		archived()
		r.GaveUp, r.BadmailKey = true, "badmail/sales/k.eml"
	case "delivered":
		archived()
		r.Recipients[0] = ledger.Recipient{Address: "a@corp.example", Status: ledger.Accepted, Code: 250}
	case "suppressed":
		archived()
		r.Recipients[0] = ledger.Recipient{Address: "a@corp.example", Status: ledger.Suppressed}
	case "badmail":
		archived()
		r.Disposition, r.DispositionReason, r.BadmailKey = ledger.DispositionBadmail, "rejected", "badmail/sales/k.eml"
	case "deleted-on-reject":
		archived()
		r.Disposition, r.DispositionReason = ledger.DispositionDeletedRejected, "550 5.7.1"
	case "deleted":
		archived()
		r.Recipients[0].Status = ledger.Accepted
		r.DeletedAt = t0
	default:
		panic(state)
	}
	for _, e := range edit {
		e(r)
	}
	return r
}

// rejectedWith makes the record's one recipient refused with code and
// enhanced in the attempt just made at now.
func rejectedWith(code int, enhanced, text string, now time.Time) func(*ledger.Record) {
	return func(r *ledger.Record) {
		r.Attempts, r.LastAttempt, r.NextAttempt = 1, now, now.Add(10*time.Minute)
		r.LastError = fmt.Sprintf("a@corp.example: smtp rcpt: %d %s %s", code, enhanced, text)
		r.Recipients[0] = ledger.Recipient{Address: "a@corp.example", Status: ledger.Rejected, Code: code, Enhanced: enhanced,
			Failure: &ledger.Failure{Op: "rcpt", Code: code, Enhanced: enhanced, Temporary: code < 500, Message: text}}
		if code < 500 {
			r.Recipients[0].Status = ledger.Deferred
		}
	}
}

var (
	all    = Budget{Fetch: true, Deliver: true}
	spent  = Budget{}
	leave  = Policy{AfterDelivery: DeleteAfterDelivery, Undeliverable: Undeliverable{Action: LeaveRejected}, GiveUpAfter: 120 * time.Hour, MaxTraceHops: 3}
	delOpt = Policy{AfterDelivery: DeleteAfterDelivery, Undeliverable: Undeliverable{Action: DeleteRejected, DeleteOnCodes: config.Undeliverable{DeleteOnCodes: config.DefaultDeleteOnCodes}.DeleteCodes()},
		GiveUpAfter: 120 * time.Hour, MaxTraceHops: 3}
	badOpt = Policy{AfterDelivery: DeleteAfterDelivery, Undeliverable: Undeliverable{Action: BadmailRejected}, GiveUpAfter: 120 * time.Hour, MaxTraceHops: 3}
)

func with(p Policy, edit func(*Policy)) Policy { edit(&p); return p }

// The decision table: every rule of the message's life, one case each.
func TestDecide(t *testing.T) {
	now := t0.Add(time.Minute)
	late := t0.Add(121 * time.Hour) // past the give-up age
	keep := with(leave, func(p *Policy) { p.AfterDelivery = Keep })
	keepDays := with(leave, func(p *Policy) { p.AfterDelivery, p.KeepFor = KeepDays, 48*time.Hour })
	tests := []struct {
		name string
		s    Situation
		want Action
		gen  bool               // NewGeneration
		disp ledger.Disposition // with ActSetAside
		why  string             // in the reason
	}{
		// What the server lists.
		{"not recorded, listed: fetch", Situation{Listing: Listed, Now: now, Policy: leave, Budget: all}, ActFetch, false, "", ""},
		{"not recorded, budget spent: skip", Situation{Listing: Listed, Now: now, Policy: leave, Budget: spent}, ActSkip, false, "", "budget"},
		{"not recorded, gone: skip", Situation{Listing: Gone, Now: now, Policy: leave, Budget: all}, ActSkip, false, "", ""},
		{"UIDL listed twice: skip whatever the record", Situation{Record: recIn("delivered"), Listing: ListedTwice, Now: now, Policy: leave, Budget: all}, ActSkip, false, "", "several messages"},
		{"UIDL listed twice, no record: skip", Situation{Listing: ListedTwice, Now: now, Policy: leave, Budget: all}, ActSkip, false, "", ""},
		{"listed with another size: a new generation", Situation{Record: recIn("delivered"), Listing: ListedOtherSize, Now: now, Policy: leave, Budget: all}, ActFetch, true, "", ""},
		{"listed with another size, budget spent: skip", Situation{Record: recIn("delivered"), Listing: ListedOtherSize, Now: now, Policy: leave, Budget: spent}, ActSkip, false, "", ""},
		{"deleted record listed again: a reused UIDL", Situation{Record: recIn("deleted"), Listing: Listed, Now: now, Policy: leave, Budget: all}, ActFetch, true, "", ""},
		{"deleted record gone: skip", Situation{Record: recIn("deleted"), Listing: Gone, Now: now, Policy: leave, Budget: all}, ActSkip, false, "", ""},
		// New.
		{"new: fetch", Situation{Record: recIn("new"), Listing: Listed, Now: now, Policy: leave, Budget: all}, ActFetch, false, "", ""},
		{"new, budget spent: skip", Situation{Record: recIn("new"), Listing: Listed, Now: now, Policy: leave, Budget: spent}, ActSkip, false, "", ""},
		{"new and gone: skip", Situation{Record: recIn("new"), Listing: Gone, Now: now, Policy: leave, Budget: all}, ActSkip, false, "", "never archived"},
		// Due and waiting.
		{"due: deliver", Situation{Record: recIn("due"), Listing: Listed, Now: now, Policy: leave, Budget: all}, ActDeliver, false, "", ""},
		{"due, gone: deliver from the archive", Situation{Record: recIn("due"), Listing: Gone, Now: now, Policy: leave, Budget: all}, ActDeliver, false, "", ""},
		{"due, budget spent: skip", Situation{Record: recIn("due"), Listing: Listed, Now: now, Policy: leave, Budget: spent}, ActSkip, false, "", ""},
		{"due, another copy in flight: wait", Situation{Record: recIn("due"), Listing: Listed, Now: now, Policy: leave, Budget: all, Copies: CopiesInFlight}, ActWait, false, "", "another copy"},
		{"due, every recipient has it: skip", Situation{Record: recIn("due"), Listing: Listed, Now: now, Policy: leave, Budget: all, Copies: CopiesAll}, ActSkip, false, "", "another copy"},
		{"due, some need it: deliver", Situation{Record: recIn("due"), Listing: Listed, Now: now, Policy: leave, Budget: all, Copies: CopiesNone}, ActDeliver, false, "", ""},
		{"waiting: wait", Situation{Record: recIn("waiting"), Listing: Listed, Now: now, Policy: leave, Budget: all}, ActWait, false, "", "next attempt"},
		{"waiting, gone: wait", Situation{Record: recIn("waiting"), Listing: Gone, Now: now, Policy: leave, Budget: all}, ActWait, false, "", ""},
		{"waiting until now: due", Situation{Record: recIn("waiting"), Listing: Listed, Now: t0.Add(time.Hour), Policy: leave, Budget: all}, ActDeliver, false, "", ""},
		{"a loop: set aside, whatever the option", Situation{Record: recIn("due", func(r *ledger.Record) { r.TraceHops = 4 }), Listing: Listed, Now: now, Policy: leave, Budget: all}, ActSetAside, false, ledger.DispositionBadmail, "mail loop (5.4.6)"},
		{"three own hops: deliver", Situation{Record: recIn("due", func(r *ledger.Record) { r.TraceHops = 3 }), Listing: Listed, Now: now, Policy: leave, Budget: all}, ActDeliver, false, "", ""},
		// Settled.
		{"delivered: delete", Situation{Record: recIn("delivered"), Listing: Listed, Now: now, Policy: leave, Budget: spent}, ActDelete, false, "", ""},
		{"delivered, keep: skip", Situation{Record: recIn("delivered"), Listing: Listed, Now: now, Policy: keep, Budget: all}, ActSkip, false, "", "after-delivery policy"},
		{"delivered, keep_days not yet: skip", Situation{Record: recIn("delivered"), Listing: Listed, Now: t0.Add(47 * time.Hour), Policy: keepDays, Budget: all}, ActSkip, false, "", ""},
		{"delivered, keep_days passed: delete", Situation{Record: recIn("delivered"), Listing: Listed, Now: t0.Add(48 * time.Hour), Policy: keepDays, Budget: all}, ActDelete, false, "", ""},
		{"delivered, gone: record the deletion", Situation{Record: recIn("delivered"), Listing: Gone, Now: now, Policy: keep, Budget: all}, ActDelete, false, "", "no longer on the server"},
		{"suppressed: delete", Situation{Record: recIn("suppressed"), Listing: Listed, Now: now, Policy: leave, Budget: all}, ActDelete, false, "", ""},
		{"suppressed, keep: skip", Situation{Record: recIn("suppressed"), Listing: Listed, Now: now, Policy: keep, Budget: all}, ActSkip, false, "", ""},
		{"badmail: delete, whatever the policy", Situation{Record: recIn("badmail"), Listing: Listed, Now: now, Policy: keep, Budget: spent}, ActDelete, false, "", ""},
		{"deleted on reject: delete", Situation{Record: recIn("deleted-on-reject"), Listing: Listed, Now: now, Policy: keep, Budget: all}, ActDelete, false, "", ""},
		{"badmail, gone: record the deletion", Situation{Record: recIn("badmail"), Listing: Gone, Now: now, Policy: leave, Budget: all}, ActDelete, false, "", ""},
		// Given up.
		{"given up: skip", Situation{Record: recIn("given-up"), Listing: Listed, Now: late, Policy: leave, Budget: all}, ActSkip, false, "", "given up"},
		{"given up, gone: skip", Situation{Record: recIn("given-up"), Listing: Gone, Now: late, Policy: leave, Budget: all}, ActSkip, false, "", ""},
		// Held.
		{"held, not due: wait", Situation{Record: recIn("held"), Listing: Listed, Now: now, Policy: badOpt, Budget: all}, ActWait, false, "", "next fetch"},
		{"held, due: refetch", Situation{Record: recIn("held"), Listing: Listed, Now: t0.Add(10 * time.Minute), Policy: badOpt, Budget: all}, ActRefetch, false, "", ""},
		{"held, due, budget spent: skip", Situation{Record: recIn("held"), Listing: Listed, Now: t0.Add(10 * time.Minute), Policy: badOpt, Budget: spent}, ActSkip, false, "", ""},
		{"held, gone: skip (never deleted on its account)", Situation{Record: recIn("held"), Listing: Gone, Now: t0.Add(time.Hour), Policy: badOpt, Budget: all}, ActSkip, false, "", "gone"},
		{"held past the give-up age: give up, left on the server", Situation{Record: recIn("held"), Listing: Listed, Now: late, Policy: badOpt, Budget: all}, ActGiveUp, false, "", "left on the POP3 server"},
		{"held, just fetched the first time: wait", Situation{Record: recIn("held"), Listing: Listed, Now: now, Policy: badOpt, Budget: all, Fetched: true, FetchEnded: true}, ActWait, false, "", "retry interval"},
		{"held, third fetch the same: wait", Situation{Record: recIn("held", func(r *ledger.Record) { r.HeldFetches = 3 }), Listing: Listed, Now: now, Policy: badOpt, Budget: all, Fetched: true, FetchEnded: true}, ActWait, false, "", ""},
		{"held, fourth fetch the same, badmail: set aside as served", Situation{Record: recIn("held", func(r *ledger.Record) { r.HeldFetches = 4 }), Listing: Listed, Now: now, Policy: badOpt, Budget: all, Fetched: true, FetchEnded: true}, ActSetAside, false, ledger.DispositionBadmail, "moved to badmail as served"},
		{"held, fourth fetch short with the rest on the wire, badmail: kept", Situation{Record: recIn("held", func(r *ledger.Record) { r.HeldFetches = 4 }), Listing: Listed, Now: now, Policy: badOpt, Budget: all, Fetched: true, FetchEnded: false}, ActWait, false, "", "held for good"},
		{"held, fourth fetch the same, leave: kept at the slowest pace", Situation{Record: recIn("held", func(r *ledger.Record) { r.HeldFetches = 4 }), Listing: Listed, Now: now, Policy: leave, Budget: all, Fetched: true, FetchEnded: true}, ActWait, false, "", "slowest pace"},
		{"held, fourth fetch the same, delete: kept", Situation{Record: recIn("held", func(r *ledger.Record) { r.HeldFetches = 4 }), Listing: Listed, Now: now, Policy: delOpt, Budget: all, Fetched: true, FetchEnded: true}, ActWait, false, "", "held for good"},
		// After an attempt.
		{"4xx: wait", Situation{Record: recIn("due", rejectedWith(451, "4.3.0", "later", now)), Listing: Listed, Now: now, Policy: badOpt, Attempted: true}, ActWait, false, "", "temporary"},
		{"5xx under leave: wait", Situation{Record: recIn("due", rejectedWith(550, "5.1.1", "User unknown", now)), Listing: Listed, Now: now, Policy: leave, Attempted: true}, ActWait, false, "", "left on the POP3 server"},
		{"5xx under badmail: set aside", Situation{Record: recIn("due", rejectedWith(550, "5.1.1", "User unknown", now)), Listing: Listed, Now: now, Policy: badOpt, Attempted: true}, ActSetAside, false, ledger.DispositionBadmail, "rejected by Exchange"},
		{"relay denied under badmail: wait", Situation{Record: recIn("due", rejectedWith(550, "5.7.1", "Unable to relay for a@corp.example", now)), Listing: Listed, Now: now, Policy: badOpt, Attempted: true}, ActWait, false, "", ""},
		{"listed code under delete: deleted on reject", Situation{Record: recIn("due", rejectedWith(550, "5.7.1", "Message rejected as spam", now)), Listing: Listed, Now: now, Policy: delOpt, Attempted: true}, ActSetAside, false, ledger.DispositionDeletedRejected, "deletes on"},
		{"unlisted code under delete: wait", Situation{Record: recIn("due", rejectedWith(550, "5.1.1", "User unknown", now)), Listing: Listed, Now: now, Policy: delOpt, Attempted: true}, ActWait, false, "", ""},
		{"relay denied under delete: wait", Situation{Record: recIn("due", rejectedWith(550, "5.7.1", "Unable to relay for a@corp.example", now)), Listing: Listed, Now: now, Policy: delOpt, Attempted: true}, ActWait, false, "", ""},
		{"give-up age under leave: give up, kept", Situation{Record: recIn("due", rejectedWith(451, "4.3.0", "later", late)), Listing: Listed, Now: late, Policy: leave, Attempted: true}, ActGiveUp, false, "", "gave up"},
		{"give-up age under delete: give up, kept", Situation{Record: recIn("due", rejectedWith(550, "5.7.1", "spam", late)), Listing: Listed, Now: late, Policy: delOpt, Attempted: true}, ActGiveUp, false, "", "gave up"},
		{"give-up age under badmail: set aside", Situation{Record: recIn("due", rejectedWith(451, "4.3.0", "later", late)), Listing: Listed, Now: late, Policy: badOpt, Attempted: true}, ActSetAside, false, ledger.DispositionBadmail, "gave up"},
		{"too large under badmail: set aside, said once", Situation{Record: recIn("due", rejectedWith(552, "5.3.4", "message too big", now), func(r *ledger.Record) {
			r.LastError = "too large: " + r.LastError
		}), Listing: Listed, Now: now, Policy: badOpt, Attempted: true}, ActSetAside, false, ledger.DispositionBadmail, "too large: a@"},
		{"too large under leave: wait", Situation{Record: recIn("due", rejectedWith(552, "5.3.4", "message too big", now)), Listing: Listed, Now: now, Policy: leave, Attempted: true}, ActWait, false, "", ""},
		{"too large, limit raised since: deliver", Situation{Record: recIn("waiting", func(r *ledger.Record) { r.TooLargeLimit = 500 }), Listing: Listed, Now: now, Policy: leave, Budget: all, SizeLimit: 2000}, ActDeliver, false, "", ""},
		{"too large, limit still too small: wait", Situation{Record: recIn("waiting", func(r *ledger.Record) { r.TooLargeLimit = 500 }), Listing: Listed, Now: now, Policy: leave, Budget: all, SizeLimit: 900}, ActWait, false, "", ""},
		// An administrator's orders.
		{"retry a waiting message: deliver now", Situation{Record: recIn("waiting"), Listing: Listed, Now: now, Policy: leave, Request: RequestRetry}, ActDeliver, false, "", "retry"},
		{"retry a given-up message: deliver", Situation{Record: recIn("given-up"), Listing: Listed, Now: late, Policy: leave, Request: RequestRetry}, ActDeliver, false, "", "retry"},
		{"retry a held message: fetch again now", Situation{Record: recIn("held"), Listing: Listed, Now: now, Policy: leave, Request: RequestRetry}, ActRefetch, false, "", ""},
		{"retry a held message gone from the server: skip", Situation{Record: recIn("held"), Listing: Gone, Now: now, Policy: leave, Request: RequestRetry}, ActSkip, false, "", "held"},
		{"retry a delivered message: skip", Situation{Record: recIn("delivered"), Listing: Listed, Now: now, Policy: leave, Request: RequestRetry}, ActSkip, false, "", "delivered"},
		{"release a held message: deliver as served", Situation{Record: recIn("held"), Listing: Listed, Now: now, Policy: badOpt, Request: RequestRelease}, ActDeliver, false, "", "as served"},
		{"release from badmail: deliver", Situation{Record: recIn("badmail"), Listing: Gone, Now: now, Policy: badOpt, Request: RequestRelease}, ActDeliver, false, "", ""},
		{"release a due message: skip", Situation{Record: recIn("due"), Listing: Listed, Now: now, Policy: badOpt, Request: RequestRelease}, ActSkip, false, "", "due"},
		{"replay a deleted message: deliver again to all", Situation{Record: recIn("deleted"), Listing: Gone, Now: now, Policy: leave, Request: RequestReplay}, ActDeliver, false, "", "every recipient"},
		{"replay a message never archived: skip", Situation{Record: recIn("new"), Listing: Listed, Now: now, Policy: leave, Request: RequestReplay}, ActSkip, false, "", "never archived"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.s)
			if d.Action != tt.want || d.NewGeneration != tt.gen || d.Disposition != tt.disp || !strings.Contains(d.Reason, tt.why) {
				t.Errorf("Decide = %+v, want %s (new generation %v, disposition %q, reason with %q)", d, tt.want, tt.gen, tt.disp, tt.why)
			}
		})
	}
}

// Every state × listing × timer × policy × budget: the rules that hold
// whatever the case.
func TestDecideInvariants(t *testing.T) {
	states := []string{"new", "due", "waiting", "held", "given-up", "delivered", "suppressed", "badmail", "deleted-on-reject", "deleted"}
	listings := []Listing{Listed, ListedOtherSize, ListedTwice, Gone}
	nows := []time.Time{t0.Add(time.Minute), t0.Add(2 * time.Hour), t0.Add(200 * time.Hour)}
	policies := []Policy{leave, delOpt, badOpt, with(leave, func(p *Policy) { p.AfterDelivery = Keep }),
		with(badOpt, func(p *Policy) { p.AfterDelivery, p.KeepFor = KeepDays, 48*time.Hour })}
	budgets := []Budget{all, spent, {Fetch: false, Deliver: true}}
	n := 0
	for _, st := range states {
		for _, l := range listings {
			for _, now := range nows {
				for _, p := range policies {
					for _, b := range budgets {
						for _, fetched := range []bool{false, true} {
							rec := recIn(st)
							s := Situation{Record: rec, Listing: l, Now: now, Policy: p, Budget: b, Fetched: fetched, FetchEnded: fetched}
							d := Decide(s)
							n++
							name := fmt.Sprintf("%s/%d/%s/%v/%+v/%v", st, l, now.Sub(t0), p.Undeliverable.Action, b, fetched)
							settled := rec.State(now).Settled()
							switch {
							case l == ListedTwice && d.Action != ActSkip:
								t.Errorf("%s: %s for a UIDL listed twice", name, d.Action)
							case d.Action == ActDelete && !settled:
								t.Errorf("%s: delete of a message not settled (rule 1)", name)
							case d.Action == ActDeliver && (st == "held" || settled || st == "new" || st == "given-up"):
								t.Errorf("%s: deliver in state %s", name, st)
							case (d.Action == ActFetch || d.Action == ActRefetch) && !b.Fetch:
								t.Errorf("%s: %s with the fetch budget spent", name, d.Action)
							case d.Action == ActDeliver && !b.Deliver:
								t.Errorf("%s: deliver with the delivery budget spent", name)
							case d.Action == ActSetAside && st == "held" && p.Undeliverable.Action != BadmailRejected:
								t.Errorf("%s: a held message set aside under %q", name, p.Undeliverable.Action)
							case d.Action == ActFetch && l == Gone:
								t.Errorf("%s: fetch of a message not on the server", name)
							case st == "deleted" && l == Listed && b.Fetch && (d.Action != ActFetch || !d.NewGeneration):
								t.Errorf("%s: a deleted record's UIDL listed again is %s, want a new generation", name, d.Action)
							}
						}
					}
				}
			}
		}
	}
	// An administrator's order never deletes, and delivers only what is
	// archived.
	for _, st := range states {
		for _, l := range listings {
			for _, req := range []Request{RequestRetry, RequestRelease, RequestReplay} {
				rec := recIn(st)
				d := Decide(Situation{Record: rec, Listing: l, Now: t0.Add(time.Hour), Policy: badOpt, Budget: all, Request: req})
				n++
				if d.Action == ActDelete || (d.Action == ActDeliver && !rec.Archived()) {
					t.Errorf("%s/%d/%s: %s", st, l, req, d.Action)
				}
			}
		}
	}
	t.Logf("%d situations", n)
}
