package connector

import (
	"context"
	"fmt"
	"sync"

	"github.com/popconnector/popconnector/internal/ledger"
)

// prefetch is how many received messages may wait for delivery while the
// next one is fetched. They wait on disk (in the archive), not in memory,
// so memory stays flat. Their archive flushes and ledger records run at
// the same time (see receive), which lets the fsyncs and the ledger's group
// commit share work: on the bench machine (workload a, 1,000 × 20 kB) the
// fetching side kept pace with the SMTP side from about 8.
const prefetch = 8

// deletion is a delivered message that the policy says to remove.
type deletion struct {
	num int
	rec *ledger.Record
}

// fetchAndDeliver walks the server's list in order. One goroutine fetches
// (POP3 session) and receives each message into the archive; a short-lived
// goroutine per message seals it (archive made durable, ledger
// "archived"); this goroutine delivers, in server order, each message once
// its seal has succeeded (SMTP connection, ledger "delivered"). The stages
// overlap, so a poll takes about as long as the slowest one rather than the
// sum. Every guarantee is per message and unchanged: a record is relayed
// only after its archive is durable and recorded, and no two goroutines
// write the same record at the same time (once the seal runs, the fetching
// side only reads fields the seal leaves alone, and the seal hands the
// record on here).
//
// It returns the delivered messages to delete, in server order.
func (p *poll) fetchAndDeliver(ctx context.Context, msgs []ServerMessage, byUID map[string]*ledger.Record) ([]deletion, error) {
	type job struct {
		num     int
		rec     *ledger.Record
		sealed  <-chan error // the seal's outcome; nil when recorded before this poll
		deliver bool         // false: only wait for the seal (held, not due, ...)
	}
	jobs := make(chan job, prefetch)
	stop := make(chan struct{}) // closed when delivery failed: fetch no more
	var stopOnce sync.Once
	var fetchDels []deletion
	fetchErr := make(chan error, 1)
	var sealing sync.WaitGroup // seals whose job may never reach the queue

	go func() {
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("mailbox %s: internal error while fetching: %v", p.mb.ID, r)
			}
			close(jobs)
			fetchErr <- err
		}()
		fetched := 0
		var fetchedBytes int64
		for _, m := range msgs {
			if p.untrusted != "" {
				return
			}
			if p.res.Stopped == "" {
				p.res.Stopped = p.budgetExhausted(ctx, fetched, fetchedBytes, m)
			}
			rec := byUID[m.UID]
			// A record whose deletion the server confirmed cannot be the
			// message listed now: the UIDL was reused (whatever the size).
			if rec != nil && (rec.Deleted() || !sameMessage(m, rec)) {
				// The UIDL was reused for another message: never DELE it
				// on the old record's account.
				if rec, err = p.startGeneration(ctx, m, rec); err != nil {
					return
				}
				byUID[m.UID] = rec
			}
			if rec != nil && rec.Settled() {
				// A recorded disposition deletes whatever the
				// after-delivery policy; a delivery follows the policy.
				if rec.Disposition != "" || p.shouldDelete(rec) {
					fetchDels = append(fetchDels, deletion{m.Num, rec})
				}
				continue
			}
			if p.res.Stopped != "" {
				continue // deletions of delivered mail still go ahead
			}
			select {
			case <-stop:
				return
			default:
			}
			if rec == nil {
				rec = &ledger.Record{Mailbox: p.mb.ID, UIDL: m.UID, FirstSeen: p.c.now().UTC()}
				byUID[m.UID] = rec
			}
			if rec.Held != "" && !rec.GaveUp && p.c.Settings.GiveUpAfter > 0 && p.c.now().Sub(rec.FirstSeen) >= p.c.Settings.GiveUpAfter {
				// Only a confirmed hold goes to badmail (held.go): one
				// given up before that stays on the server, which may
				// hold the only good copy.
				rec.GaveUp = true
				if err = p.c.Ledger.Put(ctx, rec); err != nil {
					err = fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
					return
				}
				p.countGaveUp()
				p.log.Error("gave up: the server never sent this message as listed; left on the POP3 server", "uidl", m.UID, "reason", rec.Held)
			}
			if rec.Held != "" && !rec.GaveUp && !p.c.now().Before(rec.NextAttempt) {
				// Refetched on sessions of their own once this one has
				// ended (refetchHeld): a server that mangles a message
				// must hold up neither the rest nor their deletion.
				p.heldDue = append(p.heldDue, heldFetch{m, rec})
				continue
			}
			j := job{num: m.Num, rec: rec}
			if !rec.Archived() {
				fetched++
				fetchedBytes += m.Size
				seal, size, rerr := p.receive(ctx, m, rec)
				if rerr != nil {
					err = rerr
					if !rec.Archived() && rec.Version == 0 {
						delete(byUID, m.UID) // nothing was recorded
					}
					return
				}
				sealed := make(chan error, 1)
				j.sealed = sealed
				sealing.Add(1)
				go func() {
					defer sealing.Done()
					defer func() {
						if v := recover(); v != nil {
							sealed <- fmt.Errorf("mailbox %s: internal error while archiving %s: %v", p.mb.ID, m.UID, v)
						}
					}()
					err := seal(ctx)
					if err == nil {
						// Counted here, not where the job is taken: a job
						// dropped because the poll stops is archived too.
						p.countFetched(size)
						p.log.Info("archived", "uidl", rec.UIDL, "message_id", rec.MessageID, "size", rec.Size, "key", rec.ArchiveKey)
					}
					sealed <- err
				}()
				if rec.Held != "" && rec.Size < rec.ListSize {
					// The server ended the message early; the rest of it
					// may still be on the wire, so every later reply on this
					// connection is suspect: fetch and delete nothing more.
					p.untrusted = fmt.Sprintf("RETR of %s ended %d octets short of its LIST size", m.UID, rec.ListSize-rec.Size)
					p.res.Stopped = "POP3 session out of step"
					select {
					case jobs <- j: // for its seal's outcome
					case <-stop:
					}
					return
				}
			}
			j.deliver = !rec.GaveUp && rec.Disposition == "" && rec.Held == ""
			if j.deliver && p.c.now().Before(rec.NextAttempt) {
				p.res.NotDue++
				j.deliver = false
			}
			if !j.deliver && j.sealed == nil {
				continue
			}
			select {
			case jobs <- j:
			case <-stop:
				return
			}
		}
	}()

	var dels []deletion
	var deliverErr, sealErr error
	skippedForDeadline := false
	defer func() {
		// Whatever ends this side (a panic included), the fetching side
		// must not stay blocked on the queue.
		stopOnce.Do(func() { close(stop) })
		for range jobs {
		}
	}()
	for j := range jobs {
		if j.sealed != nil {
			if err := <-j.sealed; err != nil && sealErr == nil {
				// Later messages are not relayed in this poll: the next
				// one resumes from the ledger.
				sealErr = err
				stopOnce.Do(func() { close(stop) })
			}
		}
		if deliverErr != nil || sealErr != nil || !j.deliver {
			continue // drain, so the fetching side can finish
		}
		// Near the deadline, or stopping on a signal: the queued messages
		// are archived and recorded; the next poll delivers them.
		if why := p.budgetExhausted(ctx, 0, 0, ServerMessage{}); why == "deadline" || why == "stopping" {
			skippedForDeadline = true
			continue
		}
		if err := p.deliverRecovered(ctx, j.rec); err != nil {
			deliverErr = err
			stopOnce.Do(func() { close(stop) })
			continue
		}
		if j.rec.Disposition != "" || (j.rec.Delivered() && p.shouldDelete(j.rec)) {
			dels = append(dels, deletion{j.num, j.rec})
		}
	}
	ferr := <-fetchErr
	sealing.Wait() // a seal whose job the fetching side never queued
	// The fetching side has finished writing Stopped; a message archived
	// but left for the next poll also means the poll stopped early.
	if skippedForDeadline && p.res.Stopped == "" {
		p.res.Stopped = p.budgetExhausted(ctx, 0, 0, ServerMessage{})
	}
	if deliverErr != nil {
		return nil, deliverErr
	}
	if ferr != nil {
		// What was archived before the failure has been delivered above;
		// the POP3 session is not trusted for DELE after a failed fetch.
		return nil, ferr
	}
	if sealErr != nil {
		return nil, sealErr
	}
	return mergeByNum(fetchDels, dels), nil
}

// deliverRecovered is deliver with a panic turned into an error, so the
// fetching side is always told to stop and waited for.
func (p *poll) deliverRecovered(ctx context.Context, rec *ledger.Record) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("mailbox %s: internal error while delivering %s: %v", p.mb.ID, rec.UIDL, v)
		}
	}()
	return p.deliver(ctx, rec, p.log.With("uidl", rec.UIDL))
}

// startGeneration closes old, whose UIDL the server now lists for another
// message (the old one must have left the server for the UIDL to be
// reused), and returns the record of the new message.
func (p *poll) startGeneration(ctx context.Context, m ServerMessage, old *ledger.Record) (*ledger.Record, error) {
	now := p.c.now().UTC()
	p.log.Warn("UIDL reused for another message: recorded as a new message", "uidl", m.UID,
		"listed", m.Size, "recorded_list_size", old.ListSize, "recorded_size", old.Size, "previous", old.UIDL)
	// A settled old record is done with; an unsettled one stays as it is
	// and is delivered from the archive like any message whose server
	// copy vanished.
	if old.Settled() && !old.Deleted() {
		old.DeletedAt = now
		if err := p.c.Ledger.Put(ctx, old); err != nil {
			return nil, fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
		}
	}
	return &ledger.Record{Mailbox: p.mb.ID, UIDL: nextGeneration(old.UIDL), FirstSeen: now}, nil
}

// mergeByNum merges two lists of deletions each in ascending message
// number.
func mergeByNum(a, b []deletion) []deletion {
	out := make([]deletion, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].num < b[0].num {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}
