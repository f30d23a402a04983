package connector

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/popconnector/popconnector/internal/ledger"
)

// The pipeline carries out what Decide says, in stages that overlap:
//
//	fetch (one POP3 session, server order) → seal (a goroutine per
//	message: durable archive, "archived" recorded) → deliver (server
//	order, once sealed) → record (in the background for a message with
//	nothing else to do) → delete/quit (once every record is written)
//
// The stages hand messages on through an ordered queue (ordered), so
// delivery keeps server order however the seals finish. At most prefetch
// messages are between fetch and delivery. They wait on disk (in the
// archive's temporary files), not in memory, so memory stays flat.

// prefetch is how many received messages may wait for delivery while the
// next one is fetched. Their archive flushes and ledger records run at
// the same time, which lets the fsyncs and the ledger's group commit
// share work: on the bench machine (workload a, 1,000 × 20 kB) the
// fetching side kept pace with the SMTP side from about 8.
const prefetch = 8

// deletion is a settled message to DELE.
type deletion struct {
	num int
	rec *ledger.Record
}

// work is one listed message on its way through the stages.
type work struct {
	m      ServerMessage
	rec    *ledger.Record
	sealed chan error // the seal's outcome; nil when not fetched in this poll
	// untrusting: its fetch came short, so the POP3 session may hold the
	// rest of it: nothing more is fetched or deleted on it.
	untrusting bool
}

// fetchAndDeliver runs the fetch stage on its own goroutine and the
// delivery stage on this one. It returns the messages to delete, in
// server order.
func (p *poll) fetchAndDeliver(ctx context.Context, msgs []ServerMessage, byUID map[string]*ledger.Record) ([]deletion, error) {
	q := newOrdered[*work](prefetch)
	var fetched []deletion // settled before this poll: deleted whatever happens to the rest
	fetchErr := make(chan error, 1)
	go func() {
		var err error
		defer func() { q.close(); fetchErr <- err }()
		defer recovered(&err, "while fetching")
		fetched, err = p.fetchStage(ctx, msgs, byUID, q)
	}()
	dels, skipped, err := p.deliverStage(ctx, q)
	q.cancel() // the fetching side must not stay blocked on the queue
	if ferr := <-fetchErr; err == nil {
		err = ferr
	}
	// After the fetching side's reasons: a message left queued means the
	// poll stopped early too.
	p.stop(skipped)
	p.sealing.Wait() // a seal whose message never reached the queue
	if err != nil {
		return nil, err
	}
	return mergeByNum(fetched, dels), nil
}

// step is one listed message's decision on the fetching side.
type step struct {
	m   ServerMessage
	rec *ledger.Record
	d   Decision
}

// planFetch decides each listed message in server order, with the fetch
// budget (count, bytes) counted over the messages to fetch; the first
// reason the budget gives is the poll's Stopped. Decide is pure, so
// carrying the plan out later meets the same decisions.
func (p *poll) planFetch(ctx context.Context, msgs []ServerMessage, byUID map[string]*ledger.Record) []step {
	plan := make([]step, 0, len(msgs))
	n, bytes := 0, int64(0)
	stopped := ""
	for _, m := range msgs {
		if stopped == "" {
			stopped = p.budgetExhausted(ctx, n, bytes, m)
			p.stop(stopped)
		}
		rec := byUID[m.UID]
		listing := Listed
		if rec != nil && (!sameMessage(m, rec) || !rec.SupersededAt.IsZero()) {
			// Another message under the UIDL: a superseded record is
			// never named again, even once the newer generations'
			// records retired.
			listing = ListedOtherSize
		}
		d := Decide(p.situation(rec, listing, Budget{Fetch: stopped == "", Deliver: stopped == ""}))
		if d.Action == ActFetch {
			n, bytes = n+1, bytes+m.Size
		}
		plan = append(plan, step{m, rec, d})
	}
	return plan
}

// fetchStage carries out the plan's decisions that belong to the
// fetching side, in server order: RETR into the archive (several ahead
// when the server offers PIPELINING; the seal then runs on its own
// goroutine), starting a UIDL's new generation, giving up a held message,
// noting the held ones due for a refetch, and listing the settled ones to
// delete. What is to be delivered is queued.
func (p *poll) fetchStage(ctx context.Context, msgs []ServerMessage, byUID map[string]*ledger.Record, q *ordered[*work]) ([]deletion, error) {
	plan := p.planFetch(ctx, msgs, byUID)
	p.warmRoutes(ctx, plan)
	retr, done := p.retrieval(ctx, plan)
	untrusting := false
	defer func() { done(untrusting) }()
	var dels []deletion
	for _, st := range plan {
		m, rec, d := st.m, st.rec, st.d
		switch d.Action {
		case ActDelete:
			dels = append(dels, deletion{m.Num, rec})
		case ActWait:
			switch {
			case rec.TooLargeLimit > 0:
				// The delivery side knows the endpoint's SIZE once it has
				// a connection: it decides again whether the limit rose.
				if !q.push(&work{m: m, rec: rec}) {
					return dels, nil
				}
			case rec.Held == "":
				p.emit(EventNotDue, rec.UIDL)
			}
		case ActRefetch:
			p.heldDue = append(p.heldDue, heldFetch{m, rec}) // after the main session (refetchHeld)
		case ActGiveUp:
			if err := p.giveUpHeld(ctx, rec, d); err != nil {
				return dels, err
			}
		case ActDeliver, ActSetAside:
			if !q.push(&work{m: m, rec: rec}) {
				return dels, nil
			}
		case ActFetch:
			if why := p.budgetExhausted(ctx, 0, 0, ServerMessage{}); why == "deadline" || why == "stopping" {
				p.stop(why)
				return dels, nil
			}
			if q.cancelled() {
				return dels, nil // the delivery side stopped: fetch no more
			}
			if d.NewGeneration {
				var err error
				if rec, err = p.startGeneration(ctx, m, rec); err != nil {
					return dels, err
				}
			} else {
				rec = &ledger.Record{Mailbox: p.mb.ID, UIDL: m.UID, FirstSeen: p.c.now().UTC()}
			}
			byUID[m.UID] = rec
			w, err := p.fetch(ctx, m, rec, retr)
			if err != nil {
				if rec.Version == 0 {
					delete(byUID, m.UID) // nothing was recorded
				}
				return dels, err
			}
			untrusting = w.untrusting
			if !q.push(w) || w.untrusting {
				return dels, nil
			}
		}
	}
	return dels, nil
}

// warmRoutes opens the SMTP connections the plan's first deliveries will
// use while their messages are fetched (routing.warm): one per message to
// deliver, up to Settings.DeliveriesInFlight. Only a mailbox with fixed
// recipients knows its routes before a message is read.
func (p *poll) warmRoutes(ctx context.Context, plan []step) {
	if p.mb.Global != nil {
		return
	}
	n := 0
	for _, st := range plan {
		if st.d.Action == ActFetch || st.d.Action == ActDeliver {
			n++
		}
	}
	p.routing.warm(ctx, p.mb.DeliverTo, min(n, max(p.c.Settings.DeliveriesInFlight, 1)))
}

// retrieval returns how the fetch stage gets each message's body: from
// a pipelined RETR of every message the plan fetches, when the session
// can pipeline and Settings.RetrPipelineDepth asks for it, else one RETR
// at a time. done ends the queue: it reads what was asked for and not
// taken, unless the session is out of step (then it is dropped whole).
func (p *poll) retrieval(ctx context.Context, plan []step) (retr func(ServerMessage) (io.ReadCloser, error), done func(untrusting bool)) {
	one := func(m ServerMessage) (io.ReadCloser, error) { return p.src.Retr(ctx, m.Num) }
	var nums []int
	for _, st := range plan {
		if st.d.Action == ActFetch {
			nums = append(nums, st.m.Num)
		}
	}
	pl, ok := p.src.(Pipeliner)
	depth := p.c.Settings.RetrPipelineDepth
	if !ok || depth < 2 || len(nums) < 2 {
		return one, func(bool) {}
	}
	rq := pl.RetrPipelined(ctx, nums, depth)
	retr = func(m ServerMessage) (io.ReadCloser, error) {
		num, body, err := rq.Next(ctx)
		if err == nil && num != m.Num {
			body.Close()
			return nil, fmt.Errorf("pipelined RETR out of order: got message %d, want %d", num, m.Num)
		}
		return body, err
	}
	return retr, func(untrusting bool) {
		if !untrusting {
			if err := rq.Close(context.WithoutCancel(ctx)); err != nil {
				p.log.Warn("pipelined RETR: could not read the rest of the queue", "err", err)
			}
		}
	}
}

// fetch receives m (its body from retr) into the archive and starts its
// seal.
func (p *poll) fetch(ctx context.Context, m ServerMessage, rec *ledger.Record, retr func(ServerMessage) (io.ReadCloser, error)) (*work, error) {
	body, err := retr(m)
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: RETR %s: %w", p.mb.ID, m.UID, err)
	}
	seal, size, err := p.receiveBody(ctx, m, rec, body)
	if err != nil {
		return nil, err
	}
	w := &work{m: m, rec: rec, sealed: make(chan error, 1)}
	p.sealing.Add(1)
	go func() {
		var err error
		defer func() { w.sealed <- err; p.sealing.Done() }()
		defer recovered(&err, "while archiving "+m.UID)
		if err = seal(ctx); err == nil {
			// Counted here, not where the message is delivered: one
			// left behind because the poll stops is archived too.
			p.tally.emit(Event{Mailbox: p.mb.ID, UIDL: rec.UIDL, Kind: EventFetched, Size: size})
			p.log.Info("archived", "uidl", rec.UIDL, "message_id", rec.MessageID, "size", rec.Size, "key", rec.ArchiveKey)
		}
	}()
	if rec.Held != "" && rec.Size < rec.ListSize {
		// The server ended the message early; the rest of it may still be
		// on the wire, so every later reply on this connection is
		// suspect: fetch and delete nothing more on it.
		p.untrusted = fmt.Sprintf("RETR of %s ended %d octets short of its LIST size", m.UID, rec.ListSize-rec.Size)
		p.stop("POP3 session out of step")
		w.untrusting = true
	}
	return w, nil
}

// deliverStage takes the queued messages in server order, each once its
// seal succeeded, and delivers (or sets aside) what Decide says, with up
// to Settings.DeliveriesInFlight deliveries at once (each on a connection
// of its own); one at a time keeps server order. After a failure it
// starts nothing more and only drains the queue.
func (p *poll) deliverStage(ctx context.Context, q *ordered[*work]) (dels []deletion, skipped string, err error) {
	defer recovered(&err, "while delivering")
	var (
		mu       sync.Mutex // guards dels and err once deliveries run on their own goroutines
		inFlight sync.WaitGroup
		slots    = make(chan struct{}, max(p.c.Settings.DeliveriesInFlight, 1))
	)
	failed := func() error { mu.Lock(); defer mu.Unlock(); return err }
	fail := func(e error) {
		mu.Lock()
		if err == nil {
			err = e
		}
		mu.Unlock()
		q.cancel()
	}
	for w := range q.out() {
		if w.sealed != nil {
			if serr := <-w.sealed; serr != nil {
				fail(serr) // later messages wait for the next poll, which resumes from the ledger
			}
		}
		if failed() != nil {
			continue
		}
		slots <- struct{}{} // a delivery's turn: the budget is checked when it can start
		// Near the deadline, or stopping on a signal: what is queued is
		// archived and recorded; the next poll delivers it.
		why := p.budgetExhausted(ctx, 0, 0, ServerMessage{})
		if stop := why == "deadline" || why == "stopping"; stop || failed() != nil {
			if stop {
				skipped = why
			}
			<-slots
			continue
		}
		inFlight.Add(1)
		go func() {
			var derr error
			defer func() {
				if derr != nil {
					fail(derr)
				}
				<-slots
				inFlight.Done()
			}()
			defer recovered(&derr, "while delivering "+w.rec.UIDL)
			if derr = p.deliverIfDecided(ctx, w.rec, Listed, w.sealed != nil); derr != nil {
				return
			}
			if Decide(p.situation(w.rec, Listed, Budget{})).Action == ActDelete {
				mu.Lock()
				dels = append(dels, deletion{w.m.Num, w.rec})
				mu.Unlock()
			}
		}()
	}
	inFlight.Wait()
	slices.SortFunc(dels, func(a, b deletion) int { return a.num - b.num })
	return dels, skipped, err
}

// startGeneration closes old, whose UIDL the server now lists for another
// message (the old one must have left the server for the UIDL to be
// reused), and returns the record of the new message.
func (p *poll) startGeneration(ctx context.Context, m ServerMessage, old *ledger.Record) (*ledger.Record, error) {
	now := p.c.now().UTC()
	p.log.Warn("UIDL reused for another message: recorded as a new message", "uidl", m.UID,
		"listed", m.Size, "recorded_list_size", old.ListSize, "recorded_size", old.Size, "previous", old.UIDL)
	// A settled old record is done with. An unsettled one is marked as
	// superseded, so that no later listing takes it for the message
	// listed (its newer generations' records may retire), and it is
	// delivered from the archive in this poll like any message whose
	// server copy left (deliverGone).
	switch {
	case old.Settled() && !old.Deleted():
		old.DeletedAt = now
	case !old.Settled() && !old.Deleted() && old.SupersededAt.IsZero():
		old.SupersededAt = now
		p.displaced = append(p.displaced, old)
	default:
		return &ledger.Record{Mailbox: p.mb.ID, UIDL: nextGeneration(old.UIDL), FirstSeen: now}, nil
	}
	if err := p.c.Ledger.Put(ctx, old); err != nil {
		return nil, fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
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
