package connector

import (
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// Status is what the ledger says of one mailbox.
type Status struct {
	Mailbox string
	// OnServer counts messages the ledger believes are still on the POP3
	// server (not confirmed deleted), as of the last poll.
	OnServer  int
	Delivered int // every recipient accepted (on the server or not)
	Deleted   int // deletion confirmed by QUIT
	Deferred  []*ledger.Record
	Rejected  []*ledger.Record
	GaveUp    []*ledger.Record
	// Badmail were set aside under the archive's badmail/ prefix;
	// DeletedRejected were deleted on a rejection the undeliverable option
	// "delete" lists.
	Badmail         []*ledger.Record
	DeletedRejected []*ledger.Record
	// Held are left on the server because the server sends other bytes
	// than it lists (held.go); each record's Held says how they differ.
	Held    []*ledger.Record
	Pending int // archived, not yet attempted
	// Suppressed counts messages with a recipient that was not sent this
	// copy because it accepted another copy (ledger.Suppressed); a copy
	// whose every recipient has the message also counts as Delivered.
	Suppressed int
	// OldestUndelivered is the first-seen time of the oldest undelivered message.
	OldestUndelivered time.Time
}

// Summarize classifies a mailbox's records by their state
// (ledger.Record.State); a message waiting for its next attempt and one
// due now fall in the same group.
func Summarize(mailbox string, recs []*ledger.Record) Status {
	s := Status{Mailbox: mailbox}
	now := time.Now()
	for _, r := range recs {
		st := r.State(now)
		if st == ledger.StateDeleted {
			s.Deleted++
		} else {
			s.OnServer++
		}
		if hasStatus(r, ledger.Suppressed) {
			s.Suppressed++
		}
		switch {
		case r.Delivered():
			s.Delivered++
			continue
		case st == ledger.StateBadmail || (st == ledger.StateDeleted && r.Disposition == ledger.DispositionBadmail):
			s.Badmail = append(s.Badmail, r)
			continue
		case st == ledger.StateDeletedOnReject || (st == ledger.StateDeleted && r.Disposition == ledger.DispositionDeletedRejected):
			s.DeletedRejected = append(s.DeletedRejected, r)
			continue
		}
		if s.OldestUndelivered.IsZero() || r.FirstSeen.Before(s.OldestUndelivered) {
			s.OldestUndelivered = r.FirstSeen
		}
		switch {
		case st == ledger.StateHeld:
			s.Held = append(s.Held, r)
		case st == ledger.StateGivenUp:
			s.GaveUp = append(s.GaveUp, r)
		case hasStatus(r, ledger.Deferred):
			s.Deferred = append(s.Deferred, r)
		case hasStatus(r, ledger.Rejected):
			s.Rejected = append(s.Rejected, r)
		default:
			s.Pending++
		}
	}
	return s
}

func hasStatus(r *ledger.Record, st ledger.RecipientStatus) bool {
	for _, rc := range r.Recipients {
		if rc.Status == st {
			return true
		}
	}
	return false
}
