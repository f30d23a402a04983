package connector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/message"
	"github.com/popconnector/popconnector/internal/recipients"
	"github.com/popconnector/popconnector/internal/relay"
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
	RetryInterval    time.Duration // first retry after a failure (seed default 10 min)
	MaxRetryInterval time.Duration // backoff cap
	GiveUpAfter      time.Duration // stop automatic attempts this long after first seen
	DeliveryTimeout  time.Duration // SMTP timeout: time kept in reserve before the deadline
	LeaseOwner       string        // who holds mailbox leases (host and process)
	// MaxTraceHops is how many of this connector's own Received fields a
	// message may carry before it counts as a mail loop (0 = 3).
	MaxTraceHops int
	// Notify selects the notices sent to the postmaster.
	Notify NotifySettings
}

// Step names a durable step of the pipeline, for crash injection in tests.
type Step string

// The durable steps, in pipeline order.
const (
	StepArchived         Step = "archived"          // archive.Put returned
	StepArchiveRecorded  Step = "archive-recorded"  // ledger holds the archive key
	StepRelayed          Step = "relayed"           // SMTP replied to DATA, not yet recorded
	StepDeliveryRecorded Step = "delivery-recorded" // ledger holds the outcome
	StepDeleSent         Step = "dele-sent"         // DELE answered, QUIT not yet sent
	StepQuitOK           Step = "quit-ok"           // QUIT answered +OK, deletion not yet recorded
)

// Hooks lets tests stop the pipeline after a durable step. When After
// returns an error the poll ends at once as a crash would: no QUIT, no
// further ledger write, no lease release.
type Hooks struct {
	After func(step Step, mailbox, uid string) error
}

// ErrCrash is what tests return from Hooks.After to simulate a crash.
var ErrCrash = errors.New("connector: crash injected")

// Connector polls mailboxes into an archive, a ledger and a relay.
type Connector struct {
	Archive archive.Archive
	Ledger  ledger.Ledger
	// Routes and DialRoute choose and open the SMTP endpoint of each
	// recipient (address space and cost, package route). When Routes is
	// nil, DialRelay is the single route for every recipient.
	Routes    *route.Table
	DialRoute RouteDialer
	DialRelay RelayDialer
	Settings  Settings
	Logger    *slog.Logger
	Now       func() time.Time
	Hooks     Hooks
	// Drain, when closed, stops polls from starting new messages while the
	// message in flight finishes (a graceful stop on SIGTERM: cancelling the
	// context instead would cut DATA and widen the duplicate window).
	Drain <-chan struct{}
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

// leaseMargin is how much longer a lease lives than the poll deadline, so
// that a poller is always done (or stopped by its deadline) before another
// can take the mailbox.
const leaseMargin = 2 * time.Minute

// cleanupTimeout bounds QUIT and the last ledger writes after the poll
// deadline has passed.
const cleanupTimeout = 30 * time.Second

// Poll runs the pipeline once over mb. It never panics; a mailbox-level
// failure is in Result.Err.
func (c *Connector) Poll(ctx context.Context, mb Mailbox) (res Result) {
	start := c.now()
	res.Mailbox = mb.ID
	defer func() {
		if p := recover(); p != nil {
			res.Err = fmt.Errorf("connector: mailbox %s: internal error: %v", mb.ID, p)
		}
		res.Duration = c.now().Sub(start)
	}()
	timeout := mb.PollTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	lease, err := c.Ledger.Lease(ctx, mb.ID, c.Settings.LeaseOwner, timeout+leaseMargin)
	if err != nil {
		res.Err = fmt.Errorf("mailbox %s: %w", mb.ID, err)
		return res
	}
	p := &poll{c: c, mb: mb, res: &res, log: c.log().With("mailbox", mb.ID)}
	if p.routing, err = c.newRouting(); err != nil {
		res.Err = fmt.Errorf("mailbox %s: %w", mb.ID, err)
		if rerr := lease.Release(context.WithoutCancel(ctx)); rerr != nil {
			p.log.Warn("lease release failed", "err", rerr)
		}
		return res
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = p.run(pctx)
	if errors.Is(err, ErrCrash) {
		res.Err = err
		return res // a crash leaves the lease to expire
	}
	if rerr := lease.Release(context.WithoutCancel(ctx)); rerr != nil {
		p.log.Warn("lease release failed", "err", rerr)
	}
	res.Err = err
	return res
}

type poll struct {
	c   *Connector
	mb  Mailbox
	res *Result
	log *slog.Logger

	src     Source
	routing *routing    // used by the delivering goroutine only
	crashed atomic.Bool // a test hook simulated a crash
	// untrusted, set by the fetching side, says why the POP3 session can
	// no longer be believed; the poll then sends no DELE and drops the
	// connection without QUIT (there is nothing to commit).
	untrusted string
	// heldDue are the held messages due for a refetch, which the fetching
	// side leaves to refetchHeld.
	heldDue []heldFetch
	// outcomes are the ledger writes of delivered messages running in
	// the background (see recordLater).
	outcomes struct {
		wg  sync.WaitGroup
		sem chan struct{} // bounds how many run at once
		mu  sync.Mutex    // guards err, messageIDs and the res counts written from several goroutines
		err error         // the first failure
		// messageIDs counts the writes in flight per Message-ID, so that
		// a copy of the same message waits for them before its duplicate
		// lookup.
		messageIDs map[string]int
	}
}

// maxOutcomeWrites bounds the outcome writes in flight; the bolt ledger
// commits them together, the DynamoDB ledger sends them in parallel.
const maxOutcomeWrites = 8

// countFetched counts a message received and sealed (archived and
// recorded); seals run on goroutines of their own.
func (p *poll) countFetched(size int64) {
	p.outcomes.mu.Lock()
	p.res.Fetched++
	p.res.Bytes += size
	p.outcomes.mu.Unlock()
}

// countGaveUp counts a message given up; the fetching side (a held
// message) and the delivering side (badmail) both do.
func (p *poll) countGaveUp() {
	p.outcomes.mu.Lock()
	p.res.GaveUp++
	p.outcomes.mu.Unlock()
}

// outcomeErr is the first failed background outcome write, if any.
func (p *poll) outcomeErr() error {
	p.outcomes.mu.Lock()
	defer p.outcomes.mu.Unlock()
	return p.outcomes.err
}

// countUnrecorded counts a message accepted by the SMTP server whose
// acceptance could not be recorded.
func (p *poll) countUnrecorded() {
	p.outcomes.mu.Lock()
	p.res.UnrecordedReplies++
	p.outcomes.mu.Unlock()
}

// recordLater writes a delivered message's outcome to the ledger in the
// background, so that the next message's SMTP transaction overlaps the
// write. Only a message with nothing else to do (every recipient accepted,
// no notice) goes this way, and nothing that depends on the record (DELE,
// the end of the poll, the next message's final ".") happens before
// waitOutcomes. So the duplicate window of rule 3 is unchanged: a crash or
// failed write leaves at most the one accepted message unrecorded, as a
// synchronous write would.
func (p *poll) recordLater(ctx context.Context, rec *ledger.Record, sent []int) {
	if p.outcomes.sem == nil {
		p.outcomes.sem = make(chan struct{}, maxOutcomeWrites)
		p.outcomes.messageIDs = map[string]int{}
	}
	p.outcomes.sem <- struct{}{}
	p.outcomes.mu.Lock()
	p.outcomes.messageIDs[rec.MessageID]++
	p.outcomes.mu.Unlock()
	p.outcomes.wg.Add(1)
	go func() {
		defer p.outcomes.wg.Done()
		defer func() { <-p.outcomes.sem }()
		defer func() {
			p.outcomes.mu.Lock()
			if p.outcomes.messageIDs[rec.MessageID]--; p.outcomes.messageIDs[rec.MessageID] <= 0 {
				delete(p.outcomes.messageIDs, rec.MessageID)
			}
			p.outcomes.mu.Unlock()
		}()
		err := func() (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = fmt.Errorf("mailbox %s: internal error while recording %s: %v", p.mb.ID, rec.UIDL, v)
				}
			}()
			// The SMTP server has answered: record it even if the poll's
			// context ended meanwhile (deadline, SIGTERM).
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if err := p.putOutcome(wctx, rec, sent); err != nil {
				p.countUnrecorded()
				return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
			}
			return p.hook(StepDeliveryRecorded, rec.UIDL)
		}()
		if err != nil {
			p.outcomes.mu.Lock()
			if p.outcomes.err == nil {
				p.outcomes.err = err
			}
			p.outcomes.mu.Unlock()
		}
	}()
}

// waitOutcomes waits for every background outcome write and returns the
// first failure.
func (p *poll) waitOutcomes() error {
	p.outcomes.wg.Wait()
	return p.outcomeErr()
}

// hook reports a durable step to the test hooks. Once one step has
// "crashed", every later step of the poll (in either goroutine of the
// pipeline) crashes too, as the whole process would have.
func (p *poll) hook(step Step, uid string) error {
	if p.c.Hooks.After == nil {
		return nil
	}
	if p.crashed.Load() {
		return fmt.Errorf("at %s of %s: %w", step, uid, ErrCrash)
	}
	if err := p.c.Hooks.After(step, p.mb.ID, uid); err != nil {
		if errors.Is(err, ErrCrash) {
			p.crashed.Store(true)
		}
		return fmt.Errorf("after %s of %s: %w", step, uid, err)
	}
	return nil
}

func (p *poll) run(ctx context.Context) (err error) {
	src, err := p.mb.Dial(ctx)
	if err != nil {
		return fmt.Errorf("mailbox %s: %w", p.mb.ID, err)
	}
	p.src = src
	quitted := false
	defer func() {
		// No ledger write may outlive the poll (and its lease).
		if werr := p.waitOutcomes(); werr != nil && err == nil {
			err = werr
		}
		p.routing.closeAll(errors.Is(err, ErrCrash))
		if quitted {
			return
		}
		if errors.Is(err, ErrCrash) || p.untrusted != "" {
			p.src.Close()
			return
		}
		// Always end with QUIT when the connection allows: no DELE is
		// outstanding on this path, so QUIT only ends the session cleanly.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if qerr := p.src.Quit(qctx); qerr != nil {
			p.src.Close()
		}
	}()

	msgs, err := src.ListAll(ctx)
	if err != nil {
		return fmt.Errorf("mailbox %s: list: %w", p.mb.ID, err)
	}
	p.res.OnServer = len(msgs)
	msgs = p.withoutDuplicateUIDs(msgs)
	recs, err := p.c.Ledger.List(ctx, p.mb.ID)
	if err != nil {
		return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
	}
	byUID := currentRecords(recs)
	onServer := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		onServer[m.UID] = true
	}
	if err := p.sweepGone(ctx, recs, onServer); err != nil {
		return err
	}

	toDelete, err := p.fetchAndDeliver(ctx, msgs, byUID)
	if err != nil {
		return err
	}
	// Mail that was archived but whose server copy has gone (another client
	// deleted it) is still ours to deliver: the archive is the durable copy.
	for _, r := range recs {
		base := baseUID(r.UIDL)
		handled := onServer[base] && byUID[base] == r // the main loop's
		if handled || r.Settled() || r.Deleted() || !r.Archived() || r.Held != "" {
			continue
		}
		// The fetch budget does not apply (nothing is fetched); the
		// deadline and a stop request do.
		if why := p.budgetExhausted(ctx, 0, 0, ServerMessage{}); why != "" {
			if p.res.Stopped == "" {
				p.res.Stopped = why
			}
			break
		}
		if err := p.deliverIfDue(ctx, r); err != nil {
			return err
		}
	}
	if err := p.retryNotices(ctx, recs); err != nil {
		return err
	}
	p.res.OldestUndelivered = p.oldestUndelivered(byUID)
	// Deletion needs every delivery recorded (rule 1).
	if err := p.waitOutcomes(); err != nil {
		return err
	}

	if p.untrusted != "" {
		p.log.Error("POP3 session out of step: no DELE sent, connection dropped; the next poll goes on", "reason", p.untrusted)
		p.src.Close()
		quitted = true
		return p.refetchHeld(ctx, &quitted) // on sessions of their own
	}
	if len(toDelete) > 0 {
		if err := p.deleteDelivered(ctx, toDelete, &quitted); err != nil {
			return err
		}
	}
	return p.refetchHeld(ctx, &quitted)
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
			p.res.DuplicateUIDs++
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

func (p *poll) shouldDelete(rec *ledger.Record) bool {
	switch p.mb.AfterDelivery {
	case Keep:
		return false
	case KeepDays:
		return !p.c.now().Before(rec.FirstSeen.Add(p.mb.KeepFor))
	default:
		return true
	}
}

// sweepGone records as deleted the delivered messages no longer on the
// server: a DELE whose QUIT +OK was not recorded (crash), or another
// client's deletion.
func (p *poll) sweepGone(ctx context.Context, recs []*ledger.Record, onServer map[string]bool) error {
	var gone []*ledger.Record
	now := p.c.now()
	for _, r := range recs {
		if !onServer[baseUID(r.UIDL)] && r.Settled() && !r.Deleted() {
			r.DeletedAt = now
			gone = append(gone, r)
		}
	}
	return p.putEach(ctx, gone)
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
			defer wg.Done()
			defer func() { <-sem }()
			defer func() {
				if v := recover(); v != nil {
					errs <- fmt.Errorf("internal error: %v", v)
				}
			}()
			if err := p.c.Ledger.Put(ctx, r); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
	}
	return nil
}

func (p *poll) oldestUndelivered(byUID map[string]*ledger.Record) time.Duration {
	var oldest time.Time
	for _, r := range byUID {
		if r.Settled() || r.Deleted() {
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

// deliverIfDue attempts delivery of an archived record unless it waits
// for its next attempt or was given up.
func (p *poll) deliverIfDue(ctx context.Context, rec *ledger.Record) error {
	if rec.GaveUp || rec.Disposition != "" {
		return nil
	}
	if p.c.now().Before(rec.NextAttempt) {
		p.res.NotDue++
		return nil
	}
	return p.deliver(ctx, rec, p.log.With("uidl", rec.UIDL))
}

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
	if staged == nil {
		if err := p.hook(StepArchived, m.UID); err != nil {
			return nil, 0, err
		}
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
			if err := p.hook(StepArchived, m.UID); err != nil {
				return err
			}
		}
		if err := p.c.Ledger.Put(ctx, rec); err != nil {
			return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
		}
		return p.hook(StepArchiveRecorded, m.UID)
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
		rec.Held, rec.HeldFetches, rec.LastError, rec.NextAttempt = "", 0, "", time.Time{}
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
		rec.NextAttempt = p.c.now().UTC().Add(p.refetchDelay(rec))
		p.log.Error("held: size differs from the server's LIST", "uidl", m.UID, "listed", m.Size, "received", info.Size,
			"fetches", rec.HeldFetches, "next_fetch", rec.NextAttempt, "key", info.Key)
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
	addrs := make([]string, len(rec.Recipients))
	for i, rc := range rec.Recipients {
		addrs[i] = rc.Address
	}
	rec.NeedsSMTPUTF8 = relay.NeedsSMTPUTF8(rec.Sender, addrs)
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

// deliver sends rec to the recipients that have not accepted it, over
// the route of each, records every outcome and, for a message that cannot
// be delivered, the undeliverable option's decision; then it sends the
// postmaster notices due.
func (p *poll) deliver(ctx context.Context, rec *ledger.Record, log *slog.Logger) error {
	if p.crashed.Load() {
		return fmt.Errorf("before sending %s: %w", rec.UIDL, ErrCrash)
	}
	// An earlier message's outcome could not be recorded (another poller
	// took the mailbox over, the ledger failed): send nothing more.
	p.outcomes.mu.Lock()
	werr := p.outcomes.err
	pendingCopy := p.outcomes.messageIDs[rec.MessageID] > 0
	p.outcomes.mu.Unlock()
	if werr != nil {
		return werr
	}
	if pendingCopy {
		// Another copy's acceptance is still being written: the duplicate
		// lookup must see it.
		if err := p.waitOutcomes(); err != nil {
			return err
		}
	}
	if done, err := p.suppressDuplicates(ctx, rec, log); done || err != nil {
		return err
	}
	var env relay.Envelope
	// Commit (the final ".") only once every earlier outcome is recorded,
	// so a failed write stops the poll before another message is taken:
	// the duplicate window stays one message wide, as with synchronous
	// writes, while the write still overlaps this message's transfer.
	env.BeforeEnd = p.waitOutcomes
	env.From = rec.Sender
	env.Size = rec.Size
	env.Needs8BitMIME = rec.Needs8BitMIME
	env.NeedsSMTPUTF8 = rec.NeedsSMTPUTF8
	var idx []int
	for i, rc := range rec.Recipients {
		if !rc.Status.Done() {
			env.To = append(env.To, rc.Address)
			idx = append(idx, i)
		}
	}
	now := p.c.now().UTC()
	att := attempt{at: now}
	anyAcceptedNow := false // a recipient accepted in this attempt
	if hops := p.maxTraceHops(); rec.TraceHops > hops {
		// A loop: relaying again would only add another hop.
		att.loop = true
		att.reason = fmt.Sprintf("mail loop (5.4.6): the message already carries %d Received fields from this connector (%s), more than %d",
			rec.TraceHops, p.c.Settings.Hostname, hops)
		rec.LastError = att.reason
	} else {
		outcomes, remote := p.routing.send(ctx, p, rec, env)
		for _, o := range outcomes {
			anyAcceptedNow = anyAcceptedNow || o.Err == nil
		}
		if werr := p.outcomeErr(); werr != nil && !anyAcceptedNow {
			// Abandoned before its "." because an earlier outcome could
			// not be recorded: not an attempt of this message, so nothing
			// about it changes (no retry delay, no give-up, no notice).
			return werr
		}
		rec.Attempts++
		rec.LastAttempt = now
		anyTemp, anyPerm := false, false
		var reasons []string
		for j, i := range idx {
			rc := &rec.Recipients[i]
			rc.At = now
			o := outcomes[j]
			if o.Err == nil {
				rc.Status, rc.Code, rc.Enhanced, rc.Reply = ledger.Accepted, 250, "", o.Reply
				continue
			}
			att.failed = append(att.failed, failure{addr: rc.Address, err: o.Err, remote: remote[j]})
			rc.Code, rc.Enhanced, rc.Reply = o.Err.Code, o.Err.Enhanced, o.Err.Error()
			if o.Err.Temporary {
				rc.Status = ledger.Deferred
				anyTemp = true
			} else {
				rc.Status = ledger.Rejected
				anyPerm = true
			}
			reasons = append(reasons, rc.Address+": "+o.Err.Error())
		}
		if err := p.hook(StepRelayed, rec.UIDL); err != nil {
			if anyAcceptedNow {
				// Accepted but not recorded: the next run sends again.
				p.countUnrecorded()
			}
			return err
		}
		switch {
		case rec.Delivered():
			rec.NextAttempt, rec.LastError = time.Time{}, ""
			p.res.Delivered++
			log.Info("delivered", "message_id", rec.MessageID, "outcome", "accepted", "recipients", len(env.To), "reply", firstReply(rec))
		default:
			rec.LastError = strings.Join(reasons, "; ")
			rec.NextAttempt = now.Add(p.retryDelay(rec.Attempts, anyTemp))
			if att.tooLarge() {
				rec.LastError = "too large: " + rec.LastError
				if !anyTemp {
					// SIZE rules it out until Exchange's limit changes:
					// try again only at the slowest pace.
					rec.NextAttempt = now.Add(p.slowestRetry())
				}
			}
			if anyTemp {
				p.res.Deferred++
				log.Warn("deferred", "message_id", rec.MessageID, "outcome", "deferred", "next_attempt", rec.NextAttempt, "reason", rec.LastError)
			} else if anyPerm {
				p.res.Rejected++
				log.Warn("rejected", "message_id", rec.MessageID, "outcome", "rejected", "next_attempt", rec.NextAttempt, "reason", rec.LastError)
			}
		}
	}
	if !rec.Delivered() {
		if err := p.decide(ctx, rec, &att, log); err != nil {
			return err
		}
	}
	if rec.Delivered() && len(att.failed) == 0 && !att.loop {
		p.recordLater(ctx, rec, idx)
		return nil
	}
	// The SMTP server has answered: record it even if the poll's context
	// ended meanwhile (deadline, SIGTERM), or the next run relays again.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := p.putOutcome(wctx, rec, idx); err != nil {
		if anyAcceptedNow {
			p.countUnrecorded()
		}
		return fmt.Errorf("mailbox %s: ledger: %w", p.mb.ID, err)
	}
	if err := p.hook(StepDeliveryRecorded, rec.UIDL); err != nil {
		return err
	}
	return p.sendNotices(ctx, rec, &att, log)
}

func orUnknown(err error) error {
	if err == nil {
		return errors.New("no outcome from the SMTP server")
	}
	return err
}

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
	return r.Send(ctx, env, io.MultiReader(strings.NewReader(prefix.String()), body))
}

// slowestRetry is the slowest retry pace: the backoff cap.
func (p *poll) slowestRetry() time.Duration {
	return p.retryDelay(1<<20, true)
}

// retryDelay doubles the retry interval per attempt up to the cap for
// temporary failures; permanent rejections are retried at the plain interval.
func (p *poll) retryDelay(attempts int, temporary bool) time.Duration {
	d := p.c.Settings.RetryInterval
	if d <= 0 {
		d = 10 * time.Minute
	}
	if !temporary {
		return d
	}
	maxD := p.c.Settings.MaxRetryInterval
	if maxD <= 0 {
		maxD = 2 * time.Hour
	}
	for i := 1; i < attempts && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
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
	deleErr := p.src.Dele(cctx, nums...)
	if deleErr == nil {
		if err := p.hook(StepDeleSent, ""); err != nil {
			return err
		}
	}
	*quitted = true
	if err := p.src.Quit(cctx); err != nil {
		p.src.Close()
		return fmt.Errorf("mailbox %s: QUIT after DELE (deletions not confirmed; the next poll deletes again): %w", p.mb.ID, err)
	}
	if deleErr != nil {
		// Some DELEs may have taken effect; the next poll's sweep records
		// whichever messages are gone.
		return fmt.Errorf("mailbox %s: DELE: %w", p.mb.ID, deleErr)
	}
	if err := p.hook(StepQuitOK, ""); err != nil {
		return err
	}
	now := p.c.now().UTC()
	for _, r := range recs {
		r.DeletedAt = now
	}
	if err := p.putEach(context.WithoutCancel(cctx), recs); err != nil {
		return err
	}
	p.res.Deleted += len(recs)
	p.log.Info("deleted from the POP3 server", "count", len(recs))
	return nil
}

// traceID is the Received: field's ID: the archive object's name, which
// leads an administrator from Exchange's copy to the archived one.
func traceID(rec *ledger.Record) string {
	name := rec.ArchiveKey[strings.LastIndexByte(rec.ArchiveKey, '/')+1:]
	return strings.TrimSuffix(name, ".eml")
}
