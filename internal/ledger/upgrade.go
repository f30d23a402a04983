package ledger

import "time"

// Upgrade brings a record read from storage to the current meaning of its
// fields. Every implementation applies it to each record it returns (Get
// and List), so records written by older builds read as if written today;
// what is stored changes only when the record is next Put.
//
// Before NextRefetch and NextNotice existed, NextAttempt held all three
// timers. Upgrade moves it to the field that meant it:
//
//   - A record no delivery attempt visits again, whose NextNotice is
//     zero, takes NextNotice = NextAttempt: it has a Disposition, or was
//     given up while left on the server (GaveUp, not Held; such a record
//     has a BadmailKey). Older builds scheduled its notice retries there.
//     This rule comes first: a held message set aside as badmail keeps
//     Held, and its NextAttempt was its notice timer.
//   - Otherwise a held record (Held set) whose NextRefetch is zero takes
//     NextRefetch = NextAttempt: older builds scheduled its refetch there.
//
// NextAttempt is then cleared. A record whose target field is already
// set was written by a current build and is left as it is; current
// writers keep NextAttempt zero on such records (no delivery attempt is
// due for them), so applying Upgrade twice changes nothing.
func (r *Record) Upgrade() {
	if r.NextAttempt.IsZero() {
		return
	}
	switch {
	case r.Disposition != "" || (r.GaveUp && r.Held == ""):
		if r.NextNotice.IsZero() {
			r.NextNotice, r.NextAttempt = r.NextAttempt, time.Time{}
		}
	case r.Held != "":
		if r.NextRefetch.IsZero() {
			r.NextRefetch, r.NextAttempt = r.NextAttempt, time.Time{}
		}
	}
}
