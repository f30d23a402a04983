package connector

import (
	"fmt"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/notify"
)

// The life of a message, and the one decision that drives it.
//
// A message's state is one value derived from its ledger record
// (ledger.Record.State); Decide maps the state, what the server lists,
// the time, the mailbox's policy, the endpoint's SIZE limit, what the
// duplicate lookup found and what is left of the poll's budget to the
// next action. The pipeline only carries actions out; it decides
// nothing. docs/ARCHITECTURE.md draws the machine.
//
//	new ──fetch──▶ due ──deliver──▶ delivered / suppressed ──delete──▶ deleted ──retention──▶ retired
//	 │              │  ▲
//	 │              │  └── time ── waiting ◀── a failure (retried)
//	 │              ├──▶ badmail / deleted-on-reject ──delete──▶ deleted   (set aside)
//	 │              └──▶ given up (no more attempts; left on the server)
//	 └─ a fetch unlike its LIST ──▶ held ──refetch──▶ released: due
//	                                 └── four same fetches ──▶ badmail (set aside) or kept held
//
// Every rule of the nothing-lost guarantees is a case here: nothing is
// deleted unless its state is settled; a held message is set aside only
// after heldConfirmFetches fetches of the same bytes, and only when the
// fetch ended where the server ended the message; giving up keeps the
// message on the server unless the undeliverable action is "badmail"; a
// message too large for the endpoint waits at the slowest pace.

// Listing is what the server's LIST says of a recorded message.
type Listing int

const (
	// Listed: the server lists the message (with the size it was
	// fetched at, when it was fetched).
	Listed Listing = iota
	// ListedOtherSize: the UIDL is listed with another size: it names
	// another message now (a reused UIDL).
	ListedOtherSize
	// ListedTwice: the listing gives the UIDL to several messages, so it
	// names neither.
	ListedTwice
	// Gone: the server does not list it.
	Gone
)

// Copies is what the duplicate lookup found before an attempt.
type Copies int

const (
	CopiesUnknown  Copies = iota // not looked up
	CopiesNone                   // some recipient still needs this copy
	CopiesAll                    // every recipient has it from another copy
	CopiesInFlight               // another copy holds the delivery claim: its outcome decides
)

// Action is what the pipeline does next with a message.
type Action string

const (
	ActFetch    Action = "fetch"     // RETR it into the archive (a new record, or a new generation of the UIDL)
	ActRefetch  Action = "refetch"   // RETR a held message again, on a session of its own
	ActDeliver  Action = "deliver"   // relay it to the recipients that do not have it
	ActWait     Action = "wait"      // its timer has not come
	ActDelete   Action = "delete"    // listed: DELE it; gone: record that it left the server
	ActSkip     Action = "skip"      // nothing to do in this poll
	ActSetAside Action = "set-aside" // record a disposition (badmail, or deleted on a listed reply code); it then leaves the server
	ActGiveUp   Action = "give-up"   // no more automatic attempts; a badmail copy; left on the server
)

// Policy is what a mailbox's configuration says about a message's life.
type Policy struct {
	AfterDelivery DeletePolicy
	KeepFor       time.Duration // with KeepDays
	Undeliverable Undeliverable
	GiveUpAfter   time.Duration // 0: never give up
	MaxTraceHops  int           // own Received fields beyond which a message is a loop
}

// Budget is what is left of a poll.
type Budget struct {
	Fetch   bool // another message may be fetched (count, bytes, deadline, stop request)
	Deliver bool // another delivery may start (deadline, stop request)
}

// Situation is everything Decide looks at.
type Situation struct {
	Record    *ledger.Record // nil: no record yet
	Listing   Listing
	Now       time.Time
	Policy    Policy
	SizeLimit int64 // the endpoint's SIZE limit (RFC 1870); 0 unknown
	Copies    Copies
	Budget    Budget
	// Fetched says the record was just filled by a fetch of this poll,
	// and FetchEnded that the fetch ended where the server ended the
	// message (not cut short with the rest left on the wire).
	Fetched, FetchEnded bool
	// Attempted says the record holds the outcome of an attempt just
	// made (its replies applied, not yet recorded).
	Attempted bool
	// Request is an administrator's order for this message, if any.
	Request Request
}

// Request is an administrator's order for one message. The machine takes
// them now; the commands that give them are the operations work's.
type Request string

const (
	// RequestRetry: deliver now, ignoring the retry timer; a message given
	// up is tried again; a held one is fetched again now.
	RequestRetry Request = "retry"
	// RequestRelease: deliver the archived bytes of a message held or set
	// aside (the administrator accepts them as served); it then follows the
	// after-delivery policy like any delivered message.
	RequestRelease Request = "release"
	// RequestReplay: deliver the archived copy again to every recipient,
	// also those that accepted it (a mailbox restored in Exchange).
	RequestReplay Request = "replay"
)

// Decision is Decide's answer.
type Decision struct {
	Action Action
	// Reason says why, in words for the log, status and notices.
	Reason string
	// NewGeneration, with ActFetch: the UIDL's record is another message;
	// the fetch starts a new record.
	NewGeneration bool
	// Disposition, with ActSetAside: the disposition to record.
	Disposition ledger.Disposition
	// GaveUp, with ActSetAside: the message is set aside because it
	// passed the give-up age.
	GaveUp bool
	// Resend, with ActDeliver for a replay: send to every recipient again,
	// also those that accepted.
	Resend bool
}

// Decide returns the next action for the message s describes. It is
// pure: the same situation always gives the same decision.
func Decide(s Situation) Decision {
	rec := s.Record
	if s.Listing == ListedTwice {
		return Decision{Action: ActSkip, Reason: "the server lists this UIDL for several messages: it names neither, and both stay on the server"}
	}
	if rec != nil && s.Request != "" {
		return decideRequest(s)
	}
	if rec == nil || (s.Listing != Gone && (rec.Deleted() || s.Listing == ListedOtherSize)) {
		switch {
		case s.Listing == Gone:
			return Decision{Action: ActSkip, Reason: "not on the server and not recorded"}
		case !s.Budget.Fetch:
			return Decision{Action: ActSkip, Reason: "the poll's budget is spent"}
		}
		return Decision{Action: ActFetch, NewGeneration: rec != nil}
	}
	switch rec.State(s.Now) {
	case ledger.StateDeleted:
		return Decision{Action: ActSkip, Reason: "deleted from the server"}
	case ledger.StateDelivered, ledger.StateSuppressed:
		switch {
		case s.Listing == Gone:
			return Decision{Action: ActDelete, Reason: "delivered, and no longer on the server"}
		case !s.Policy.deletes(rec, s.Now):
			return Decision{Action: ActSkip, Reason: "delivered; kept on the server by the after-delivery policy"}
		}
		return Decision{Action: ActDelete, Reason: "delivered"}
	case ledger.StateBadmail, ledger.StateDeletedOnReject:
		return Decision{Action: ActDelete, Reason: rec.DispositionReason}
	case ledger.StateNew:
		switch {
		case s.Listing == Gone:
			return Decision{Action: ActSkip, Reason: "never archived, and no longer on the server"}
		case !s.Budget.Fetch:
			return Decision{Action: ActSkip, Reason: "the poll's budget is spent"}
		}
		return Decision{Action: ActFetch}
	case ledger.StateHeld:
		return decideHeld(s)
	case ledger.StateGivenUp:
		return Decision{Action: ActSkip, Reason: "given up: no more automatic attempts"}
	}
	// Waiting or due: archived, not settled, not held, not given up.
	if s.Attempted {
		return decideAfterAttempt(s)
	}
	if !s.Budget.Deliver {
		return Decision{Action: ActSkip, Reason: "the poll's budget is spent"}
	}
	if hops := s.Policy.MaxTraceHops; rec.TraceHops > hops {
		return Decision{Action: ActSetAside, Disposition: ledger.DispositionBadmail,
			Reason: fmt.Sprintf("mail loop (5.4.6): the message already carries %d Received fields from this connector, more than %d", rec.TraceHops, hops)}
	}
	// A message too large for the endpoint waits at the slowest pace,
	// unless the endpoint now advertises a limit it fits.
	raised := rec.TooLargeLimit > 0 && s.SizeLimit > rec.TooLargeLimit && rec.Size <= s.SizeLimit
	if rec.State(s.Now) == ledger.StateWaiting && !raised {
		return Decision{Action: ActWait, Reason: "next attempt at " + rec.NextAttempt.UTC().Format(time.RFC3339)}
	}
	switch {
	case s.Copies == CopiesInFlight:
		return Decision{Action: ActWait, Reason: "another copy of this message is being delivered"}
	case s.Copies == CopiesAll:
		return Decision{Action: ActSkip, Reason: "every recipient has this message from another copy"}
	}
	return Decision{Action: ActDeliver}
}

// decideRequest is Decide for a message an administrator gave an order
// for. Nothing here deletes: whatever is delivered follows the usual
// rules afterwards.
func decideRequest(s Situation) Decision {
	rec := s.Record
	st := rec.State(s.Now)
	switch s.Request {
	case RequestRetry:
		switch {
		case st == ledger.StateHeld && s.Listing != Gone:
			return Decision{Action: ActRefetch, Reason: "retry requested"}
		case st == ledger.StateWaiting || st == ledger.StateDue || st == ledger.StateGivenUp:
			return Decision{Action: ActDeliver, Reason: "retry requested"}
		}
		return Decision{Action: ActSkip, Reason: "retry requested, but the message is " + string(st)}
	case RequestRelease:
		if rec.Archived() && (st == ledger.StateHeld || st == ledger.StateBadmail || st == ledger.StateGivenUp ||
			(st == ledger.StateDeleted && rec.Disposition != "" && !rec.Delivered())) {
			return Decision{Action: ActDeliver, Reason: "released by the administrator: the archived copy is delivered as served"}
		}
		return Decision{Action: ActSkip, Reason: "release requested, but the message is " + string(st)}
	case RequestReplay:
		if rec.Archived() {
			return Decision{Action: ActDeliver, Resend: true, Reason: "replay requested: the archived copy is delivered again to every recipient"}
		}
		return Decision{Action: ActSkip, Reason: "replay requested, but the message was never archived"}
	}
	return Decision{Action: ActSkip, Reason: "unknown request " + string(s.Request)}
}

// decideHeld is Decide for a held message.
func decideHeld(s Situation) Decision {
	rec := s.Record
	switch {
	case s.Listing == Gone:
		return Decision{Action: ActSkip, Reason: "held, and the server's copy is gone; the archive keeps what was served"}
	case s.Fetched && heldConfirmed(rec) && s.Policy.Undeliverable.Action == BadmailRejected && s.FetchEnded:
		return Decision{Action: ActSetAside, Disposition: ledger.DispositionBadmail,
			Reason: "held: " + rec.Held + "; moved to badmail as served and deleted from the POP3 server"}
	case s.Fetched && heldConfirmed(rec):
		return Decision{Action: ActWait, Reason: "held for good: left on the POP3 server, fetched again only at the slowest pace"}
	case s.Fetched:
		return Decision{Action: ActWait, Reason: "held: fetched again at the retry interval"}
	case s.Policy.GiveUpAfter > 0 && s.Now.Sub(rec.FirstSeen) >= s.Policy.GiveUpAfter:
		return Decision{Action: ActGiveUp, Reason: "held past the give-up age: no longer fetched; left on the POP3 server"}
	case s.Now.Before(rec.NextRefetch):
		return Decision{Action: ActWait, Reason: "held: next fetch at " + rec.NextRefetch.UTC().Format(time.RFC3339)}
	case !s.Budget.Fetch:
		return Decision{Action: ActSkip, Reason: "the poll's budget is spent"}
	}
	return Decision{Action: ActRefetch}
}

// decideAfterAttempt applies the undeliverable option, the give-up age
// and the reply codes to a message some recipient did not accept in the
// attempt just made.
func decideAfterAttempt(s Situation) Decision {
	rec, p := s.Record, s.Policy
	anyTemp, relayDenied, deletable, failed := false, false, true, false
	codes := p.Undeliverable.DeleteOnCodes
	for _, rc := range rec.Recipients {
		f := rc.LastFailure()
		if rc.Status.Done() || f == nil {
			continue
		}
		failed = true
		e := relayError(f)
		anyTemp = anyTemp || f.Temporary
		relayDenied = relayDenied || notify.Classify(e) == notify.CauseRelayDenied
		deletable = deletable && notify.Deletable(e, codes)
	}
	if p.GiveUpAfter > 0 && s.Now.Sub(rec.FirstSeen) >= p.GiveUpAfter {
		reason := fmt.Sprintf("gave up: not delivered %s after it was first seen (%s); last error: %s",
			formatAge(p.GiveUpAfter), rec.FirstSeen.Format(time.RFC3339), rec.LastError)
		if p.Undeliverable.Action == BadmailRejected {
			return Decision{Action: ActSetAside, Disposition: ledger.DispositionBadmail, Reason: reason, GaveUp: true}
		}
		return Decision{Action: ActGiveUp, Reason: reason}
	}
	switch {
	case anyTemp || !failed:
		return Decision{Action: ActWait, Reason: "retried: a temporary failure may go differently next time"}
	case p.Undeliverable.Action == DeleteRejected && deletable:
		return Decision{Action: ActSetAside, Disposition: ledger.DispositionDeletedRejected,
			Reason: "rejected by Exchange with a reply the undeliverable option deletes on: " + rec.LastError}
	case p.Undeliverable.Action == BadmailRejected && !relayDenied:
		reason := "rejected by Exchange: " + rec.LastError
		if rec.TooLargeLimit > 0 || recordedTooLarge(rec) {
			reason = rec.LastError // it says "too large" already
		}
		return Decision{Action: ActSetAside, Disposition: ledger.DispositionBadmail, Reason: reason}
	}
	return Decision{Action: ActWait, Reason: "rejected; left on the POP3 server and retried"}
}

// deletes reports whether the after-delivery policy removes rec from the
// server now.
func (p Policy) deletes(rec *ledger.Record, now time.Time) bool {
	switch p.AfterDelivery {
	case Keep:
		return false
	case KeepDays:
		return !now.Before(rec.FirstSeen.Add(p.KeepFor))
	}
	return true
}
