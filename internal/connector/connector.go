package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/recipients"
	"github.com/popconnector/popconnector/internal/route"
)

// DeletePolicy says what happens on the POP3 server after delivery.
type DeletePolicy string

const (
	// DeleteAfterDelivery removes a message once every recipient accepted it.
	DeleteAfterDelivery DeletePolicy = "delete"
	// Keep leaves every message on the server.
	Keep DeletePolicy = "keep"
	// KeepDays removes a delivered message once it was first seen KeepFor ago.
	KeepDays DeletePolicy = "keep_days"
)

// Mailbox is one POP3 maildrop and where its mail goes.
type Mailbox struct {
	ID            string
	Server        string // host, for the trace header
	DeliverTo     []string
	Sender        string // envelope sender override; "" = from the message
	AfterDelivery DeletePolicy
	KeepFor       time.Duration
	MaxMessages   int   // fetched per poll; 0 = no limit
	MaxBytes      int64 // fetched per poll; 0 = no limit
	PollTimeout   time.Duration
	Dial          SourceDialer
	// Global, when set, makes this a global (catch-all) mailbox: the
	// recipients of each message are resolved from its header when it is
	// archived (and recorded with the archive key, fixed thereafter)
	// instead of DeliverTo.
	Global *recipients.Resolver
	// Undeliverable says what happens to a message Exchange rejects.
	Undeliverable Undeliverable
	// DuplicateWindow: a recipient that accepted a message with the same
	// Message-ID this recently is not sent another copy (dedupe.go); 0 =
	// off.
	DuplicateWindow time.Duration
}

// Settings are the connector-wide choices.
type Settings struct {
	Postmaster       string        // envelope sender of last resort; its domain names generated Message-IDs
	Hostname         string        // "by" in the trace header
	RetryInterval    time.Duration // first retry after a failure (required)
	MaxRetryInterval time.Duration // backoff cap, the slowest pace (required, at least RetryInterval)
	GiveUpAfter      time.Duration // stop automatic attempts this long after first seen; 0 = never
	DeliveryTimeout  time.Duration // SMTP timeout: time kept in reserve before the deadline (required)
	LeaseOwner       string        // who holds mailbox leases (host and process)
	// LeaseTerm is how long a mailbox lease lasts past its last renewal
	// (lease.go); 0 means DefaultLeaseTerm.
	LeaseTerm time.Duration
	// MaxTraceHops is how many of this connector's own Received fields a
	// message may carry before it counts as a mail loop (required).
	MaxTraceHops int
	// DeliveriesInFlight is how many messages of one poll are delivered at
	// once, each over an SMTP connection of its own (0 or 1: one at a
	// time, in server order).
	DeliveriesInFlight int
	// ReplyWindow is the declared reply window of the process: at most
	// this many messages, over every poll of the Connector, are between
	// their final "." (or BDAT LAST) and the durable record of the reply.
	// A crash relays at most this many again. 0 or 1: one (strict).
	ReplyWindow int
	// RetrPipelineDepth is how many RETRs a poll keeps ahead of the message
	// it reads when the POP3 server offers PIPELINING (RFC 2449); 0 or 1:
	// one at a time. The messages wait in the socket, not in memory.
	RetrPipelineDepth int
	// Notify selects the notices sent to the postmaster.
	Notify NotifySettings
}

// Connector polls mailboxes into an archive, a ledger and a relay.
type Connector struct {
	Archive archive.Archive
	Ledger  ledger.Ledger
	// Routes and DialRoute choose and open the SMTP endpoint of each
	// recipient (address space and cost, package route).
	Routes    *route.Table
	DialRoute RouteDialer
	Settings  Settings
	Logger    *slog.Logger
	Now       func() time.Time
	// Events, when set, sees each event of every poll as it happens (a
	// live view); it must not block.
	Events func(Event)
	// Drain, when closed, stops polls from starting new messages while the
	// message in flight finishes (a graceful stop on SIGTERM: cancelling the
	// context instead would cut DATA and widen the duplicate window).
	Drain <-chan struct{}

	shared *gates // the process-wide limits (gates.go), shared by copies made with ForPoller
}

// Result summarises one poll of one mailbox.
type Result struct {
	Mailbox   string
	OnServer  int
	Fetched   int   // archived in this poll
	Bytes     int64 // fetched in this poll
	Delivered int   // messages every recipient accepted in this poll
	Deferred  int   // messages left with a temporary failure
	Rejected  int   // messages left with a permanent rejection
	GaveUp    int   // messages that passed the give-up age in this poll (and went to badmail)
	// Badmail counts messages set aside under the archive's badmail/
	// prefix in this poll; DeletedRejected those whose rejection the
	// undeliverable option "delete" allowed deleting.
	Badmail         int
	DeletedRejected int
	Notices         int // postmaster notices accepted for delivery
	Deleted         int // deletions confirmed by QUIT
	NotDue          int // waiting for their next attempt
	// DuplicateUIDs counts listed messages left alone because the server
	// gave their UIDL to more than one message.
	DuplicateUIDs int
	// Suppressed counts recipients not sent a copy because they accepted
	// another copy of the message within the duplicate window.
	Suppressed int
	// UnrecordedReplies counts messages the SMTP server accepted whose
	// reply the poll could not record (it stopped in between): the next
	// run relays them again. This window is the only source of duplicates.
	UnrecordedReplies int
	// OldestUndelivered is the age of the oldest message not yet delivered.
	OldestUndelivered time.Duration
	Stopped           string // why the poll stopped early, if it did
	Duration          time.Duration
	Err               error
}

func (c *Connector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Connector) log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// check reports a setting the connector needs that is missing. The
// defaults are config's (written once, there); the connector takes none
// of its own.
func (s Settings) check(mb Mailbox) error {
	switch {
	case s.RetryInterval <= 0:
		return errors.New("connector: Settings.RetryInterval is not set")
	case s.MaxRetryInterval < s.RetryInterval:
		return errors.New("connector: Settings.MaxRetryInterval is below RetryInterval")
	case s.DeliveryTimeout <= 0:
		return errors.New("connector: Settings.DeliveryTimeout is not set")
	case s.MaxTraceHops <= 0:
		return errors.New("connector: Settings.MaxTraceHops is not set")
	case mb.PollTimeout <= 0:
		return errors.New("connector: Mailbox.PollTimeout is not set")
	case mb.Undeliverable.Action == DeleteRejected && len(mb.Undeliverable.DeleteOnCodes) == 0:
		return errors.New("connector: undeliverable action delete without reply codes")
	}
	return nil
}

// cleanupTimeout bounds QUIT and the last ledger writes after the poll
// deadline has passed.
const cleanupTimeout = 30 * time.Second

// Poll runs the pipeline once over mb. It never panics; a mailbox-level
// failure is in Result.Err.
func (c *Connector) Poll(ctx context.Context, mb Mailbox) (res Result) {
	start := c.now()
	defer func() { res.Mailbox, res.Duration = mb.ID, c.now().Sub(start) }()
	defer recovered(&res.Err, "in mailbox "+mb.ID)
	if err := c.Settings.check(mb); err != nil {
		return Result{Err: fmt.Errorf("mailbox %s: %w", mb.ID, err)}
	}
	timeout := mb.PollTimeout
	term := c.Settings.leaseTerm()
	lease, err := c.Ledger.Lease(ctx, mb.ID, c.Settings.LeaseOwner, term)
	if err != nil {
		return Result{Err: fmt.Errorf("mailbox %s: %w", mb.ID, err)}
	}
	p := &poll{c: c, mb: mb, log: c.log().With("mailbox", mb.ID), tally: newTally(c.Events)}
	lctx, stopPoll := context.WithCancelCause(ctx)
	defer stopPoll(nil)
	stopRenewing := keepLease(lease, term, c.now, p.log, func(why error) {
		p.log.Error("poll stopped: its mailbox lease was lost", "err", why)
		stopPoll(why)
	})
	p.outcomes.sem = make(chan struct{}, maxOutcomeWrites)
	p.outcomes.messageIDs = map[string]int{}
	p.outcomes.done.L = &p.outcomes.mu
	defer func() {
		stopRenewing()
		if rerr := lease.Release(context.WithoutCancel(ctx)); rerr != nil {
			p.log.Warn("lease release failed", "err", rerr)
		}
		err := res.Err
		if cause := context.Cause(lctx); errors.Is(cause, errLeaseLost) {
			err = fmt.Errorf("mailbox %s: %w", mb.ID, cause)
		}
		res = p.tally.close()
		res.OldestUndelivered, res.Err = p.oldest, err
	}()
	if p.routing, res.Err = c.newRouting(); res.Err != nil {
		res.Err = fmt.Errorf("mailbox %s: %w", mb.ID, res.Err)
		return res
	}
	p.routing.log = p.log
	pctx, cancel := context.WithTimeout(lctx, timeout)
	defer cancel()
	res.Err = p.run(pctx)
	return res
}

type poll struct {
	c     *Connector
	mb    Mailbox
	log   *slog.Logger
	tally *tally // every count of the poll goes through it

	src     Source
	routing *routing // used by the delivering goroutine only
	sealing sync.WaitGroup
	// untrusted, set by the fetching side, says why the POP3 session can
	// no longer be believed; the poll then sends no DELE and drops the
	// connection without QUIT (there is nothing to commit).
	untrusted string
	// heldDue are the held messages due for a refetch, which the fetching
	// side leaves to refetchHeld; displaced the unsettled records it
	// found superseded by a new generation (delivered by deliverGone).
	heldDue   []heldFetch
	displaced []*ledger.Record
	oldest    time.Duration // the oldest undelivered message's age, at the end
	// outcomes are the ledger writes of delivered messages running in
	// the background (see recordLater).
	outcomes struct {
		sem     chan struct{} // bounds how many run at once
		mu      sync.Mutex    // guards pending, err and messageIDs
		done    sync.Cond     // on mu: pending reached zero
		pending int           // writes running
		err     error         // the first failure
		// messageIDs counts the writes in flight per Message-ID, so that
		// a copy of the same message waits for them before its duplicate
		// lookup.
		messageIDs map[string]int
	}
}

// run is one poll: list, decide each message (Decide) and carry the
// decisions out in the pipeline's stages, deliver what is archived but
// gone from the server, retry notices, delete what is settled, quit, and
// refetch the held messages due.
func (p *poll) run(ctx context.Context) (err error) {
	if p.src, err = p.mb.Dial(ctx); err != nil {
		return fmt.Errorf("mailbox %s: %w", p.mb.ID, err)
	}
	quitted := false
	defer func() {
		// No ledger write may outlive the poll (and its lease).
		if werr := p.waitOutcomes(); werr != nil && err == nil {
			err = werr
		}
		p.routing.closeAll()
		if !quitted {
			p.endSession(ctx)
		}
	}()
	msgs, recs, err := p.list(ctx)
	if err != nil {
		return err
	}
	byUID := currentRecords(recs)
	gone := goneRecords(recs, msgs, byUID)
	if err := p.recordGone(ctx, gone); err != nil {
		return err
	}
	dels, err := p.fetchAndDeliver(ctx, msgs, byUID)
	if err != nil {
		return err
	}
	if err := p.deliverGone(ctx, append(gone, p.displaced...)); err != nil {
		return err
	}
	if err := p.retryNotices(ctx, recs); err != nil {
		return err
	}
	// Nothing of the main session needs SMTP any more: its connections
	// say QUIT while the POP3 side deletes (the held refetch dials again
	// if it must notify).
	p.routing.closeIdleAsync()
	p.oldest = p.oldestUndelivered(byUID)
	if err := p.waitOutcomes(); err != nil { // deletion needs every delivery recorded (rule 1)
		return err
	}
	if p.untrusted != "" {
		p.log.Error("POP3 session out of step: no DELE sent, connection dropped; the next poll goes on", "reason", p.untrusted)
	} else if len(dels) > 0 {
		if err := p.deleteDelivered(ctx, dels, &quitted); err != nil {
			return err
		}
	}
	if !quitted {
		quitted = true
		p.endSession(ctx)
	}
	return p.refetchHeld(ctx)
}

// endSession ends the main POP3 session without deleting anything: QUIT
// when it can be trusted (no DELE is outstanding on this path), a
// dropped connection otherwise.
func (p *poll) endSession(ctx context.Context) { endWithoutDele(ctx, p.src, p.untrusted == "") }

// endWithoutDele ends a POP3 session on which nothing is marked for
// deletion: QUIT when it is in step, a dropped connection otherwise (or
// when QUIT fails).
func endWithoutDele(ctx context.Context, src Source, inStep bool) {
	if !inStep {
		src.Close()
		return
	}
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := src.Quit(qctx); err != nil {
		src.Close()
	}
}

// putRecord writes rec even when the poll's context has ended: what it
// records has already happened.
func (p *poll) putRecord(ctx context.Context, rec *ledger.Record) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := p.c.Ledger.Put(wctx, rec); err != nil {
		return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
	}
	return nil
}

// list reads the server's listing (without the UIDLs it gives to several
// messages) and the mailbox's records.
func (p *poll) list(ctx context.Context) ([]ServerMessage, []*ledger.Record, error) {
	msgs, err := p.src.ListAll(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("mailbox %s: list: %w", p.mb.ID, err)
	}
	p.tally.emit(Event{Mailbox: p.mb.ID, Kind: EventListed, Count: len(msgs)})
	msgs = p.withoutDuplicateUIDs(msgs)
	recs, err := p.c.Ledger.List(ctx, p.mb.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
	}
	return msgs, recs, nil
}

// situation is what Decide looks at for rec now.
func (p *poll) situation(rec *ledger.Record, listing Listing, b Budget) Situation {
	return Situation{Record: rec, Listing: listing, Now: p.c.now().UTC(), Budget: b, SizeLimit: p.routing.sizeLimit(),
		Policy: Policy{AfterDelivery: p.mb.AfterDelivery, KeepFor: p.mb.KeepFor, Undeliverable: p.mb.Undeliverable,
			GiveUpAfter: p.c.Settings.GiveUpAfter, MaxTraceHops: p.c.Settings.MaxTraceHops}}
}

// goneRecords are the records no current listing stands for: their
// message left the server (another client deleted it, a DELE whose
// QUIT +OK was not recorded), or the UIDL now names a newer generation.
func goneRecords(recs []*ledger.Record, msgs []ServerMessage, byUID map[string]*ledger.Record) []*ledger.Record {
	listed := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		listed[m.UID] = true
	}
	var gone []*ledger.Record
	for _, r := range recs {
		if base := baseUID(r.UIDL); !listed[base] || byUID[base] != r {
			gone = append(gone, r)
		}
	}
	return gone
}

// recordGone records as deleted the settled messages no longer on the
// server, several writes at once.
func (p *poll) recordGone(ctx context.Context, gone []*ledger.Record) error {
	var done []*ledger.Record
	now := p.c.now().UTC()
	for _, r := range gone {
		if Decide(p.situation(r, Gone, Budget{})).Action == ActDelete {
			r.DeletedAt = now
			done = append(done, r)
		}
	}
	return p.putEach(ctx, done)
}

// deliverGone delivers from the archive what was archived but whose
// server copy has gone: the archive is the durable copy. The fetch
// budget does not apply (nothing is fetched); the deadline and a stop
// request do.
func (p *poll) deliverGone(ctx context.Context, gone []*ledger.Record) error {
	for _, r := range gone {
		d := Decide(p.situation(r, Gone, Budget{Deliver: true}))
		if d.Action == ActDeliver || d.Action == ActSetAside {
			// Work to start: only then does the budget matter.
			if why := p.budgetExhausted(ctx, 0, 0, ServerMessage{}); why != "" {
				p.stop(why)
				return nil
			}
		}
		if err := p.carryOut(ctx, r, d, false); err != nil {
			return err
		}
	}
	return nil
}

// maxOutcomeWrites bounds the outcome writes in flight; the bolt ledger
// commits them together, the DynamoDB ledger sends them in parallel.
const maxOutcomeWrites = 8

// outcomeErr is the first failed background outcome write, if any.
func (p *poll) outcomeErr() error {
	p.outcomes.mu.Lock()
	defer p.outcomes.mu.Unlock()
	return p.outcomes.err
}

// waitForCopies waits, before rec's duplicate lookup, for the outcome
// writes in flight of a copy of the same message: the lookup must see them.
func (p *poll) waitForCopies(rec *ledger.Record) error {
	p.outcomes.mu.Lock()
	defer p.outcomes.mu.Unlock()
	for p.outcomes.messageIDs[rec.MessageID] > 0 {
		p.outcomes.done.Wait()
	}
	return p.outcomes.err
}

// recordLater writes a delivered message's outcome to the ledger in the
// background, so that the SMTP transactions of the messages after it
// overlap the write, and then gives back the message's place in the reply
// window (slot). Only a message with nothing else to do (every recipient
// accepted, no notice) goes this way, and nothing that depends on the
// record (DELE, the end of the poll, a copy's duplicate lookup) happens
// before the write ended. So a crash or a failed write leaves at most the
// messages holding a place in the window unrecorded (rule 3's declared
// bound, Settings.ReplyWindow).
func (p *poll) recordLater(ctx context.Context, rec *ledger.Record, sent []int, slot *replySlot) {
	p.outcomes.sem <- struct{}{}
	p.outcomes.mu.Lock()
	p.outcomes.messageIDs[rec.MessageID]++
	p.outcomes.pending++
	p.outcomes.mu.Unlock()
	go func() {
		var err error
		defer func() {
			p.outcomes.mu.Lock()
			if p.outcomes.messageIDs[rec.MessageID]--; p.outcomes.messageIDs[rec.MessageID] <= 0 {
				delete(p.outcomes.messageIDs, rec.MessageID)
			}
			if err != nil && p.outcomes.err == nil {
				p.outcomes.err = err
			}
			p.outcomes.pending--
			p.outcomes.done.Broadcast() // waitOutcomes and waitForCopies check their own condition
			p.outcomes.mu.Unlock()
			slot.release()
			<-p.outcomes.sem
		}()
		defer recovered(&err, "while recording "+rec.UIDL)
		// The SMTP server has answered: record it even if the poll's
		// context ended meanwhile (deadline, SIGTERM).
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err = p.putOutcome(wctx, rec, sent); err != nil {
			p.emit(EventUnrecorded, rec.UIDL)
			err = fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
		}
	}()
}

// noteOutcomeErr notes that an outcome could not be recorded: no further
// message of the poll is committed (send's BeforeEnd).
func (p *poll) noteOutcomeErr(err error) {
	p.outcomes.mu.Lock()
	defer p.outcomes.mu.Unlock()
	if p.outcomes.err == nil {
		p.outcomes.err = err
	}
}

// waitOutcomes waits until no background outcome write is running and
// returns the first failure. Deliveries in flight may call it at once,
// while others start writes.
func (p *poll) waitOutcomes() error {
	p.outcomes.mu.Lock()
	defer p.outcomes.mu.Unlock()
	for p.outcomes.pending > 0 {
		p.outcomes.done.Wait()
	}
	return p.outcomes.err
}

// withoutDuplicateUIDs drops every message whose UIDL the listing gives
// more than once (a broken server): a UIDL that names two messages names
// neither, so both stay on the server, untouched, with an error logged.
func (p *poll) withoutDuplicateUIDs(msgs []ServerMessage) []ServerMessage {
	count := make(map[string]int, len(msgs))
	for _, m := range msgs {
		count[m.UID]++
	}
	out := msgs[:0:0]
	for _, m := range msgs {
		if count[m.UID] > 1 {
			p.log.Error("the server lists this UIDL for several messages: left on the server, not fetched", "uidl", m.UID, "message", m.Num)
			p.emit(EventDuplicateUID, m.UID)
			continue
		}
		out = append(out, m)
	}
	return out
}

// budgetExhausted says why no further message should be started, or "".
func (p *poll) budgetExhausted(ctx context.Context, fetched int, bytes int64, next ServerMessage) string {
	if err := ctx.Err(); err != nil {
		return "deadline"
	}
	select {
	case <-p.c.Drain:
		return "stopping"
	default:
	}
	if dl, ok := ctx.Deadline(); ok {
		// Keep time for one SMTP exchange and for QUIT.
		reserve := 2*p.c.Settings.DeliveryTimeout + 5*time.Second
		if time.Until(dl) < reserve {
			return "deadline"
		}
	}
	if p.mb.MaxMessages > 0 && fetched >= p.mb.MaxMessages {
		return "max messages per poll"
	}
	// The first message is always fetched, however large, so a message
	// bigger than the byte budget cannot block the mailbox for ever.
	if p.mb.MaxBytes > 0 && fetched > 0 && bytes+next.Size > p.mb.MaxBytes {
		return "max bytes per poll"
	}
	return ""
}

// putEach writes records that need no atomicity between them (deletion
// marks) as separate conditional Puts, several at once: on DynamoDB a
// single-record Put costs half the write units of the same record in a
// transaction, and the bolt ledger group-commits concurrent Puts into one
// fsync. The first error is returned once all writes have finished.
func (p *poll) putEach(ctx context.Context, recs []*ledger.Record) error {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	errs := make(chan error, len(recs))
	var wg sync.WaitGroup
	for _, r := range recs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			var err error
			defer func() {
				if err != nil {
					errs <- err
				}
				<-sem
				wg.Done()
			}()
			defer recovered(&err, "while recording "+r.UIDL)
			err = p.c.Ledger.Put(ctx, r)
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
	}
	return nil
}

// oldestUndelivered is the age of the oldest message whose state is not
// settled.
func (p *poll) oldestUndelivered(byUID map[string]*ledger.Record) time.Duration {
	var oldest time.Time
	now := p.c.now().UTC()
	for _, r := range byUID {
		if st := r.State(now); st.Settled() || st == ledger.StateDeleted {
			continue
		}
		if oldest.IsZero() || r.FirstSeen.Before(oldest) {
			oldest = r.FirstSeen
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return p.c.now().Sub(oldest)
}

// deleteDelivered sends DELE for delivered messages, then QUIT; only QUIT
// +OK makes the deletions real, and only then are they recorded.
func (p *poll) deleteDelivered(ctx context.Context, dels []deletion, quitted *bool) error {
	nums := make([]int, len(dels))
	recs := make([]*ledger.Record, len(dels))
	for i, d := range dels {
		nums[i], recs[i] = d.num, d.rec
	}
	sort.Ints(nums)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if ctx.Err() == nil {
		cctx = ctx
	}
	var deleErr, quitErr error
	if dq, ok := p.src.(DeleQuitter); ok {
		deleErr, quitErr = dq.DeleQuit(cctx, nums...)
	} else {
		deleErr = p.src.Dele(cctx, nums...)
		quitErr = p.src.Quit(cctx)
	}
	*quitted = true
	if err := quitErr; err != nil {
		p.src.Close()
		return fmt.Errorf("mailbox %s: QUIT after DELE (deletions not confirmed; the next poll deletes again): %w", p.mb.ID, err)
	}
	if deleErr != nil {
		// Some DELEs may have taken effect; the next poll's sweep records
		// whichever messages are gone.
		return fmt.Errorf("mailbox %s: DELE: %w", p.mb.ID, deleErr)
	}
	now := p.c.now().UTC()
	for _, r := range recs {
		r.DeletedAt = now
	}
	if err := p.putEach(context.WithoutCancel(cctx), recs); err != nil {
		return err
	}
	p.tally.emit(Event{Mailbox: p.mb.ID, Kind: EventDeleted, Count: len(recs)})
	p.log.Info("deleted from the POP3 server", "count", len(recs))
	return nil
}
