package connector

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/notify"
)

// Held messages.
//
// A fetch whose size differs from the server's LIST is held: archived,
// neither relayed nor deleted (relaying could hand Exchange an altered
// message; deleting would lose the server's copy, which may be the good
// one). Dovecot 2.3 does this to a message whose first line starts with
// ".", which it does not dot-stuff.
//
//   - A held message is fetched again at the retry interval, on a POP3
//     session of its own after the poll's main session ended
//     (refetchHeld). A fetch that matches the LIST size releases it: it is
//     delivered like any other, its recipients resolved from the good copy.
//   - Once heldConfirmFetches fetches in a row gave the same bytes (the
//     first and three refetches), refetching shows nothing new: the hold
//     is confirmed and the mailbox's undeliverable action applies.
//     Under "badmail" the served bytes are copied to badmail with a reason
//     that says how they differ from the server's copy, the postmaster is
//     told, and the message leaves the server (holdAction), provided the
//     fetch ended where the server ended the message: a short fetch on a
//     session then out of step left the rest unread, and that message is
//     kept as under "leave". Under "leave"
//     (and "delete", which only deletes on listed reply codes, never a
//     message Exchange has not seen) it stays on the server, is refetched
//     at the slowest retry pace (Settings.MaxRetryInterval), and the
//     postmaster is told once.
//   - Past the give-up age a held message left on the server is no longer
//     fetched (GaveUp): the server's copy is still there for an
//     administrator.

// heldFetch is a held message due for a refetch, as the poll's first
// session listed it.
type heldFetch struct {
	listed ServerMessage
	rec    *ledger.Record
}

// refetchHeld fetches each due held message again, on a POP3 session of
// its own opened after the poll's main session ended, so the deletions of
// the poll went before and a server that mangles a message holds up
// nothing else. A fetch that comes short may leave the rest of the
// message on the wire: the session is then listed again, and only a
// listing equal to the first shows it is still in step (leftover message
// lines cannot make up a whole LIST and UIDL reply naming every message
// and its UIDL). A session out of step is dropped without QUIT and the
// next message gets a new one. No DELE is sent on these sessions: a
// message set aside here is deleted by the next poll's main session.
func (p *poll) refetchHeld(ctx context.Context) error {
	if len(p.heldDue) == 0 {
		return nil
	}
	var s *refetchSession
	defer func() { s.end(ctx) }()
	for _, h := range p.heldDue {
		if why := p.budgetExhausted(ctx, 0, 0, ServerMessage{}); why != "" {
			p.stop(why)
			return nil
		}
		if s == nil {
			src, err := p.mb.Dial(ctx)
			if err != nil {
				// Nothing is lost: the held messages wait for the next poll.
				p.log.Warn("refetch of held messages not done: the POP3 server refused another session", "err", err)
				return nil
			}
			s = &refetchSession{src: src}
			if s.listing, err = src.ListAll(ctx); err != nil {
				p.log.Warn("refetch of held messages not done: LIST failed", "err", err)
				return nil
			}
			s.inStep = true
		}
		if err := p.refetchOne(ctx, s, h); err != nil {
			return err
		}
		if !s.inStep {
			s.end(ctx)
			s = nil
		}
	}
	return nil
}

// refetchSession is a POP3 session that only refetches held messages.
type refetchSession struct {
	src     Source
	listing []ServerMessage // as the session first listed the mailbox
	inStep  bool            // every reply so far was where it belonged
}

// end closes the session: QUIT when it is in step (nothing is marked for
// deletion on it), a dropped connection otherwise.
func (s *refetchSession) end(ctx context.Context) {
	if s == nil || s.src == nil {
		return
	}
	src := s.src
	s.src = nil
	endWithoutDele(ctx, src, s.inStep)
}

// refetchOne fetches one held message on s. A message whose fetch now
// matches the listing is released and delivered; one whose hold this
// fetch confirmed gets holdAction.
func (p *poll) refetchOne(ctx context.Context, s *refetchSession, h heldFetch) error {
	var m ServerMessage
	for _, x := range s.listing {
		if x.UID == h.listed.UID {
			m = x
		}
	}
	if m.UID == "" || m.Size != h.listed.Size {
		return nil // gone or changed since the first listing: the next poll sees it
	}
	p.src = s.src
	rec := h.rec
	seal, size, err := p.receive(ctx, m, rec)
	if err != nil {
		s.inStep = false
		return err
	}
	if err := seal(ctx); err != nil {
		return err
	}
	p.tally.emit(Event{Mailbox: p.mb.ID, UIDL: rec.UIDL, Kind: EventFetched, Size: size})
	log := p.log.With("uidl", rec.UIDL)
	log.Info("archived", "message_id", rec.MessageID, "size", rec.Size, "key", rec.ArchiveKey)
	ended := rec.Size >= rec.ListSize // nothing of what was listed can be left unread
	if !ended {
		again, err := s.src.ListAll(ctx)
		s.inStep = err == nil && slices.Equal(again, s.listing)
		ended = s.inStep
	}
	if rec.Held == "" {
		return p.deliverIfDecided(ctx, rec, Listed, true) // released
	}
	st := p.situation(rec, Listed, Budget{})
	st.Fetched, st.FetchEnded = true, ended
	if d := Decide(st); heldConfirmed(rec) {
		return p.holdAction(ctx, rec, d, log)
	}
	return nil
}

// heldConfirmFetches is how many fetches in a row giving the same bytes
// confirm a hold.
const heldConfirmFetches = 4

// heldConfirmed reports whether refetching rec has shown the server
// always sends the same mismatched bytes.
func heldConfirmed(rec *ledger.Record) bool {
	return rec.Held != "" && rec.HeldFetches >= heldConfirmFetches
}

// heldReason says what is wrong with a held message's fetches.
func heldReason(listed, got int64, fetches int) string {
	diff, more := listed-got, "fewer"
	if diff < 0 {
		diff, more = -diff, "more"
	}
	return fmt.Sprintf("the server listed %d octets but sent %d (%d %s), the same in %d fetch(es) in a row: the served bytes differ from the server's copy; not relayed",
		listed, got, diff, more, fetches)
}

// refetchDelay is when a held message is fetched again: at the retry
// interval until the hold is confirmed, then at the slowest pace.
func (p *poll) refetchDelay(rec *ledger.Record) time.Duration {
	if heldConfirmed(rec) {
		return p.pace().max
	}
	return p.pace().retry
}

// holdAction carries out the decision on a message whose hold the fetch
// just sealed confirmed: set aside under badmail (Decide allows it only
// when the fetch ended where the server ended the message: one that
// stopped short on a session then out of step, at a first line of one
// lone "." the server did not stuff, left the rest of the message unread,
// and deleting it would lose that rest), or left held on the server; the
// postmaster is told either way, once.
func (p *poll) holdAction(ctx context.Context, rec *ledger.Record, d Decision, log *slog.Logger) error {
	att := attempt{at: p.c.now().UTC(), reason: rec.Held, held: true}
	if d.Action == ActSetAside {
		if err := p.setAside(ctx, rec, d, &att, log); err != nil {
			return err
		}
		if err := p.putRecord(ctx, rec); err != nil {
			return err
		}
	} else if !rec.WasNotified(string(notify.CauseHeld)) {
		msg := "held for good: the server keeps sending other bytes than it lists; left on the POP3 server"
		if p.mb.Undeliverable.Action == BadmailRejected {
			msg = "held for good, and the server's copy is longer than what it sends: left on the POP3 server, not moved to badmail"
		}
		log.Error(msg, "reason", rec.Held, "next_fetch", rec.NextRefetch)
	}
	return p.sendNotices(ctx, rec, &att, log)
}

// giveUpHeld stops fetching a held message past the give-up age; it stays
// on the server, which may hold the only good copy.
func (p *poll) giveUpHeld(ctx context.Context, rec *ledger.Record, d Decision) error {
	rec.GaveUp, rec.NextRefetch = true, time.Time{}
	if err := p.putRecord(ctx, rec); err != nil {
		return err
	}
	p.emit(EventGaveUp, rec.UIDL)
	p.log.Error("gave up: the server never sent this message as listed; left on the POP3 server", "uidl", rec.UIDL, "reason", d.Reason)
	return nil
}
