package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// Duplicate suppression across copies.
//
// The same message often reaches several POP3 mailboxes (a mailing list
// writing to two people whose maildrops are both collected, or a global
// mailbox holding one copy per envelope recipient). fetchmail only drops
// adjacent copies in one mailbox; POPcon keys on Message-ID and recipient.
// This connector keys on Message-ID and recipient too, and compares the
// content: a recipient that accepted the same message (same Message-ID,
// same content fingerprint) within Mailbox.DuplicateWindow is not sent
// another copy. A message with a reused Message-ID but other content is
// not a duplicate: it is delivered.
//
//   - Key: the Message-ID as the inspector records it (no angle brackets;
//     left part exact, domain part without regard to case) and the final
//     recipient address after global-mailbox resolution and rewrite (local
//     part exact, domain lower-cased): ledger.DuplicateKey. A message
//     without a Message-ID (the connector then adds one derived from the
//     ledger key) is never suppressed and never suppresses another.
//   - What counts as a first copy: a 250 recorded for another ledger
//     record (another mailbox, another UIDL, or another generation of the
//     same UIDL) within the window. An entry of the duplicate index is
//     written only with or after the durable record of that 250
//     (ledger.Ledger.PutAccepted), so a copy is suppressed, and may then
//     be deleted from the POP3 server, only when some copy's delivery to
//     that recipient is recorded. A crash between the 250 and its record is
//     the one accepted duplicate window, as before. An entry that could
//     not be written after its record (ledger.ErrIndexNotWritten) costs a
//     possible duplicate, never a loss: the delivery is recorded, so the
//     message is deleted and not sent again; only a later copy may be.
//   - A suppressed recipient's outcome is recorded as
//     ledger.Suppressed with a reply naming the first copy. It is final, as
//     Accepted is: a copy whose every recipient has the message is settled
//     and follows the after-delivery policy like a delivered one. The
//     archive keeps the copy. A copy with some new recipients is sent to
//     those only.
//   - A record never suppresses itself: a retry of the same record goes
//     only to its recipients that have not accepted, as always.
//   - Window: each delivering mailbox writes its entries to expire after
//     its own window; a copy is suppressed by an entry no older than its
//     own mailbox's window. When the two differ the shorter applies. A
//     window of 0 turns suppression off for the mailbox: it neither looks
//     entries up nor writes them.
//
//   - Content: a copy is suppressed only when its content fingerprint
//     (message.Summary.Fingerprint: the body and the Date, From, Subject
//     and Message-ID fields, which every POP3 copy shares whatever
//     trace fields it got) equals the one recorded with the first copy's
//     entry. A different message with a reused Message-ID (scanners,
//     printers and broken bulk mailers reuse them) is delivered, with a
//     warning naming both copies. An entry without a fingerprint (written
//     before fingerprints existed) or a copy without one (a header that did
//     not parse) never suppresses: the copy is delivered.
//   - Copies delivered at the same moment (mailboxes polled in parallel):
//     before DATA, a copy takes one conditional claim per (Message-ID,
//     fingerprint) in the ledger (ledger.Ledger.Claim), then looks the
//     index up. A copy that meets another record's live claim leaves the
//     recipients the lookup does not cover deferred to its next attempt,
//     unless the holder's record shows the attempt that took the claim is
//     recorded (then the claim is taken over, and the holder's own
//     acceptances count as first copies). A claim expires after the time
//     a delivery and its record can take (claimTTL). A claim alone never
//     suppresses: a crash while holding one only delays another copy.
//
// What it cannot do: a poller frozen past its claim's expiry while its
// message is in DATA can see another copy delivered meanwhile (the reply
// window, as for any delivery). An index entry replaces the earlier one
// for the same Message-ID and recipient: after two different messages
// with one Message-ID reached a recipient, a further copy of the first
// is compared with the second and delivered again (a second copy, never
// a loss).

// claimTTL is how long a delivery claim holds: a transaction's SMTP
// replies (each waits up to the delivery timeout), the transfer at a slow
// 1 MiB/s, and the ledger write of the replies.
func (p *poll) claimTTL(size int64) time.Duration {
	timeout := p.c.Settings.DeliveryTimeout
	return 2*timeout + time.Duration(size>>20)*time.Second + cleanupTimeout
}

// suppressDuplicates marks each recipient of rec that already accepted
// another copy of the same content within the mailbox's window as a
// suppressed duplicate, and defers the recipients another copy is being
// delivered to right now. It returns what it found, for Decide: every
// recipient has the message (CopiesAll), another copy holds the delivery
// claim (CopiesInFlight, with the holder), or some recipient still needs
// this copy (CopiesNone). The marks are recorded by the caller.
//
// The order matters: the lookup that decides what to send follows the
// claim that lets this copy send, so no copy can deliver in between. Only
// recorded acceptances suppress; a claim only makes a copy wait.
func (p *poll) suppressDuplicates(ctx context.Context, rec *ledger.Record, log *slog.Logger) (Copies, *ledger.Claim, error) {
	window := p.mb.DuplicateWindow
	if window <= 0 || rec.MessageIDAdded || rec.MessageID == "" || len(pendingRecipients(rec)) == 0 {
		return CopiesUnknown, nil, nil
	}
	now := p.c.now().UTC()
	c, claimable := p.claimFor(rec, now)
	var held *ledger.Claim // another copy's live claim
	var holder *ledger.Record
	if claimable {
		var err error
		if held, holder, err = p.claim(ctx, c, nil); err != nil {
			return CopiesUnknown, nil, err
		}
	}
	suppressed, err := p.markCopies(ctx, rec, holder, now, log)
	if err != nil {
		return CopiesUnknown, nil, err
	}
	if held != nil && len(pendingRecipients(rec)) > 0 && claimFinished(held, holder) {
		// The holder's attempt is recorded: take its claim over, and look
		// again, since the holder (or a copy that took over from it) may
		// have delivered after the lookup above.
		if held, _, err = p.claim(ctx, c, held); err != nil {
			return CopiesUnknown, nil, err
		}
		if held == nil {
			n, err := p.markCopies(ctx, rec, nil, now, log)
			if err != nil {
				return CopiesUnknown, nil, err
			}
			suppressed += n
		}
	}
	if suppressed > 0 {
		p.tally.emit(Event{Mailbox: p.mb.ID, UIDL: rec.UIDL, Kind: EventSuppressed, Count: suppressed})
	}
	switch {
	case len(pendingRecipients(rec)) == 0:
		return CopiesAll, nil, nil
	case held != nil:
		return CopiesInFlight, held, nil
	}
	return CopiesNone, nil, nil
}

// recordCopies records what the duplicate lookup decided for rec when
// nothing is sent: every recipient has the message from another copy, or
// the recipients left wait for another copy in flight (due again at the
// next poll; not an attempt of this copy).
func (p *poll) recordCopies(ctx context.Context, rec *ledger.Record, d Decision, held *ledger.Claim, log *slog.Logger) error {
	now := p.c.now().UTC()
	if held != nil {
		waiting := 0
		for i := range rec.Recipients {
			if rc := &rec.Recipients[i]; !rc.Status.Done() {
				rc.Status, rc.Code, rc.Enhanced, rc.At = ledger.Deferred, 0, "", now
				rc.Reply = fmt.Sprintf("waiting: another copy of this message is being delivered from mailbox %s, UIDL %s (claimed until %s)",
					held.Mailbox, held.UIDL, held.Expires.UTC().Format(time.RFC3339))
				rc.Failure = &ledger.Failure{Op: "claim", Temporary: true, Local: true, Message: rc.Reply}
				waiting++
			}
		}
		rec.NextAttempt, rec.LastError = now, d.Reason
		p.emit(EventDeferred, rec.UIDL)
		log.Info("another copy of this message is being delivered: recipients left for the next poll",
			"message_id", rec.MessageID, "waiting", waiting, "holder_mailbox", held.Mailbox, "holder_uidl", held.UIDL)
	} else {
		rec.NextAttempt, rec.LastError = time.Time{}, ""
		log.Info("every recipient has this message from another copy: not relayed", "message_id", rec.MessageID, "outcome", string(ledger.Suppressed))
	}
	return p.putRecord(ctx, rec)
}

// pendingRecipients lists the recipients of rec that do not have the
// message yet.
func pendingRecipients(rec *ledger.Record) []string {
	var addrs []string
	for _, rc := range rec.Recipients {
		if !rc.Status.Done() {
			addrs = append(addrs, rc.Address)
		}
	}
	return addrs
}

// markCopies marks as suppressed each recipient of rec that accepted the
// same content from another copy within the window: by the duplicate
// index, or by the record of a claim's holder whose attempt is recorded.
// A copy with another fingerprint, or one that cannot be compared, is
// not a first copy: it is delivered, with a warning or a note.
func (p *poll) markCopies(ctx context.Context, rec *ledger.Record, holder *ledger.Record, now time.Time, log *slog.Logger) (int, error) {
	found, err := p.c.Ledger.Accepted(ctx, rec.MessageID, pendingRecipients(rec))
	if err != nil {
		return 0, fmt.Errorf("mailbox %s: ledger: duplicate lookup: %w", p.mb.ID, err)
	}
	if holder != nil && holder.MessageID == rec.MessageID && holder.Fingerprint == rec.Fingerprint {
		for _, rc := range holder.Recipients {
			if _, ok := found[rc.Address]; !ok && rc.Status == ledger.Accepted {
				found[rc.Address] = ledger.Acceptance{MessageID: holder.MessageID, Recipient: rc.Address, Mailbox: holder.Mailbox,
					UIDL: holder.UIDL, At: rc.At, Fingerprint: holder.Fingerprint}
			}
		}
	}
	n := 0
	for i := range rec.Recipients {
		rc := &rec.Recipients[i]
		first, ok := found[rc.Address]
		if rc.Status.Done() || !ok || (first.Mailbox == rec.Mailbox && first.UIDL == rec.UIDL) || first.At.Before(now.Add(-p.mb.DuplicateWindow)) {
			continue
		}
		switch {
		case first.Fingerprint == "" || rec.Fingerprint == "":
			log.Info("an earlier message with this Message-ID cannot be compared with this one: delivered",
				"message_id", rec.MessageID, "recipient", rc.Address, "first_mailbox", first.Mailbox, "first_uidl", first.UIDL)
		case first.Fingerprint != rec.Fingerprint:
			log.Warn("same Message-ID, other content: not a duplicate, delivered", "message_id", rec.MessageID, "recipient", rc.Address,
				"first_mailbox", first.Mailbox, "first_uidl", first.UIDL, "first_accepted", first.At)
		default:
			rc.Status, rc.Code, rc.Enhanced, rc.At = ledger.Suppressed, 0, "", now
			rc.Reply = fmt.Sprintf("duplicate: this message was accepted for this recipient from mailbox %s, UIDL %s, at %s",
				first.Mailbox, first.UIDL, first.At.UTC().Format(time.RFC3339))
			n++
			log.Info("duplicate copy suppressed", "message_id", rec.MessageID, "recipient", rc.Address,
				"first_mailbox", first.Mailbox, "first_uidl", first.UIDL, "first_accepted", first.At)
		}
	}
	return n, nil
}

// claimFor is rec's delivery claim, and false for a message that takes
// none: without a fingerprint it is never suppressed, so it needs no
// claim, and a Message-ID the index refuses (over 998 octets) is never
// indexed either.
func (p *poll) claimFor(rec *ledger.Record, now time.Time) (ledger.Claim, bool) {
	if _, ok := ledger.ClaimKey(rec.MessageID, rec.Fingerprint); !ok {
		return ledger.Claim{}, false
	}
	return ledger.Claim{MessageID: rec.MessageID, Fingerprint: rec.Fingerprint, Mailbox: rec.Mailbox, UIDL: rec.UIDL,
		At: now, Expires: now.Add(p.claimTTL(rec.Size))}, true
}

// claim takes the claim c (taking over takeOver, when given). It returns
// nil when c is now held, else the live claim of the other copy that
// holds it and that copy's record (nil if it has none).
func (p *poll) claim(ctx context.Context, c ledger.Claim, takeOver *ledger.Claim) (*ledger.Claim, *ledger.Record, error) {
	held, err := p.c.Ledger.Claim(ctx, c, takeOver)
	if err == nil {
		return nil, nil, nil
	}
	if !errors.Is(err, ledger.ErrClaimHeld) {
		return nil, nil, fmt.Errorf("mailbox %s: ledger: delivery claim: %w", p.mb.ID, err)
	}
	recs, err := p.c.Ledger.Get(ctx, held.Mailbox, []string{held.UIDL})
	if err != nil {
		return nil, nil, fmt.Errorf("mailbox %s: ledger: delivery claim holder: %w", p.mb.ID, err)
	}
	return &held, recs[held.UIDL], nil
}

// claimFinished reports whether the attempt that took held is over: its
// holder's record shows that attempt (or a later one) recorded, or the
// copy settled. A holder without a record, or whose attempt is not
// recorded (in DATA now, or crashed), is waited for until the claim
// expires.
func claimFinished(held *ledger.Claim, holder *ledger.Record) bool {
	return holder != nil && (!holder.LastAttempt.Before(held.At) || holder.Settled() || holder.Deleted())
}

// putOutcome records an attempt's outcomes. With duplicate suppression on,
// the recipients of sent (indexes into rec.Recipients) that accepted in
// this attempt get their duplicate-index entries (ledger.PutAccepted).
// Entries that could not be written after the record are logged, not
// returned: the outcome is recorded, so the message goes on to deletion
// like any delivered one, and is not counted as an unrecorded reply.
func (p *poll) putOutcome(ctx context.Context, rec *ledger.Record, sent []int) error {
	window := p.mb.DuplicateWindow
	if window <= 0 || rec.MessageIDAdded || rec.MessageID == "" {
		return p.c.Ledger.Put(ctx, rec)
	}
	var acc []ledger.Acceptance
	for _, i := range sent {
		if rc := rec.Recipients[i]; rc.Status == ledger.Accepted {
			acc = append(acc, ledger.Acceptance{MessageID: rec.MessageID, Recipient: rc.Address, At: rc.At, Expires: rc.At.Add(window),
				Fingerprint: rec.Fingerprint})
		}
	}
	err := p.c.Ledger.PutAccepted(ctx, rec, acc)
	if errors.Is(err, ledger.ErrIndexNotWritten) {
		p.log.Warn("delivery recorded, but not its duplicate-index entry: a later copy of this message may be delivered again",
			"uidl", rec.UIDL, "message_id", rec.MessageID, "err", err)
		return nil
	}
	return err
}
