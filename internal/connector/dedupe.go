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
// adjacent copies in one mailbox; POPcon keys on Message-ID and recipient,
// and so does this connector: a recipient that accepted a message with
// the same Message-ID within Mailbox.DuplicateWindow is not sent another
// copy.
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
// What it cannot do: two pollers delivering two copies of one message to
// the same recipient at the same moment (two mailboxes polled in
// parallel) both look the Message-ID up before either has recorded its
// 250, and both deliver: the recipient gets two copies, never none.
// Mailboxes polled one after the other, and copies in one mailbox (one
// poll delivers its messages one at a time), are suppressed. Two different
// messages that carry the same Message-ID (a broken or hostile sender)
// are taken for copies: the later one is suppressed, kept in the archive
// and in the ledger with the reply naming the first.

// suppressDuplicates marks each recipient of rec that already accepted
// another copy of the message within the mailbox's window as a suppressed
// duplicate. When no recipient is left to send to, it records rec (settled,
// like a delivered message) and returns true: there is nothing to relay.
func (p *poll) suppressDuplicates(ctx context.Context, rec *ledger.Record, log *slog.Logger) (bool, error) {
	window := p.mb.DuplicateWindow
	if window <= 0 || rec.MessageIDAdded || rec.MessageID == "" {
		return false, nil
	}
	var addrs []string
	for _, rc := range rec.Recipients {
		if !rc.Status.Done() {
			addrs = append(addrs, rc.Address)
		}
	}
	if len(addrs) == 0 {
		return false, nil
	}
	found, err := p.c.Ledger.Accepted(ctx, rec.MessageID, addrs)
	if err != nil {
		return false, fmt.Errorf("mailbox %s: ledger: duplicate lookup: %w", p.mb.ID, err)
	}
	now := p.c.now().UTC()
	n := 0
	for i := range rec.Recipients {
		rc := &rec.Recipients[i]
		first, ok := found[rc.Address]
		if !ok || rc.Status.Done() || first.At.Before(now.Add(-window)) ||
			(first.Mailbox == rec.Mailbox && first.UIDL == rec.UIDL) {
			continue
		}
		rc.Status, rc.Code, rc.Enhanced, rc.At = ledger.Suppressed, 0, "", now
		rc.Reply = fmt.Sprintf("duplicate: this Message-ID was accepted for this recipient from mailbox %s, UIDL %s, at %s",
			first.Mailbox, first.UIDL, first.At.UTC().Format(time.RFC3339))
		n++
		log.Info("duplicate copy suppressed", "message_id", rec.MessageID, "recipient", rc.Address,
			"first_mailbox", first.Mailbox, "first_uidl", first.UIDL, "first_accepted", first.At)
	}
	if n == 0 {
		return false, nil
	}
	p.res.Suppressed += n
	if !rec.Delivered() {
		return false, nil // the others are sent; the marks are recorded with their outcomes
	}
	rec.NextAttempt, rec.LastError = time.Time{}, ""
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := p.c.Ledger.Put(wctx, rec); err != nil {
		return true, fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
	}
	log.Info("every recipient has this message from another copy: not relayed", "message_id", rec.MessageID, "outcome", string(ledger.Suppressed))
	return true, p.hook(StepDeliveryRecorded, rec.UIDL)
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
			acc = append(acc, ledger.Acceptance{MessageID: rec.MessageID, Recipient: rc.Address, At: rc.At, Expires: rc.At.Add(window)})
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
