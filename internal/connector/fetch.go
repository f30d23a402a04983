package connector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/message"
	"github.com/popconnector/popconnector/internal/relay"
)

// receive fetches one message into the archive and fills rec from what
// arrived. It returns seal, which finishes the job: the archived copy made
// durable (archive.Staged.Commit, when the archive can stage; otherwise
// Put already did it here) and "archived" recorded in the ledger. Until
// seal returns, the message is neither durable nor recorded: nothing may
// relay it and rec belongs to seal. seal must be called exactly once;
// it runs on another goroutine so that the next message can be received
// while this one is flushed.
func (p *poll) receive(ctx context.Context, m ServerMessage, rec *ledger.Record) (seal func(context.Context) error, size int64, err error) {
	body, err := p.src.Retr(ctx, m.Num)
	if err != nil {
		return nil, 0, fmt.Errorf("mailbox %s: RETR %s: %w", p.mb.ID, m.UID, err)
	}
	return p.receiveBody(ctx, m, rec, body)
}

// receiveBody is receive of a body already asked for (a pipelined RETR).
func (p *poll) receiveBody(ctx context.Context, m ServerMessage, rec *ledger.Record, body io.ReadCloser) (seal func(context.Context) error, size int64, err error) {
	insp := message.NewInspector()
	// The ledger key, not the bare UIDL: a reused UIDL's message gets its
	// own archive object.
	key := archive.KeyFor(p.mb.ID, rec.UIDL, rec.FirstSeen)
	meta := archive.Meta{Mailbox: p.mb.ID, UIDL: m.UID}
	var (
		info   archive.Info
		staged archive.Staged
	)
	if st, ok := p.c.Archive.(archive.Stager); ok {
		if staged, err = st.Stage(ctx, key, meta, io.TeeReader(body, insp)); err == nil {
			info = staged.Info()
		}
	} else {
		info, err = p.c.Archive.Put(ctx, key, meta, io.TeeReader(body, insp))
	}
	cerr := body.Close()
	if err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if staged != nil {
			staged.Discard()
		}
		return nil, 0, fmt.Errorf("mailbox %s: archive %s: %w", p.mb.ID, m.UID, err)
	}
	p.fillFromArrival(m, rec, info, insp.Summary())
	seal = func(ctx context.Context) error {
		// The bytes have arrived: flushing and recording them must not be
		// cut short by the poll's deadline or a stop request, or a durable
		// archive object could be left without its record.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if staged != nil {
			if err := staged.Commit(ctx); err != nil {
				return fmt.Errorf("mailbox %s: archive %s: %w", p.mb.ID, m.UID, err)
			}
		}
		if err := p.c.Ledger.Put(ctx, rec); err != nil {
			return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
		}
		return nil
	}
	return seal, info.Size, nil
}

// fillFromArrival sets rec's archive fields, hold state, Message-ID,
// envelope sender and (for the first good copy) recipients from what the
// server sent.
func (p *poll) fillFromArrival(m ServerMessage, rec *ledger.Record, info archive.Info, sum *message.Summary) {
	if sum.ParseError != nil {
		p.log.Warn("header not parsed cleanly; relaying as is", "uidl", m.UID, "err", sum.ParseError)
	}
	sameBytes := rec.Held != "" && rec.SHA256 == info.SHA256 // a refetch of a held message that gave what the last fetch gave
	rec.ArchiveKey, rec.SHA256, rec.Size = info.Key, info.SHA256, info.Size
	rec.ListSize = m.Size
	rec.ArchivedAt = p.c.now().UTC()
	if sizeMatches(m.Size, info.Size) {
		if rec.Held != "" {
			p.log.Info("released: the server now sends the message as listed", "uidl", m.UID, "size", info.Size)
			if len(pendingRecipients(rec)) == len(rec.Recipients) {
				// Taken from a damaged copy for a notice: the good header
				// decides (below).
				rec.Recipients, rec.RecipientSource = nil, ""
			}
		}
		rec.Held, rec.HeldFetches, rec.LastError, rec.NextRefetch = "", 0, "", time.Time{}
	} else {
		// What arrived is not what the server listed: relaying it could
		// hand Exchange an altered message, and deleting the original
		// would lose the real one. Keep both; fetch again later, until
		// refetching shows the server always sends the same (holdAction).
		if sameBytes {
			rec.HeldFetches++
		} else {
			rec.HeldFetches = 1
		}
		rec.Held = heldReason(m.Size, info.Size, rec.HeldFetches)
		rec.LastError = rec.Held
		rec.NextRefetch = p.c.now().UTC().Add(p.refetchDelay(rec))
		p.log.Error("held: size differs from the server's LIST", "uidl", m.UID, "listed", m.Size, "received", info.Size,
			"fetches", rec.HeldFetches, "next_fetch", rec.NextRefetch, "key", info.Key)
	}
	rec.MessageID, rec.MessageIDAdded = sum.MessageID, false
	if rec.MessageID == "" && !sum.MessageIDField {
		// Only a message whose raw header has no Message-ID field gets
		// one: a field the parser could not read is still the sender's,
		// and a second one would make the message malformed.
		rec.MessageID = p.generatedMessageID(rec.UIDL)
		rec.MessageIDAdded = true
	}
	rec.Fingerprint = sum.Fingerprint
	rec.Sender = p.envelopeSender(sum)
	rec.Needs8BitMIME = sum.Has8Bit
	rec.TraceHops = p.countOwnTrace(sum)
	// Recipients are fixed from the first good copy: a held (mismatched)
	// fetch may carry a damaged header. A confirmed hold takes them from
	// what the server keeps sending, for its notice and its badmail
	// reason: it is set aside or reported either way.
	if len(rec.Recipients) == 0 && (rec.Held == "" || heldConfirmed(rec)) {
		p.resolveRecipients(m, rec, sum)
	}
	addrs := make([]string, len(rec.Recipients))
	for i, rc := range rec.Recipients {
		addrs[i] = rc.Address
	}
	rec.NeedsSMTPUTF8 = relay.NeedsSMTPUTF8(rec.Sender, addrs)
}

// resolveRecipients fixes rec's recipients: the mailbox's deliver_to, or
// for a global mailbox those its header names (package recipients).
func (p *poll) resolveRecipients(m ServerMessage, rec *ledger.Record, sum *message.Summary) {
	to := p.mb.DeliverTo
	if p.mb.Global != nil {
		res := p.mb.Global.Resolve(sum.Header)
		to, rec.RecipientSource = res.Recipients, res.Source
		attrs := []any{"uidl", m.UID, "source", res.Source, "recipients", len(res.Recipients)}
		if res.Fallback {
			if len(res.Ignored) > 0 {
				attrs = append(attrs, "ignored", res.Ignored)
			}
			if len(res.Problems) > 0 {
				attrs = append(attrs, "problems", res.Problems)
			}
			p.log.Warn("global mailbox: no local recipient found; delivering to the fallback address", attrs...)
		} else {
			if len(res.Problems) > 0 {
				attrs = append(attrs, "problems", res.Problems)
			}
			p.log.Info("global mailbox: recipients resolved", attrs...)
		}
	}
	for _, a := range to {
		rec.Recipients = append(rec.Recipients, ledger.Recipient{Address: a, Status: ledger.Pending})
	}
}

// generatedMessageID derives a stable Message-ID from the ledger key, so
// that every delivery of the same message carries the same one.
func (p *poll) generatedMessageID(uid string) string {
	sum := sha256.Sum256([]byte(p.mb.ID + "\x00" + uid))
	domain := "popconnector.invalid"
	if at := strings.LastIndexByte(p.c.Settings.Postmaster, '@'); at >= 0 && at < len(p.c.Settings.Postmaster)-1 {
		domain = p.c.Settings.Postmaster[at+1:]
	}
	return fmt.Sprintf("popconn.%s.%s@%s", p.mb.ID, hex.EncodeToString(sum[:12]), domain)
}

// envelopeSender picks MAIL FROM: the mailbox override, else the
// Return-Path the ISP recorded (a null <> stays null), else Sender, From,
// and last the postmaster.
func (p *poll) envelopeSender(s *message.Summary) string {
	switch {
	case p.mb.Sender != "":
		return p.mb.Sender
	case s.NullSender:
		return ""
	case s.ReturnPath != "":
		return s.ReturnPath
	case s.Sender != "":
		return s.Sender
	case s.From != "":
		return s.From
	default:
		return p.c.Settings.Postmaster
	}
}
