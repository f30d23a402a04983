package ledger

import "time"

// State is where a message stands, derived from its record and the time.
type State string

const (
	StateNew             State = "new"               // no archived copy yet
	StateHeld            State = "held"              // archived; the server sends other bytes than it lists
	StateWaiting         State = "waiting"           // archived; its next delivery attempt is in the future
	StateDue             State = "due"               // archived; to be delivered now
	StateGivenUp         State = "given-up"          // no more automatic attempts; left on the server
	StateDelivered       State = "delivered"         // settled: every recipient accepted it (or has it from another copy, with at least one acceptance of this copy)
	StateSuppressed      State = "suppressed"        // settled: every recipient had it from another copy
	StateBadmail         State = "badmail"           // settled: set aside under badmail/
	StateDeletedOnReject State = "deleted-on-reject" // settled: rejected with a code the undeliverable option deletes on
	StateDeleted         State = "deleted"           // the server confirmed its deletion
)

// Settled reports whether a message in state s may leave the POP3
// server: delivered, suppressed, badmail or deleted-on-reject. A deleted
// message has left it already and is not settled.
func (s State) Settled() bool {
	switch s {
	case StateDelivered, StateSuppressed, StateBadmail, StateDeletedOnReject:
		return true
	}
	return false
}

// State derives the message's state at now. The first rule that matches
// decides, so every record has exactly one state:
//
//  1. DeletedAt set: deleted, whatever else the record says.
//  2. A Disposition: badmail or deleted-on-reject, even when also given
//     up or held (the decision is final). A Disposition this build does
//     not know (written by a later one) reads as given-up: nothing is
//     sent or deleted on a decision it cannot read.
//  3. Every recipient done: suppressed when none accepted this copy,
//     else delivered.
//  4. Not archived: new.
//  5. GaveUp: given-up (a held message given up too: it is not fetched
//     again).
//  6. Held: held, whenever its refetch is due.
//  7. NextAttempt after now: waiting; otherwise (NextAttempt zero or not
//     after now) due.
//
// For a record not deleted and without an unknown Disposition,
// State(now).Settled() == Settled().
func (r *Record) State(now time.Time) State {
	switch {
	case r.Deleted():
		return StateDeleted
	case r.Disposition == DispositionBadmail:
		return StateBadmail
	case r.Disposition == DispositionDeletedRejected:
		return StateDeletedOnReject
	case r.Disposition != "":
		return StateGivenUp
	case r.Delivered():
		for _, rc := range r.Recipients {
			if rc.Status == Accepted {
				return StateDelivered
			}
		}
		return StateSuppressed
	case !r.Archived():
		return StateNew
	case r.GaveUp:
		return StateGivenUp
	case r.Held != "":
		return StateHeld
	case r.NextAttempt.After(now):
		return StateWaiting
	}
	return StateDue
}
