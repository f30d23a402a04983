package connectortest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
)

// ErrCrash is wrapped by every error a Crash's wrappers return once the
// crash fired.
var ErrCrash = errors.New("connectortest: the process crashed")

// Point names a step after which a Crash can fire.
type Point string

// The steps a Crash recognises, in pipeline order.
const (
	// AfterArchived: archive Put returned, or Staged.Commit returned.
	AfterArchived Point = "archived"
	// AfterArchiveRecorded: a ledger write stored a record whose archive
	// key, digest or archive time it did not hold before.
	AfterArchiveRecorded Point = "archive-recorded"
	// AfterRelayReply: Send returned with at least one accepted
	// recipient; nothing has recorded it yet.
	AfterRelayReply Point = "relay-reply"
	// AfterDeliveryRecorded: a ledger write (Put or PutAccepted) stored a
	// recipient as accepted that was not stored so before.
	AfterDeliveryRecorded Point = "delivery-recorded"
	// AfterDele: Dele returned without error (one event per message).
	AfterDele Point = "dele"
	// AfterQuit: Quit returned +OK; the server has deleted what was marked.
	AfterQuit Point = "quit"
	// BeforeDeliveryRecorded: a ledger write (Put or PutAccepted) is about
	// to store a recipient as accepted: the process dies before it, so the
	// SMTP server's 250 is never recorded (the reply window). Unlike the
	// After points, the step does not happen.
	BeforeDeliveryRecorded Point = "before-delivery-recorded"
	// BeforeDeletionRecorded: a ledger write is about to record a deletion
	// the server confirmed (QUIT +OK): the process dies before it.
	BeforeDeletionRecorded Point = "before-deletion-recorded"
	// Killed is the Point of a crash that Kill fired.
	Killed Point = "killed"
)

// Event is one step a wrapped object took.
type Event struct {
	Point Point
	// Mailbox and UIDL name the message. Ledger events give the record's
	// Mailbox and UIDL (its ledger key); archive events the Meta given to
	// Put or Stage; source events the mailbox passed to Crash.Source and
	// the UIDL the session listed; AfterQuit has no UIDL. AfterRelayReply
	// names the record whose archived copy was opened last through the
	// wrapped Archive (the connector opens it just before Send): with
	// several polls in parallel through one Crash that can be another
	// poll's message, and it is empty for a Send that opened nothing (a
	// postmaster notice).
	Mailbox, UIDL string
	// Key is the archive key: the object (AfterArchived, AfterRelayReply)
	// or the record's ArchiveKey (ledger events).
	Key string
}

// Trigger says which event fires the crash.
type Trigger struct {
	At      Point
	Mailbox string           // "" = any
	UIDL    string           // "" = any
	Nth     int              // fire at the Nth matching event, from 1; 0 = the first
	Match   func(Event) bool // a further condition; nil = none
}

func (t Trigger) matches(ev Event) bool {
	return t.At != "" && ev.Point == t.At &&
		(t.Mailbox == "" || t.Mailbox == ev.Mailbox) &&
		(t.UIDL == "" || t.UIDL == ev.UIDL) &&
		(t.Match == nil || t.Match(ev))
}

// Crash wraps the connector's Ledger, Archive, sources and relays and
// kills them all at once when its Trigger fires (see the package doc).
// Wrap each object once per simulated process; after a restart, use a new
// Crash (or none) around the reopened objects. It is safe for concurrent
// use.
type Crash struct {
	trigger Trigger
	crashed atomic.Bool

	mu     sync.Mutex
	seen   int // matching events so far
	fired  *Event
	events []Event
	conns  map[*conn]bool   // sources and relays not yet closed
	labels map[string]label // archive key -> record
	// opened is the archive key last opened, taken by the next Send to
	// name its event.
	opened string
}

type label struct {
	mailbox, uidl string
	fromLedger    bool // a record named it: preferred over archive Meta
}

// conn is a wrapped source or relay: a crash closes it (the kernel
// closes a dead process's sockets), once no call is under way on it.
type conn struct {
	busy   int
	closed bool
	close  func() error
}

// NewCrash returns a Crash that fires at t; a zero Trigger never fires
// by itself (Kill still does).
func NewCrash(t Trigger) *Crash {
	return &Crash{trigger: t, conns: map[*conn]bool{}, labels: map[string]label{}}
}

// Crashed reports whether the crash fired.
func (c *Crash) Crashed() bool { return c.crashed.Load() }

// Fired returns the event the crash fired at.
func (c *Crash) Fired() (Event, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fired == nil {
		return Event{}, false
	}
	return *c.fired, true
}

// Events returns every event seen up to the crash, in order, the one it
// fired at included.
func (c *Crash) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// Kill fires the crash now, if it has not fired yet.
func (c *Crash) Kill() {
	c.mu.Lock()
	if c.crashed.Load() {
		c.mu.Unlock()
		return
	}
	ev := Event{Point: Killed}
	c.events = append(c.events, ev)
	idle := c.fireLocked(ev)
	c.mu.Unlock()
	closeAll(idle)
}

// record notes evs (the effects of one call, which happened) and returns
// the event the crash fired at, or nil.
func (c *Crash) record(evs ...Event) *Event {
	c.mu.Lock()
	if c.crashed.Load() {
		c.mu.Unlock()
		return nil
	}
	for _, ev := range evs {
		c.events = append(c.events, ev)
		if !c.trigger.matches(ev) {
			continue
		}
		if c.seen++; c.seen < max(c.trigger.Nth, 1) {
			continue
		}
		idle := c.fireLocked(ev)
		c.mu.Unlock()
		closeAll(idle)
		return &ev
	}
	c.mu.Unlock()
	return nil
}

// fireLocked marks the crash and returns the connections to close now:
// those no call is using (the others close when their call returns).
func (c *Crash) fireLocked(ev Event) []*conn {
	c.fired = &ev
	c.crashed.Store(true)
	var idle []*conn
	for k := range c.conns {
		if k.busy == 0 {
			k.closed = true
			delete(c.conns, k)
			idle = append(idle, k)
		}
	}
	return idle
}

func closeAll(ks []*conn) {
	for _, k := range ks {
		k.close()
	}
}

// track registers a new connection; after the crash it is closed at once.
func (c *Crash) track(closeFn func() error) (*conn, error) {
	k := &conn{close: closeFn}
	c.mu.Lock()
	if c.crashed.Load() {
		c.mu.Unlock()
		closeFn()
		return nil, dead("dial")
	}
	c.conns[k] = true
	c.mu.Unlock()
	return k, nil
}

// enter starts a call on k, or refuses it after the crash.
func (c *Crash) enter(k *conn, op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed.Load() {
		return dead(op)
	}
	k.busy++
	return nil
}

// exit ends a call on k and closes k if the crash fired meanwhile.
func (c *Crash) exit(k *conn) {
	c.mu.Lock()
	k.busy--
	closeNow := c.crashed.Load() && k.busy == 0 && !k.closed
	if closeNow {
		k.closed = true
		delete(c.conns, k)
	}
	c.mu.Unlock()
	if closeNow {
		k.close()
	}
}

// shut is a wrapped connection's Close: it closes k even after the crash
// (the crash closed it already, or closes it now), once, and still
// reports the crash.
func (c *Crash) shut(k *conn, op string) error {
	c.mu.Lock()
	already := k.closed
	k.closed = true
	delete(c.conns, k)
	c.mu.Unlock()
	var err error
	if !already {
		err = k.close()
	}
	if c.Crashed() {
		return dead(op)
	}
	return err
}

// label remembers which record an archive key belongs to.
func (c *Crash) label(key, mailbox, uidl string, fromLedger bool) {
	if key == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.labels[key]; ok && cur.fromLedger && !fromLedger {
		return
	}
	c.labels[key] = label{mailbox, uidl, fromLedger}
}

func (c *Crash) labelRecords(recs ...*ledger.Record) {
	for _, r := range recs {
		if r != nil {
			c.label(r.ArchiveKey, r.Mailbox, r.UIDL, true)
		}
	}
}

// dead is the error of a call after the crash.
func dead(op string) error {
	return fmt.Errorf("connectortest: %s after the crash: %w", op, ErrCrash)
}

// crashed is the error of the call the crash fired at: its step happened
// (err is the step's own result, if any). A ledger write that fired it
// returns its own result: the write is durable and its caller learns so,
// as a process does that dies just after the write returned, so what the
// caller counts (unrecorded replies) stays exact; the process is dead for
// its next call.
func crashed(ev *Event, err error) error {
	if ev.Point == AfterArchiveRecorded || ev.Point == AfterDeliveryRecorded {
		return err
	}
	if err != nil {
		return fmt.Errorf("connectortest: crashed after %s of %s/%s: %w (the step itself returned: %w)", ev.Point, ev.Mailbox, ev.UIDL, ErrCrash, err)
	}
	return fmt.Errorf("connectortest: crashed after %s of %s/%s: %w", ev.Point, ev.Mailbox, ev.UIDL, ErrCrash)
}

// finish is the end of every wrapped call: the crash's error if this call
// fired it, a dead process's if the crash fired while it ran, else the
// call's own.
//
// A ledger write that succeeded while another call fired the crash
// returns its success: it is durable, and a process dying as it returned
// would have seen it return, so what the caller counts stays exact.
func (c *Crash) finish(fired *Event, op string, err error) error {
	switch {
	case fired != nil:
		return crashed(fired, err)
	case c.crashed.Load() && (err != nil || op != "ledger put"):
		return dead(op)
	}
	return err
}

// reader fails every Read once the crash fired, so a stream in flight
// ends unfinished: what a dead process was writing is never completed.
type reader struct {
	c *Crash
	r io.Reader
	k *conn // the connection it reads from, or nil
}

func (r *reader) Read(p []byte) (int, error) {
	if r.k != nil {
		if err := r.c.enter(r.k, "read"); err != nil {
			return 0, err
		}
		defer r.c.exit(r.k)
	} else if r.c.Crashed() {
		return 0, dead("read")
	}
	n, err := r.r.Read(p)
	if r.c.Crashed() {
		return 0, dead("read")
	}
	return n, err
}

type readCloser struct {
	reader
	closer io.Closer
}

// Close releases the reader; a source's reader after the crash is left
// alone (its connection was closed by the crash).
func (r *readCloser) Close() error {
	if r.k != nil && r.c.Crashed() {
		return dead("close")
	}
	err := r.closer.Close()
	if r.c.Crashed() {
		return dead("close")
	}
	return err
}

// Ledger wraps l.
func (c *Crash) Ledger(l ledger.Ledger) ledger.Ledger { return &crashLedger{c: c, l: l} }

type crashLedger struct {
	c *Crash
	l ledger.Ledger
}

// guard runs a call that is no crash point: refused after the crash,
// and its result dropped if the crash fired while it ran.
func guard[T any](c *Crash, op string, call func() (T, error)) (T, error) {
	var zero T
	if c.Crashed() {
		return zero, dead(op)
	}
	v, err := call()
	if c.Crashed() {
		return zero, dead(op)
	}
	return v, err
}

func (w *crashLedger) Get(ctx context.Context, mailbox string, uidls []string) (map[string]*ledger.Record, error) {
	m, err := guard(w.c, "ledger get", func() (map[string]*ledger.Record, error) { return w.l.Get(ctx, mailbox, uidls) })
	for _, r := range m {
		w.c.labelRecords(r)
	}
	return m, err
}

func (w *crashLedger) List(ctx context.Context, mailbox string) ([]*ledger.Record, error) {
	recs, err := guard(w.c, "ledger list", func() ([]*ledger.Record, error) { return w.l.List(ctx, mailbox) })
	w.c.labelRecords(recs...)
	return recs, err
}

func (w *crashLedger) Put(ctx context.Context, recs ...*ledger.Record) error {
	return w.write(ctx, recs, func() error { return w.l.Put(ctx, recs...) })
}

func (w *crashLedger) PutAccepted(ctx context.Context, rec *ledger.Record, accepted []ledger.Acceptance) error {
	return w.write(ctx, []*ledger.Record{rec}, func() error { return w.l.PutAccepted(ctx, rec, accepted) })
}

// write is a ledger write of recs (put) as a crash point: before it (the
// write then does not happen) and after it.
func (w *crashLedger) write(ctx context.Context, recs []*ledger.Record, put func() error) error {
	if w.c.Crashed() {
		return dead("ledger put")
	}
	before, after := writeSteps(w.stored(ctx, recs), recs)
	if fired := w.c.record(before...); fired != nil {
		return crashed(fired, nil)
	}
	err := put()
	var fired *Event
	if err == nil || errors.Is(err, ledger.ErrIndexNotWritten) { // the record was written either way
		w.c.labelRecords(recs...)
		fired = w.c.record(after...)
	}
	return w.c.finish(fired, "ledger put", err)
}

// stored reads what recs replace, to tell what a write newly records. A
// record at Version 0 replaces nothing; a failed read counts as nothing
// stored (the write itself will most likely fail too).
func (w *crashLedger) stored(ctx context.Context, recs []*ledger.Record) map[recID]*ledger.Record {
	byMailbox := map[string][]string{}
	for _, r := range recs {
		if r != nil && r.Version > 0 {
			byMailbox[r.Mailbox] = append(byMailbox[r.Mailbox], r.UIDL)
		}
	}
	out := map[recID]*ledger.Record{}
	for mb, uidls := range byMailbox {
		m, err := w.l.Get(ctx, mb, uidls)
		if err != nil {
			continue
		}
		for u, r := range m {
			out[recID{mb, u}] = r
		}
	}
	return out
}

type recID struct{ mailbox, uidl string }

// writeSteps are the steps a write of recs over prev is about to take
// that a crash can forestall (before), and those it took once it
// succeeded (after).
func writeSteps(prev map[recID]*ledger.Record, recs []*ledger.Record) (before, after []Event) {
	for _, r := range recs {
		if r == nil {
			continue
		}
		p := prev[recID{r.Mailbox, r.UIDL}]
		ev := func(pt Point) Event { return Event{Point: pt, Mailbox: r.Mailbox, UIDL: r.UIDL, Key: r.ArchiveKey} }
		if r.Archived() && (p == nil || p.ArchiveKey != r.ArchiveKey || p.SHA256 != r.SHA256 || !p.ArchivedAt.Equal(r.ArchivedAt)) {
			after = append(after, ev(AfterArchiveRecorded))
		}
		if newlyAccepted(p, r) {
			before = append(before, ev(BeforeDeliveryRecorded))
			after = append(after, ev(AfterDeliveryRecorded))
		}
		if r.Deleted() && (p == nil || !p.Deleted()) {
			before = append(before, ev(BeforeDeletionRecorded))
		}
	}
	return before, after
}

// newlyAccepted reports whether r holds an accepted recipient that p did
// not hold as accepted at the same instant.
func newlyAccepted(p, r *ledger.Record) bool {
	for _, rc := range r.Recipients {
		if rc.Status != ledger.Accepted {
			continue
		}
		if p == nil {
			return true
		}
		i := slices.IndexFunc(p.Recipients, func(x ledger.Recipient) bool { return x.Address == rc.Address })
		if i < 0 || p.Recipients[i].Status != ledger.Accepted || !p.Recipients[i].At.Equal(rc.At) {
			return true
		}
	}
	return false
}

func (w *crashLedger) Lease(ctx context.Context, mailbox, owner string, ttl time.Duration) (ledger.Lease, error) {
	le, err := guard(w.c, "lease", func() (ledger.Lease, error) { return w.l.Lease(ctx, mailbox, owner, ttl) })
	if err != nil {
		return nil, err
	}
	return &crashLease{c: w.c, le: le}, nil
}

// crashLease: after the crash a lease is neither renewed nor released,
// as a dead poller's is not; it runs out by itself.
type crashLease struct {
	c  *Crash
	le ledger.Lease
}

func (l *crashLease) Renew(ctx context.Context) error {
	_, err := guard(l.c, "lease renew", func() (struct{}, error) { return struct{}{}, l.le.Renew(ctx) })
	return err
}

func (l *crashLease) Release(ctx context.Context) error {
	_, err := guard(l.c, "lease release", func() (struct{}, error) { return struct{}{}, l.le.Release(ctx) })
	return err
}

func (w *crashLedger) Claim(ctx context.Context, cl ledger.Claim, takeOver *ledger.Claim) (ledger.Claim, error) {
	return guard(w.c, "claim", func() (ledger.Claim, error) { return w.l.Claim(ctx, cl, takeOver) })
}

func (w *crashLedger) Accepted(ctx context.Context, messageID string, recipients []string) (map[string]ledger.Acceptance, error) {
	return guard(w.c, "accepted", func() (map[string]ledger.Acceptance, error) { return w.l.Accepted(ctx, messageID, recipients) })
}

// Close closes the wrapped ledger even after the crash (a dead process's
// files are closed, and a restarted one must be able to open them); it
// still reports the crash.
func (w *crashLedger) Close() error {
	err := w.l.Close()
	if w.c.Crashed() {
		return dead("ledger close")
	}
	return err
}

// Archive wraps a; the result is an archive.Stager when a is one.
func (c *Crash) Archive(a archive.Archive) archive.Archive {
	w := &crashArchive{c: c, a: a}
	if st, ok := a.(archive.Stager); ok {
		return &crashStager{crashArchive: w, st: st}
	}
	return w
}

type crashArchive struct {
	c *Crash
	a archive.Archive
}

func (w *crashArchive) Put(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Info, error) {
	if w.c.Crashed() {
		return archive.Info{}, dead("archive put")
	}
	info, err := w.a.Put(ctx, key, meta, &reader{c: w.c, r: r})
	var fired *Event
	if err == nil {
		w.c.label(key, meta.Mailbox, meta.UIDL, false)
		fired = w.c.record(Event{Point: AfterArchived, Mailbox: meta.Mailbox, UIDL: meta.UIDL, Key: key})
	}
	return info, w.c.finish(fired, "archive put", err)
}

func (w *crashArchive) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if w.c.Crashed() {
		return nil, dead("archive open")
	}
	rc, err := w.a.Open(ctx, key)
	if err != nil {
		return nil, w.c.finish(nil, "archive open", err)
	}
	if w.c.Crashed() {
		rc.Close()
		return nil, dead("archive open")
	}
	w.c.mu.Lock()
	w.c.opened = key
	w.c.mu.Unlock()
	return &readCloser{reader: reader{c: w.c, r: rc}, closer: rc}, nil
}

type crashStager struct {
	*crashArchive
	st archive.Stager
}

func (w *crashStager) Stage(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Staged, error) {
	if w.c.Crashed() {
		return nil, dead("archive stage")
	}
	st, err := w.st.Stage(ctx, key, meta, &reader{c: w.c, r: r})
	if err != nil {
		return nil, w.c.finish(nil, "archive stage", err)
	}
	if w.c.Crashed() {
		return nil, dead("archive stage") // staged bytes of a dead process stay behind
	}
	return &crashStaged{c: w.c, st: st, key: key, meta: meta}, nil
}

type crashStaged struct {
	c    *Crash
	st   archive.Staged
	key  string
	meta archive.Meta
}

func (s *crashStaged) Info() archive.Info { return s.st.Info() }

func (s *crashStaged) Commit(ctx context.Context) error {
	if s.c.Crashed() {
		return dead("archive commit")
	}
	err := s.st.Commit(ctx)
	var fired *Event
	if err == nil {
		s.c.label(s.key, s.meta.Mailbox, s.meta.UIDL, false)
		fired = s.c.record(Event{Point: AfterArchived, Mailbox: s.meta.Mailbox, UIDL: s.meta.UIDL, Key: s.key})
	}
	return s.c.finish(fired, "archive commit", err)
}

// Discard does nothing after the crash: a dead process leaves its
// temporary objects behind.
func (s *crashStaged) Discard() {
	if !s.c.Crashed() {
		s.st.Discard()
	}
}

// Source wraps d, the dialer of mailbox (the connector's Mailbox.ID,
// which names the source's events).
func (c *Crash) Source(mailbox string, d connector.SourceDialer) connector.SourceDialer {
	return func(ctx context.Context) (connector.Source, error) {
		if c.Crashed() {
			return nil, dead("pop3 dial")
		}
		s, err := d(ctx)
		if err != nil {
			return nil, c.finish(nil, "pop3 dial", err)
		}
		k, err := c.track(s.Close)
		if err != nil {
			return nil, err
		}
		return &crashSource{c: c, s: s, k: k, mailbox: mailbox, uids: map[int]string{}}, nil
	}
}

type crashSource struct {
	c       *Crash
	s       connector.Source
	k       *conn
	mailbox string

	mu   sync.Mutex
	uids map[int]string // from the last listing
}

func (w *crashSource) ListAll(ctx context.Context) ([]connector.ServerMessage, error) {
	if err := w.c.enter(w.k, "pop3 list"); err != nil {
		return nil, err
	}
	list, err := w.s.ListAll(ctx)
	w.mu.Lock()
	for _, m := range list {
		w.uids[m.Num] = m.UID
	}
	w.mu.Unlock()
	w.c.exit(w.k)
	if w.c.Crashed() {
		return nil, dead("pop3 list")
	}
	return list, err
}

func (w *crashSource) Retr(ctx context.Context, num int) (io.ReadCloser, error) {
	if err := w.c.enter(w.k, "pop3 retr"); err != nil {
		return nil, err
	}
	rc, err := w.s.Retr(ctx, num)
	w.c.exit(w.k)
	if w.c.Crashed() {
		return nil, dead("pop3 retr") // the crash closed the connection, and with it rc
	}
	if err != nil {
		return nil, err
	}
	return &readCloser{reader: reader{c: w.c, r: rc, k: w.k}, closer: rc}, nil
}

func (w *crashSource) Dele(ctx context.Context, nums ...int) error {
	if err := w.c.enter(w.k, "pop3 dele"); err != nil {
		return err
	}
	err := w.s.Dele(ctx, nums...)
	var fired *Event
	if err == nil {
		evs := make([]Event, len(nums))
		w.mu.Lock()
		for i, n := range nums {
			evs[i] = Event{Point: AfterDele, Mailbox: w.mailbox, UIDL: w.uids[n]}
		}
		w.mu.Unlock()
		fired = w.c.record(evs...)
	}
	w.c.exit(w.k) // a crash just fired closes the connection here: no QUIT, so the marks roll back
	return w.c.finish(fired, "pop3 dele", err)
}

func (w *crashSource) Quit(ctx context.Context) error {
	if err := w.c.enter(w.k, "pop3 quit"); err != nil {
		return err
	}
	err := w.s.Quit(ctx)
	var fired *Event
	if err == nil {
		fired = w.c.record(Event{Point: AfterQuit, Mailbox: w.mailbox})
	}
	w.c.exit(w.k)
	return w.c.finish(fired, "pop3 quit", err)
}

// Close drops the session, even after the crash.
func (w *crashSource) Close() error { return w.c.shut(w.k, "pop3 close") }

// Relay wraps d.
func (c *Crash) Relay(d connector.RelayDialer) connector.RelayDialer {
	return func(ctx context.Context) (connector.Relay, error) {
		if c.Crashed() {
			return nil, dead("smtp dial")
		}
		r, err := d(ctx)
		return c.wrapRelay(r, err)
	}
}

// Route wraps d.
func (c *Crash) Route(d connector.RouteDialer) connector.RouteDialer {
	return func(ctx context.Context, rt route.Route) (connector.Relay, error) {
		if c.Crashed() {
			return nil, dead("smtp dial")
		}
		r, err := d(ctx, rt)
		return c.wrapRelay(r, err)
	}
}

func (c *Crash) wrapRelay(r connector.Relay, err error) (connector.Relay, error) {
	if err != nil {
		return nil, c.finish(nil, "smtp dial", err)
	}
	k, err := c.track(r.Close)
	if err != nil {
		return nil, err
	}
	return &crashRelay{c: c, r: r, k: k}, nil
}

type crashRelay struct {
	c *Crash
	r connector.Relay
	k *conn
}

// Send relays through the wrapped connection. The final "." is held
// (Envelope.BeforeEnd) while the crash has fired: a dead process never
// sends it, so the server takes nothing. If the crash fires at this
// Send's reply, the outcomes are returned with the error: they are what
// the process had learnt when it died, and what it could not record.
func (w *crashRelay) Send(ctx context.Context, env relay.Envelope, body io.Reader) ([]relay.Outcome, error) {
	if err := w.c.enter(w.k, "smtp send"); err != nil {
		return nil, err
	}
	w.c.mu.Lock()
	key := w.c.opened
	w.c.opened = ""
	lb := w.c.labels[key]
	w.c.mu.Unlock()
	hold := env.BeforeEnd
	env.BeforeEnd = func() error {
		if w.c.Crashed() {
			return dead(`smtp final "."`)
		}
		if hold != nil {
			if err := hold(); err != nil {
				return err
			}
		}
		if w.c.Crashed() {
			return dead(`smtp final "."`)
		}
		return nil
	}
	outs, err := w.r.Send(ctx, env, &reader{c: w.c, r: body})
	var fired *Event
	if slices.ContainsFunc(outs, func(o relay.Outcome) bool { return o.Err == nil }) && len(env.To) > 0 {
		fired = w.c.record(Event{Point: AfterRelayReply, Mailbox: lb.mailbox, UIDL: lb.uidl, Key: key})
	}
	w.c.exit(w.k)
	return outs, w.c.finish(fired, "smtp send", err)
}

func (w *crashRelay) Quit() error {
	if err := w.c.enter(w.k, "smtp quit"); err != nil {
		return err
	}
	err := w.r.Quit()
	w.c.exit(w.k)
	return w.c.finish(nil, "smtp quit", err)
}

// Close drops the connection, even after the crash.
func (w *crashRelay) Close() error { return w.c.shut(w.k, "smtp close") }
