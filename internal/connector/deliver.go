package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/relay"
)

// deliverIfDecided carries out what Decide says of an archived message on
// the delivering side: deliver it, set it aside (a loop), or nothing.
func (p *poll) deliverIfDecided(ctx context.Context, rec *ledger.Record, listing Listing, fetched bool) error {
	s := p.situation(rec, listing, Budget{Deliver: true})
	s.Fetched, s.FetchEnded = fetched, true
	return p.carryOut(ctx, rec, Decide(s), fetched)
}

// carryOut does what the delivering side does with decision d on rec.
func (p *poll) carryOut(ctx context.Context, rec *ledger.Record, d Decision, fetched bool) error {
	log := p.log.With("uidl", rec.UIDL)
	switch d.Action {
	case ActDeliver:
		return p.deliver(ctx, rec, log)
	case ActSetAside:
		att := attempt{at: p.c.now().UTC(), loop: true}
		rec.LastError = d.Reason
		return p.settle(ctx, rec, d, &att, nil, nil, log)
	case ActWait:
		if rec.Held == "" && !fetched {
			p.emit(EventNotDue, rec.UIDL)
		}
	}
	return nil
}

// deliver is one delivery attempt: the duplicate lookup, the send, the
// replies applied to the record (a pure step), the decision on what
// failed, and the record.
func (p *poll) deliver(ctx context.Context, rec *ledger.Record, log *slog.Logger) error {
	// An earlier message's outcome could not be recorded (another poller
	// took the mailbox over, the ledger failed): send nothing more.
	if err := p.outcomeErr(); err != nil {
		return err
	}
	if err := p.waitForCopies(rec); err != nil {
		return err
	}
	copies, held, err := p.suppressDuplicates(ctx, rec, log)
	if err != nil {
		return err
	}
	s := p.situation(rec, Listed, Budget{Deliver: true})
	s.Copies = copies
	if d := Decide(s); d.Action != ActDeliver {
		return p.recordCopies(ctx, rec, d, held, log) // every recipient has it, or another copy is in flight
	}
	now := p.c.now().UTC()
	// The message's place in the reply window, taken before its first
	// final "." and given back once its outcome is recorded: by the
	// background write (recordLater), by settle, or here on every other
	// way out (a panic included) when nothing of it was committed.
	slot := p.c.gates().replySlot()
	handedOn := false
	defer func() {
		if !handedOn {
			slot.release()
		}
	}()
	sent, outcomes, remote := p.send(ctx, rec, slot)
	accepted := false
	for _, o := range outcomes {
		accepted = accepted || o.Err == nil
	}
	if err := p.outcomeErr(); err != nil && !accepted {
		// Abandoned before its "." because an earlier outcome could not
		// be recorded: not an attempt of this message, so nothing about
		// it changes (no retry delay, no give-up, no notice).
		return err
	}
	att := applyReplies(rec, sent, outcomes, remote, now, p.pace(), p.routing.sizeLimit())
	if rec.Delivered() {
		p.emit(EventDelivered, rec.UIDL)
		log.Info("delivered", "message_id", rec.MessageID, "outcome", "accepted", "recipients", len(sent), "reply", firstReply(rec))
		handedOn = true
		p.recordLater(ctx, rec, sent, slot)
		return nil
	}
	s.Attempted = true
	return p.settle(ctx, rec, Decide(s), &att, sent, slot, log)
}

// settle carries out the decision on a message some recipient did not
// accept (or a loop, never sent): set it aside, give it up, or leave it
// for its next attempt; then records the outcome and sends the notices
// due. The disposition is recorded in the same write as the outcomes,
// before any DELE.
//
// slot, the message's place in the reply window (nil for a message never
// sent), is given back as soon as the outcome is recorded: before the
// notices, which may wait for a connection that a message waiting for a
// place holds.
func (p *poll) settle(ctx context.Context, rec *ledger.Record, d Decision, att *attempt, sent []int, slot *replySlot, log *slog.Logger) error {
	if len(att.failed) > 0 {
		// The attempt's outcome, whatever is decided on it next.
		kind, level := EventRejected, "rejected"
		if att.anyTemporary() {
			kind, level = EventDeferred, "deferred"
		}
		p.emit(kind, rec.UIDL)
		log.Warn(level, "message_id", rec.MessageID, "outcome", level, "next_attempt", rec.NextAttempt, "reason", rec.LastError)
	}
	switch d.Action {
	case ActSetAside:
		if err := p.setAside(ctx, rec, d, att, log); err != nil {
			return err
		}
	case ActGiveUp:
		if err := p.giveUpOnServer(ctx, rec, att, d.Reason, log); err != nil {
			return err
		}
	}
	accepted := false
	for _, i := range sent {
		accepted = accepted || rec.Recipients[i].Status == ledger.Accepted
	}
	// The SMTP server has answered: record it even if the poll's context
	// ended meanwhile (deadline, SIGTERM), or the next run relays again.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := p.putOutcome(wctx, rec, sent); err != nil {
		if accepted {
			p.emit(EventUnrecorded, rec.UIDL)
		}
		err = fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
		p.noteOutcomeErr(err) // before its place in the window is given back: no later "." follows
		return err
	}
	slot.release()
	return p.sendNotices(ctx, rec, att, log)
}

// send relays rec over the route of each recipient that does not have it
// yet, its final "." (or BDAT LAST) only once it holds slot, its place in
// the reply window. It returns the indexes in rec.Recipients sent to,
// each one's outcome and the host that answered.
func (p *poll) send(ctx context.Context, rec *ledger.Record, slot *replySlot) (sent []int, outcomes []relay.Outcome, remote []string) {
	var env relay.Envelope
	// Commit only while no earlier outcome failed to be recorded (a
	// failed write stops the poll before another message is committed)
	// and with a place in the window, so that at most ReplyWindow
	// messages of the process are committed and not yet recorded; the
	// records still overlap the transfers of the messages after them.
	env.BeforeEnd = func() error {
		// A later route group of the message finds the place already
		// held; only the call that took it may give it back here, since
		// an earlier group's reply may be waiting for its record.
		takenNow := !slot.holding()
		if err := slot.acquire(ctx); err != nil {
			return err
		}
		// Checked with the place held: the message that held it before
		// has had its write's outcome noted.
		if err := p.outcomeErr(); err != nil {
			if takenNow {
				slot.release()
			}
			return err
		}
		return nil
	}
	env.From = rec.Sender
	env.Size = rec.Size
	env.Needs8BitMIME = rec.Needs8BitMIME
	env.NeedsSMTPUTF8 = rec.NeedsSMTPUTF8
	for i, rc := range rec.Recipients {
		if !rc.Status.Done() {
			env.To = append(env.To, rc.Address)
			sent = append(sent, i)
		}
	}
	outcomes, remote = p.routing.send(ctx, p, rec, env, slot.holding)
	return sent, outcomes, remote
}

// pace is how long a message waits between attempts.
type pace struct {
	retry, max time.Duration
}

func (p *poll) pace() pace {
	return pace{retry: p.c.Settings.RetryInterval, max: p.c.Settings.MaxRetryInterval}
}

// delay doubles the retry interval per attempt up to the cap for
// temporary failures; permanent rejections are retried at the plain
// interval.
func (pc pace) delay(attempts int, temporary bool) time.Duration {
	if !temporary {
		return pc.retry
	}
	d := pc.retry
	for i := 1; i < attempts && d < pc.max; i++ {
		d *= 2
	}
	return min(d, pc.max)
}

// applyReplies records on rec the outcome of the attempt made at now to
// the recipients sent (indexes into rec.Recipients): each one's status,
// reply and failure, the attempt count, the error and the next attempt
// (for a message too large, at the slowest pace, with the endpoint's SIZE
// limit when known: 0 otherwise). It is pure; it returns what failed, for
// the decision and the notices.
func applyReplies(rec *ledger.Record, sent []int, outcomes []relay.Outcome, remote []string, now time.Time, pc pace, limit int64) attempt {
	att := attempt{at: now}
	rec.Attempts++
	rec.LastAttempt = now
	var reasons []string
	for j, i := range sent {
		rc := &rec.Recipients[i]
		rc.At = now
		o := outcomes[j]
		if o.Err == nil {
			rc.Status, rc.Code, rc.Enhanced, rc.Reply, rc.Failure = ledger.Accepted, 250, "", o.Reply, nil
			continue
		}
		att.failed = append(att.failed, failure{addr: rc.Address, err: o.Err, remote: remote[j]})
		rc.Code, rc.Enhanced, rc.Reply, rc.Failure = o.Err.Code, o.Err.Enhanced, o.Err.Error(), failureOf(o.Err)
		rc.Status = ledger.Rejected
		if o.Err.Temporary {
			rc.Status = ledger.Deferred
		}
		reasons = append(reasons, rc.Address+": "+o.Err.Error())
	}
	rec.TooLargeLimit = 0 // set again below if this attempt was refused for size
	if rec.Delivered() {
		rec.NextAttempt, rec.LastError = time.Time{}, ""
		return att
	}
	rec.LastError = strings.Join(reasons, "; ")
	rec.NextAttempt = now.Add(pc.delay(rec.Attempts, att.anyTemporary()))
	if att.tooLarge() {
		rec.LastError = "too large: " + rec.LastError
		if !att.anyTemporary() {
			// SIZE rules it out until the endpoint's limit changes: try
			// again only at the slowest pace.
			rec.NextAttempt = now.Add(pc.max)
			rec.TooLargeLimit = limit
		}
	}
	return att
}

func orUnknown(err error) error {
	if err == nil {
		return errors.New("no outcome from the SMTP server")
	}
	return err
}

// firstReply is the first recorded reply of rec's recipients.
func firstReply(rec *ledger.Record) string {
	for _, rc := range rec.Recipients {
		if rc.Reply != "" {
			return rc.Reply
		}
	}
	return ""
}

// sendVia opens the archived copy and relays it over r with the trace
// header.
func (p *poll) sendVia(ctx context.Context, r Relay, rec *ledger.Record, env relay.Envelope) ([]relay.Outcome, error) {
	body, err := p.c.Archive.Open(ctx, rec.ArchiveKey)
	if err != nil {
		// The relay is fine; the archive is not. Temporary: try again later.
		return nil, fmt.Errorf("archive %s: %w", rec.ArchiveKey, err)
	}
	defer body.Close()
	var prefix strings.Builder
	var forAddr []string
	if len(env.To) == 1 {
		forAddr = env.To // RFC 5321 §4.4: FOR only when there is one recipient
	}
	prefix.WriteString(relay.TraceHeader(relay.TraceInfo{
		From: p.mb.Server, By: p.c.Settings.Hostname, With: "POP3",
		ID: traceID(rec), For: forAddr, At: p.c.now(),
	}))
	if rec.MessageIDAdded {
		prefix.WriteString("Message-ID: <" + rec.MessageID + ">\r\n")
	}
	env.Size += int64(prefix.Len())
	head := prefix.String()
	// A server that caps recipients per message ("452 4.5.3 too many
	// recipients") gets the rest in further transactions of this Send:
	// each reads the same bytes again, from the archive, in constant
	// memory.
	env.Reopen = func(ctx context.Context) (io.ReadCloser, error) {
		b, err := p.c.Archive.Open(ctx, rec.ArchiveKey)
		if err != nil {
			return nil, fmt.Errorf("archive %s: %w", rec.ArchiveKey, err)
		}
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(strings.NewReader(head), b), b}, nil
	}
	return r.Send(ctx, env, io.MultiReader(strings.NewReader(head), body))
}

// traceID is the Received: field's ID: the archive object's name, which
// leads an administrator from Exchange's copy to the archived one.
func traceID(rec *ledger.Record) string {
	name := rec.ArchiveKey[strings.LastIndexByte(rec.ArchiveKey, '/')+1:]
	return strings.TrimSuffix(name, ".eml")
}
