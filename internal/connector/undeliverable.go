package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/message"
	"github.com/popconnector/popconnector/internal/notify"
	"github.com/popconnector/popconnector/internal/relay"
)

// UndeliverableAction is what happens to a message Exchange rejects (the
// "Undeliverable Messages" options of the Exchange connector manuals).
type UndeliverableAction string

const (
	// LeaveRejected leaves a rejected message on the POP3 server and
	// retries it (the default, and the only safe choice until the
	// receive connector is tested).
	LeaveRejected UndeliverableAction = "leave"
	// DeleteRejected deletes a message from the POP3 server when every
	// recipient that did not accept it was refused with one of
	// Undeliverable.DeleteOnCodes (never on a relay refusal).
	DeleteRejected UndeliverableAction = "delete"
	// BadmailRejected copies a permanently rejected message under the
	// archive's badmail/ prefix with a reason, then deletes it from the
	// POP3 server.
	BadmailRejected UndeliverableAction = "badmail"
)

// Undeliverable is a mailbox's undeliverable option.
type Undeliverable struct {
	Action        UndeliverableAction // "" = LeaveRejected
	DeleteOnCodes []notify.ReplyCode  // with DeleteRejected: the replies that allow deleting (config's default_delete_on_codes)
}

// NotifySettings are the postmaster notice switches (POPcon manual:
// notify on spam, on unknown recipient, on badmail).
type NotifySettings struct {
	To               string // the postmaster's address; "" = no notices
	Spam             bool
	UnknownRecipient bool
	// Badmail also selects the notices about held messages: both are
	// mail the connector set aside or cannot relay as the server lists it.
	Badmail     bool
	RelayDenied bool
	TooLarge    bool
}

func (n NotifySettings) enabled(c notify.Cause) bool {
	switch c {
	case notify.CauseSpam:
		return n.Spam
	case notify.CauseUnknownRecipient:
		return n.UnknownRecipient
	case notify.CauseBadmail:
		return n.Badmail
	case notify.CauseRelayDenied:
		return n.RelayDenied
	case notify.CauseTooLarge:
		return n.TooLarge
	case notify.CauseHeld:
		return n.Badmail
	}
	return false
}

// BadmailPrefix starts the archive key of every badmail copy:
// badmail/<original key>, with its reason in badmail/<original key>.reason.json.
const BadmailPrefix = "badmail/"

// failure is one recipient's failed outcome in this attempt.
type failure struct {
	addr   string
	err    *relay.Error
	remote string
}

// attempt is what one delivery attempt found, for the decision and the
// notices.
type attempt struct {
	at          time.Time
	failed      []failure
	loop        bool
	held        bool               // a confirmed hold (held.go), not a delivery attempt
	reason      string             // why the message was disposed of
	disposition ledger.Disposition // decided in this attempt
	// badmail reports a badmail copy made in this attempt: with the
	// disposition badmail, or on giving up a message that stays on the
	// server.
	badmail bool
}

// anyTemporary reports a temporary failure in the attempt.
func (a *attempt) anyTemporary() bool {
	for _, f := range a.failed {
		if f.err.Temporary {
			return true
		}
	}
	return false
}

// tooLarge reports a refusal for size (notify.CauseTooLarge: 552, X.3.4,
// X.2.3, or the relay's own SIZE check).
func (a *attempt) tooLarge() bool {
	for _, f := range a.failed {
		if notify.Classify(f.err) == notify.CauseTooLarge {
			return true
		}
	}
	return false
}

// recordedTooLarge reports a recipient whose last refusal was for size.
func recordedTooLarge(rec *ledger.Record) bool {
	for _, rc := range rec.Recipients {
		if rc.Status == ledger.Rejected && notify.Classify(relayError(rc.LastFailure())) == notify.CauseTooLarge {
			return true
		}
	}
	return false
}

// countOwnTrace counts the Received fields in the archived header that
// this connector wrote: "by <our hostname> (popconnector)".
func (p *poll) countOwnTrace(s *message.Summary) int {
	if s.Header == nil || p.c.Settings.Hostname == "" {
		return 0
	}
	mark := "by " + strings.ToLower(p.c.Settings.Hostname) + " (popconnector)"
	n := 0
	for _, v := range s.Header.Values("Received") {
		if strings.Contains(strings.ToLower(strings.Join(strings.Fields(v), " ")), mark) {
			n++
		}
	}
	return n
}

// setAside records the disposition d decided for rec: for badmail, a
// copy under badmail/ with the reason object first. The disposition is
// only set on rec here; the caller records it in the same ledger write as
// the attempt's outcomes, before any DELE. A badmail copy that cannot be
// made leaves the message on the server, to be set aside by a later
// attempt: nothing is lost.
func (p *poll) setAside(ctx context.Context, rec *ledger.Record, d Decision, att *attempt, log *slog.Logger) error {
	if d.Disposition == ledger.DispositionBadmail {
		key, err := p.copyToBadmail(ctx, rec, d.Reason)
		if err != nil {
			log.Error("could not move to badmail; left on the POP3 server", "message_id", rec.MessageID, "err", err)
			return nil
		}
		rec.BadmailKey = key
		att.badmail = true
		p.emit(EventBadmail, rec.UIDL)
		if d.GaveUp {
			rec.GaveUp = true
			p.emit(EventGaveUp, rec.UIDL)
		}
		log.Error("moved to badmail; it will be deleted from the POP3 server", "message_id", rec.MessageID, "badmail_key", key, "reason", d.Reason)
	} else {
		p.emit(EventDeletedRejected, rec.UIDL)
		log.Warn("rejected with a code the undeliverable option deletes on; it will be deleted from the POP3 server",
			"message_id", rec.MessageID, "archive_key", rec.ArchiveKey, "reason", d.Reason)
	}
	rec.Disposition, rec.DispositionReason, rec.DispositionAt = d.Disposition, d.Reason, att.at
	rec.NextAttempt, rec.NextRefetch = time.Time{}, time.Time{}
	att.disposition, att.reason = d.Disposition, d.Reason
	return nil
}

// giveUpOnServer gives up a message whose undeliverable option keeps it
// on the POP3 server: no more automatic attempts, a copy under badmail/
// with the reason, and the postmaster's notice; the server's copy stays.
func (p *poll) giveUpOnServer(ctx context.Context, rec *ledger.Record, att *attempt, reason string, log *slog.Logger) error {
	key, err := p.copyToBadmail(ctx, rec, reason+"; left on the POP3 server")
	if err != nil {
		// Nothing is lost, and the next attempt gives up again.
		log.Error("could not copy to badmail on giving up; tried again at the next attempt", "message_id", rec.MessageID, "err", err)
		return nil
	}
	rec.BadmailKey, rec.GaveUp, rec.NextAttempt = key, true, time.Time{}
	att.badmail, att.reason = true, reason
	p.emit(EventBadmail, rec.UIDL)
	p.emit(EventGaveUp, rec.UIDL)
	log.Error("gave up: copied to badmail and left on the POP3 server; no more automatic attempts",
		"message_id", rec.MessageID, "badmail_key", key, "reason", reason)
	return nil
}

func formatAge(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// badmailReason is the reason object stored beside a badmail copy.
type badmailReason struct {
	Mailbox    string             `json:"mailbox"`
	UIDL       string             `json:"uidl"`
	MessageID  string             `json:"message_id,omitempty"`
	ArchiveKey string             `json:"archive_key"`
	SHA256     string             `json:"sha256"`
	FirstSeen  time.Time          `json:"first_seen"`
	At         time.Time          `json:"at"`
	Reason     string             `json:"reason"`
	Recipients []ledger.Recipient `json:"recipients"`
}

// copyToBadmail copies the archived message to badmail/<key> and writes
// the reason object beside it; both Puts are idempotent, so a crash
// before the ledger records the disposition only repeats them.
func (p *poll) copyToBadmail(ctx context.Context, rec *ledger.Record, reason string) (string, error) {
	key := BadmailPrefix + rec.ArchiveKey
	body, err := p.c.Archive.Open(ctx, rec.ArchiveKey)
	if err != nil {
		return "", fmt.Errorf("badmail: %w", err)
	}
	info, err := p.c.Archive.Put(ctx, key, archive.Meta{Mailbox: p.mb.ID, UIDL: rec.UIDL, MessageID: rec.MessageID}, body)
	body.Close()
	if err != nil {
		return "", fmt.Errorf("badmail: %w", err)
	}
	if info.SHA256 != rec.SHA256 {
		return "", fmt.Errorf("badmail: copy of %s has digest %s, the archive recorded %s", rec.ArchiveKey, info.SHA256, rec.SHA256)
	}
	data, err := json.MarshalIndent(badmailReason{
		Mailbox: p.mb.ID, UIDL: rec.UIDL, MessageID: rec.MessageID, ArchiveKey: rec.ArchiveKey, SHA256: rec.SHA256,
		FirstSeen: rec.FirstSeen, At: p.c.now().UTC(), Reason: reason, Recipients: rec.Recipients,
	}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("badmail: %w", err)
	}
	if _, err := p.c.Archive.Put(ctx, key+".reason.json", archive.Meta{Mailbox: p.mb.ID, UIDL: rec.UIDL}, bytes.NewReader(data)); err != nil {
		return "", fmt.Errorf("badmail: %w", err)
	}
	return key, nil
}

// sendNotices tells the postmaster about this attempt: one notice per
// cause the switches select and the ledger has not recorded yet. A notice
// is recorded as sent only after the SMTP server accepted it, so none is
// sent twice once accepted (up to the same window as a delivery: accepted
// but the ledger write lost). A notice that was not accepted (route down,
// refused, archive unreadable) is tried again: for a message left on the
// server, at its next delivery attempt; for a message already set aside
// (badmail, or deleted on a listed code), by retryNotices at the retry
// interval, until the give-up age has passed since it was set aside.
func (p *poll) sendNotices(ctx context.Context, rec *ledger.Record, att *attempt, log *slog.Logger) error {
	ns := p.c.Settings.Notify
	if ns.To == "" {
		return nil
	}
	causes, byCause := noticesDue(rec, att, ns)
	if len(causes) == 0 {
		return p.scheduleNotices(ctx, rec, 0, 0, "", log)
	}
	header, err := p.originalHeader(ctx, rec)
	if err != nil {
		log.Warn("notice not sent: archived copy unreadable", "err", err)
		return p.scheduleNotices(ctx, rec, 0, len(causes), err.Error(), log)
	}
	sent, failed := 0, 0 // refused notices count as sent: recorded, never tried again
	lastErr := ""
	for _, c := range causes {
		var buf bytes.Buffer
		n := notify.Notice{
			From: p.c.Settings.Postmaster, To: ns.To, ReportingMTA: p.c.Settings.Hostname,
			ReceivedFromMTA: p.mb.Server, OriginalHeader: header, Recipients: byCause[c], Cause: c,
			Reason: att.reason, Disposition: p.dispositionText(rec), Mailbox: p.mb.ID, ArchiveKey: rec.ArchiveKey,
			ArrivalDate: rec.ArchivedAt, Now: p.c.now().UTC(),
		}
		if err := notify.BuildDSN(&buf, n); err != nil {
			// The POP3 host may not be a valid MTA name; it is optional.
			n.ReceivedFromMTA = ""
			buf.Reset()
			if err := notify.BuildDSN(&buf, n); err != nil {
				// Building again gives the same result: not retried.
				log.Error("notice not built", "cause", c, "err", err)
				continue
			}
		}
		if err := p.routing.sendNotice(ctx, ns.To, buf.Bytes()); err != nil {
			if notify.NoticeRefusedPermanently(err) {
				// The same notice would meet the same refusal (a content
				// filter, an unknown postmaster address): say so once.
				rec.NoticesRefused = append(rec.NoticesRefused, string(c))
				sent++
				log.Error("notice to the postmaster refused by the SMTP server; not sent again", "cause", c, "to", ns.To, "err", err)
				continue
			}
			failed++
			lastErr = err.Error()
			log.Warn("notice to the postmaster not accepted; retried later", "cause", c, "to", ns.To, "err", err)
			continue
		}
		rec.Notified = append(rec.Notified, string(c))
		p.emit(EventNotice, rec.UIDL)
		sent++
		log.Info("notice sent to the postmaster", "cause", c, "to", ns.To, "message_id", rec.MessageID)
	}
	return p.scheduleNotices(ctx, rec, sent, failed, lastErr, log)
}

// noticesDue are the causes the postmaster is to be told about for this
// attempt (that the switches select and the ledger has not recorded), in
// order, each with its recipients' statuses.
func noticesDue(rec *ledger.Record, att *attempt, ns NotifySettings) ([]notify.Cause, map[notify.Cause][]notify.RecipientStatus) {
	byCause := map[notify.Cause][]notify.RecipientStatus{}
	var causes []notify.Cause
	add := func(c notify.Cause, rs notify.RecipientStatus) {
		if !ns.enabled(c) || rec.WasNotified(string(c)) {
			return
		}
		if _, ok := byCause[c]; !ok {
			causes = append(causes, c)
		}
		byCause[c] = append(byCause[c], rs)
	}
	for _, f := range att.failed {
		add(notify.Classify(f.err), notify.RecipientFromError(f.addr, f.err, f.remote, att.at))
	}
	if att.held && att.disposition == "" {
		for _, rc := range rec.Recipients {
			add(notify.CauseHeld, notify.RecipientStatus{Final: rc.Address, Action: notify.ActionDelayed, Status: "4.6.0", LastAttempt: att.at})
		}
	}
	if att.badmail || att.disposition == ledger.DispositionBadmail {
		thisAttempt := map[string]failure{}
		for _, f := range att.failed {
			thisAttempt[f.addr] = f
		}
		for _, rc := range rec.Recipients {
			if rc.Status.Done() {
				continue
			}
			if f, ok := thisAttempt[rc.Address]; ok {
				// Set aside for good: failed, with the reply of this attempt.
				rs := notify.RecipientFromError(f.addr, f.err, f.remote, att.at)
				rs.Action = notify.ActionFailed
				add(notify.CauseBadmail, rs)
				continue
			}
			rs := notify.RecipientStatus{Final: rc.Address, Action: notify.ActionFailed, Status: "5.0.0", LastAttempt: rc.At}
			if att.loop {
				rs.Status = "5.4.6"
			} else if att.held {
				rs.Status = "5.6.0" // what the server sends is not what it holds
			} else if rc.Enhanced != "" && (rc.Enhanced[0] == '4' || rc.Enhanced[0] == '5') {
				rs.Status = rc.Enhanced
			} else if rc.Status == ledger.Deferred {
				rs.Status = "4.4.7" // delivery time expired
			}
			if rc.Reply != "" && !att.loop {
				rs.DiagnosticCode = rc.Reply
			}
			add(notify.CauseBadmail, rs)
		}
	}
	return causes, byCause
}

// scheduleNotices records what sendNotices did. For a message set aside
// (rec.Disposition set), whose record no delivery attempt will visit
// again, NextNotice is when retryNotices tries the notices not accepted
// yet; zero when none is due or the give-up age has passed since the
// message was set aside. A message left on the server needs no schedule:
// its next delivery attempt sends what is still due.
func (p *poll) scheduleNotices(ctx context.Context, rec *ledger.Record, sent, failed int, lastErr string, log *slog.Logger) error {
	changed := sent > 0
	if setAside, ok := noticeOnlyRecord(rec); ok {
		next := time.Time{}
		if failed > 0 {
			now := p.c.now().UTC()
			giveUp := p.c.Settings.GiveUpAfter
			if giveUp > 0 && now.Sub(setAside) >= giveUp {
				log.Error("gave up on the notice to the postmaster: not accepted since the message was set aside",
					"message_id", rec.MessageID, "to", p.c.Settings.Notify.To, "set_aside", setAside.Format(time.RFC3339),
					"give_up_after", formatAge(giveUp), "last_error", lastErr)
			} else {
				next = now.Add(p.pace().retry)
			}
		}
		if !next.Equal(rec.NextNotice) {
			rec.NextNotice = next
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return p.putRecord(ctx, rec)
}

// noticeOnlyRecord reports whether rec is a message no delivery attempt
// will visit again, whose notices retryNotices sends, and when it was set
// aside: a disposition, or given up while left on the server (held
// messages excepted: their refetches send what is due).
func noticeOnlyRecord(rec *ledger.Record) (time.Time, bool) {
	switch {
	case rec.Disposition != "":
		return rec.DispositionAt, true
	case rec.GaveUp && rec.Held == "":
		return rec.LastAttempt, true
	}
	return time.Time{}, false
}

// retryNotices tries again the notices of messages set aside earlier
// (badmail, or deleted on a listed code) that the SMTP server did not
// accept, once they are due: whether or not the message is still on the
// POP3 server, since the archive and the ledger hold all a notice needs.
// The notice is rebuilt from the ledger record: the same causes,
// recipients, statuses, replies and reason as the first one, without the
// Remote-MTA field (the record does not keep which host answered).
func (p *poll) retryNotices(ctx context.Context, recs []*ledger.Record) error {
	if p.c.Settings.Notify.To == "" {
		return nil
	}
	now := p.c.now()
	for _, r := range recs {
		if _, ok := noticeOnlyRecord(r); !ok || r.NextNotice.IsZero() || now.Before(r.NextNotice) {
			continue
		}
		if why := p.budgetExhausted(ctx, 0, 0, ServerMessage{}); why != "" {
			p.stop(why)
			return nil
		}
		att := p.recordedAttempt(r)
		if err := p.sendNotices(ctx, r, &att, p.log.With("uidl", r.UIDL)); err != nil {
			return err
		}
	}
	return nil
}

// recordedAttempt rebuilds, from the ledger record of a message set aside,
// the attempt its notices describe: each recipient that did not accept it,
// with the last reply recorded for it.
func (p *poll) recordedAttempt(rec *ledger.Record) attempt {
	att := attempt{at: rec.LastAttempt, reason: rec.DispositionReason, disposition: rec.Disposition,
		loop: rec.TraceHops > p.c.Settings.MaxTraceHops, badmail: rec.BadmailKey != ""}
	if att.at.IsZero() {
		att.at = rec.DispositionAt
	}
	for _, rc := range rec.Recipients {
		if rc.Status == ledger.Rejected || rc.Status == ledger.Deferred {
			att.failed = append(att.failed, failure{addr: rc.Address, err: relayError(rc.LastFailure())})
		}
	}
	return att
}

// originalHeader reads the start of the archived copy: BuildDSN keeps its
// header section.
func (p *poll) originalHeader(ctx context.Context, rec *ledger.Record) ([]byte, error) {
	rc, err := p.c.Archive.Open(ctx, rec.ArchiveKey)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, notify.MaxOriginalHeader+1024))
}

func (p *poll) dispositionText(rec *ledger.Record) string {
	switch rec.Disposition {
	case ledger.DispositionBadmail:
		return "moved to badmail (" + rec.BadmailKey + ") and deleted from the POP3 server"
	case ledger.DispositionDeletedRejected:
		return "deleted from the POP3 server; the archive keeps a copy (" + rec.ArchiveKey + ")"
	}
	switch {
	case rec.Delivered():
		return ""
	case rec.GaveUp && rec.BadmailKey != "":
		return "copied to badmail (" + rec.BadmailKey + ") and left on the POP3 server; no more automatic attempts"
	case heldConfirmed(rec):
		return "left on the POP3 server; fetched again every " + p.pace().max.String()
	case recordedTooLarge(rec):
		return "left on the POP3 server; retried every " + p.pace().max.String()
	}
	return "left on the POP3 server; retried every " + p.pace().retry.String()
}
