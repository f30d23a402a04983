package connectortest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/archive/archivetest"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/ledgertest"
	"github.com/popconnector/popconnector/internal/relay"
)

var t0 = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

const box = "sales"

// world is one process's view: the fakes, and the wrapped objects a
// pipeline uses.
type world struct {
	mb    *connectortest.Mailbox
	rl    *connectortest.Relay
	led   *ledgertest.Memory
	arc   *archivetest.Memory
	crash *connectortest.Crash

	l         ledger.Ledger
	a         archive.Archive
	dialSrc   connector.SourceDialer
	dialRelay connector.RelayDialer

	// What the pipeline holds when it stops.
	src   connector.Source
	rel   connector.Relay
	lease ledger.Lease
}

func newWorld(trig connectortest.Trigger) *world {
	w := &world{
		mb:  connectortest.NewMailbox(msg("u1", "Message-ID: <one@x>\r\n\r\none\r\n"), msg("u2", "Message-ID: <two@x>\r\n\r\ntwo\r\n")),
		rl:  connectortest.NewRelay(),
		led: ledgertest.NewMemory(ledgertest.WithClock(func() time.Time { return t0 })),
		arc: archivetest.NewMemory(),
	}
	w.crash = connectortest.NewCrash(trig)
	w.l = w.crash.Ledger(w.led)
	w.a = w.crash.Archive(w.arc)
	w.dialSrc = w.crash.Source(box, w.mb.Dial())
	w.dialRelay = w.crash.Relay(w.rl.Dialer())
	return w
}

// pipeline is the connector's order of steps, by hand: lease, list, per
// message archive (staged), record, relay, record the 250; then DELE,
// QUIT, record the deletions. It returns the step that failed.
func (w *world) pipeline(ctx context.Context) (string, error) {
	var err error
	if w.lease, err = w.l.Lease(ctx, box, "poller-1", time.Hour); err != nil {
		return "lease", err
	}
	if w.src, err = w.dialSrc(ctx); err != nil {
		return "pop3 dial", err
	}
	list, err := w.src.ListAll(ctx)
	if err != nil {
		return "list", err
	}
	var recs []*ledger.Record
	for _, m := range list {
		rc, err := w.src.Retr(ctx, m.Num)
		if err != nil {
			return "retr " + m.UID, err
		}
		key := archive.KeyFor(box, m.UID, t0)
		st, err := w.a.(archive.Stager).Stage(ctx, key, archive.Meta{Mailbox: box, UIDL: m.UID}, rc)
		rc.Close()
		if err != nil {
			return "stage " + m.UID, err
		}
		if err := st.Commit(ctx); err != nil {
			return "commit " + m.UID, err
		}
		id := m.UID + "@x"
		rec := &ledger.Record{Mailbox: box, UIDL: m.UID, FirstSeen: t0, ArchiveKey: key, SHA256: st.Info().SHA256, ArchivedAt: t0,
			MessageID: id, Recipients: []ledger.Recipient{{Address: "a@x.example", Status: ledger.Pending}}}
		if err := w.l.Put(ctx, rec); err != nil {
			return "record archive " + m.UID, err
		}
		if w.rel == nil {
			if w.rel, err = w.dialRelay(ctx); err != nil {
				return "smtp dial", err
			}
		}
		body, err := w.a.Open(ctx, key)
		if err != nil {
			return "open " + m.UID, err
		}
		outs, err := w.rel.Send(ctx, relay.Envelope{From: "s@y.example", To: []string{"a@x.example"}}, body)
		body.Close()
		if err != nil {
			return "send " + m.UID, err
		}
		if outs[0].Err != nil {
			return "send " + m.UID, outs[0].Err
		}
		rec.Recipients[0] = ledger.Recipient{Address: "a@x.example", Status: ledger.Accepted, Code: 250, Reply: outs[0].Reply, At: t0}
		if err := w.l.PutAccepted(ctx, rec, []ledger.Acceptance{{MessageID: id, Recipient: "a@x.example", At: t0, Expires: t0.Add(time.Hour)}}); err != nil {
			return "record delivery " + m.UID, err
		}
		recs = append(recs, rec)
	}
	if err := w.src.Dele(ctx, 1, 2); err != nil {
		return "dele", err
	}
	if err := w.src.Quit(ctx); err != nil {
		return "quit", err
	}
	for _, r := range recs {
		r.DeletedAt = t0
	}
	if err := w.l.Put(ctx, recs...); err != nil {
		return "record deletion", err
	}
	if err := w.rel.Quit(); err != nil {
		return "smtp quit", err
	}
	if err := w.lease.Release(ctx); err != nil {
		return "release", err
	}
	return "", nil
}

// state is what survives the process: the server, the relay, the archive
// and the ledger.
type state struct {
	onServer  []string
	relayed   int
	archived  int
	archRec   []string // UIDLs recorded as archived
	delivered []string // UIDLs recorded as delivered
	deleted   []string // UIDLs recorded as deleted
	index     int      // duplicate-index entries
}

func (w *world) state(t *testing.T) state {
	t.Helper()
	l := w.led.Reopen() // the unwrapped store, as the next process sees it
	defer l.Close()
	recs, err := l.List(bg, box)
	if err != nil {
		t.Fatal(err)
	}
	s := state{onServer: w.mb.UIDLs(), relayed: len(w.rl.Messages()), archived: len(w.arc.Keys())}
	for _, r := range recs {
		if r.Archived() {
			s.archRec = append(s.archRec, r.UIDL)
		}
		if r.Delivered() {
			s.delivered = append(s.delivered, r.UIDL)
		}
		if r.Deleted() {
			s.deleted = append(s.deleted, r.UIDL)
		}
	}
	for _, id := range []string{"u1@x", "u2@x"} {
		m, err := l.Accepted(bg, id, []string{"a@x.example"})
		if err != nil {
			t.Fatal(err)
		}
		s.index += len(m)
	}
	return s
}

// A crash after each step: the step that fired it happened, its caller
// got ErrCrash (a ledger write its own result, the next call ErrCrash),
// the sockets are closed, and nothing after it happens. A crash before a
// record leaves the record unwritten.
func TestCrashAfterEachPoint(t *testing.T) {
	both := []string{"u1", "u2"}
	tests := []struct {
		trig     connectortest.Trigger
		failedAt string
		want     state
	}{
		{connectortest.Trigger{At: connectortest.AfterArchived, UIDL: "u2"}, "commit u2",
			state{onServer: both, relayed: 1, archived: 2, archRec: []string{"u1"}, delivered: []string{"u1"}, index: 1}},
		{connectortest.Trigger{At: connectortest.AfterArchiveRecorded, Nth: 2}, "open u2",
			state{onServer: both, relayed: 1, archived: 2, archRec: both, delivered: []string{"u1"}, index: 1}},
		{connectortest.Trigger{At: connectortest.AfterRelayReply, UIDL: "u1"}, "send u1",
			state{onServer: both, relayed: 1, archived: 1, archRec: []string{"u1"}}},
		{connectortest.Trigger{At: connectortest.AfterDeliveryRecorded, Mailbox: box, UIDL: "u2"}, "dele",
			state{onServer: both, relayed: 2, archived: 2, archRec: both, delivered: both, index: 2}},
		// The 250 of u2 came, but the process died before recording it.
		{connectortest.Trigger{At: connectortest.BeforeDeliveryRecorded, Mailbox: box, UIDL: "u2"}, "record delivery u2",
			state{onServer: both, relayed: 2, archived: 2, archRec: both, delivered: []string{"u1"}, index: 1}},
		// DELE answered, then the process died: no QUIT, so no deletion.
		{connectortest.Trigger{At: connectortest.AfterDele}, "dele",
			state{onServer: both, relayed: 2, archived: 2, archRec: both, delivered: both, index: 2}},
		// QUIT answered +OK: deleted on the server, not yet recorded.
		{connectortest.Trigger{At: connectortest.AfterQuit}, "quit",
			state{relayed: 2, archived: 2, archRec: both, delivered: both, index: 2}},
		{connectortest.Trigger{}, "",
			state{relayed: 2, archived: 2, archRec: both, delivered: both, deleted: both, index: 2}},
	}
	for _, tt := range tests {
		name := string(tt.trig.At)
		if name == "" {
			name = "no crash"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(tt.trig)
			failedAt, err := w.pipeline(bg)
			if failedAt != tt.failedAt {
				t.Fatalf("pipeline stopped at %q (%v), want %q", failedAt, err, tt.failedAt)
			}
			if tt.trig.At == "" {
				if err != nil || w.crash.Crashed() {
					t.Fatalf("pipeline without a crash: %v, crashed %v", err, w.crash.Crashed())
				}
			} else {
				ev, ok := w.crash.Fired()
				if !errors.Is(err, connectortest.ErrCrash) || !w.crash.Crashed() || !ok || ev.Point != tt.trig.At {
					t.Fatalf("stopped with %v; fired %v at %+v; want ErrCrash at %s", err, ok, ev, tt.trig.At)
				}
			}
			got := w.state(t)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("after the crash:\n got %+v\nwant %+v", got, tt.want)
			}
			if st := w.mb.Stats(); st.Open != 0 {
				t.Errorf("%d POP3 sessions left open by the crash", st.Open)
			}
			if st := w.rl.Stats(); st.Open != 0 {
				t.Errorf("%d SMTP connections left open by the crash", st.Open)
			}
			if tt.trig.At == "" {
				return
			}
			// The dead process can do nothing more.
			for name, err := range w.probe() {
				if !errors.Is(err, connectortest.ErrCrash) {
					t.Errorf("%s after the crash = %v, want ErrCrash", name, err)
				}
			}
			if again := w.state(t); fmt.Sprint(again) != fmt.Sprint(tt.want) {
				t.Fatalf("calls after the crash changed the state:\n got %+v\nwant %+v", again, tt.want)
			}
			// The lease was neither released nor renewed: it holds until it expires.
			other := w.led.Reopen()
			defer other.Close()
			if _, err := other.Lease(bg, box, "poller-2", time.Minute); !errors.Is(err, ledger.ErrLeaseHeld) {
				t.Errorf("lease after the crash = %v, want still held", err)
			}
		})
	}
}

// probe tries every kind of call on the wrapped objects.
func (w *world) probe() map[string]error {
	rec := &ledger.Record{Mailbox: box, UIDL: "u9", FirstSeen: t0, ArchiveKey: "k", SHA256: "s",
		Recipients: []ledger.Recipient{{Address: "a@x.example", Status: ledger.Accepted}}}
	key := archive.KeyFor(box, "u1", t0)
	errs := map[string]error{}
	_, errs["ledger get"] = w.l.Get(bg, box, []string{"u1"})
	_, errs["ledger list"] = w.l.List(bg, box)
	errs["ledger put"] = w.l.Put(bg, rec)
	errs["ledger put accepted"] = w.l.PutAccepted(bg, rec, nil)
	_, errs["ledger accepted"] = w.l.Accepted(bg, "u1@x", []string{"a@x.example"})
	_, errs["ledger claim"] = w.l.Claim(bg, ledger.Claim{MessageID: "u9@x", Fingerprint: "f", Mailbox: box, UIDL: "u9", At: t0, Expires: t0.Add(time.Minute)}, nil)
	_, errs["lease"] = w.l.Lease(bg, box, "poller-1", time.Minute)
	if w.lease != nil {
		errs["lease renew"] = w.lease.Renew(bg)
		errs["lease release"] = w.lease.Release(bg)
	}
	_, errs["archive put"] = w.a.Put(bg, "other", archive.Meta{}, strings.NewReader("x"))
	_, errs["archive stage"] = w.a.(archive.Stager).Stage(bg, "other", archive.Meta{}, strings.NewReader("x"))
	_, errs["archive open"] = w.a.Open(bg, key)
	_, errs["pop3 dial"] = w.dialSrc(bg)
	_, errs["smtp dial"] = w.dialRelay(bg)
	if w.src != nil {
		_, errs["pop3 list"] = w.src.ListAll(bg)
		_, errs["pop3 retr"] = w.src.Retr(bg, 1)
		errs["pop3 dele"] = w.src.Dele(bg, 1, 2)
		errs["pop3 quit"] = w.src.Quit(bg)
		errs["pop3 close"] = w.src.Close()
	}
	if w.rel != nil {
		_, errs["smtp send"] = w.rel.Send(bg, relay.Envelope{To: []string{"a@x.example"}}, strings.NewReader("x"))
		errs["smtp quit"] = w.rel.Quit()
		errs["smtp close"] = w.rel.Close()
	}
	return errs
}

// Events name each step, in order, with the message it concerns; the
// relay's reply is named by the archived copy the Send read.
func TestCrashEvents(t *testing.T) {
	w := newWorld(connectortest.Trigger{})
	if at, err := w.pipeline(bg); err != nil {
		t.Fatalf("%s: %v", at, err)
	}
	k1, k2 := archive.KeyFor(box, "u1", t0), archive.KeyFor(box, "u2", t0)
	want := []connectortest.Event{
		{Point: connectortest.AfterArchived, Mailbox: box, UIDL: "u1", Key: k1},
		{Point: connectortest.AfterArchiveRecorded, Mailbox: box, UIDL: "u1", Key: k1},
		{Point: connectortest.AfterRelayReply, Mailbox: box, UIDL: "u1", Key: k1},
		{Point: connectortest.BeforeDeliveryRecorded, Mailbox: box, UIDL: "u1", Key: k1},
		{Point: connectortest.AfterDeliveryRecorded, Mailbox: box, UIDL: "u1", Key: k1},
		{Point: connectortest.AfterArchived, Mailbox: box, UIDL: "u2", Key: k2},
		{Point: connectortest.AfterArchiveRecorded, Mailbox: box, UIDL: "u2", Key: k2},
		{Point: connectortest.AfterRelayReply, Mailbox: box, UIDL: "u2", Key: k2},
		{Point: connectortest.BeforeDeliveryRecorded, Mailbox: box, UIDL: "u2", Key: k2},
		{Point: connectortest.AfterDeliveryRecorded, Mailbox: box, UIDL: "u2", Key: k2},
		{Point: connectortest.AfterDele, Mailbox: box, UIDL: "u1"},
		{Point: connectortest.AfterDele, Mailbox: box, UIDL: "u2"},
		{Point: connectortest.AfterQuit, Mailbox: box},
		{Point: connectortest.BeforeDeletionRecorded, Mailbox: box, UIDL: "u1", Key: k1},
		{Point: connectortest.BeforeDeletionRecorded, Mailbox: box, UIDL: "u2", Key: k2},
	}
	if got := w.crash.Events(); !slices.Equal(got, want) {
		t.Fatalf("events:\n%v\nwant\n%v", got, want)
	}
}

// Which event fires: the point, the mailbox, the UIDL, the Nth, Match.
func TestCrashTriggers(t *testing.T) {
	k2 := archive.KeyFor(box, "u2", t0)
	tests := []struct {
		name  string
		trig  connectortest.Trigger
		fired connectortest.Event // zero: none
	}{
		{"first of a point", connectortest.Trigger{At: connectortest.AfterRelayReply},
			connectortest.Event{Point: connectortest.AfterRelayReply, Mailbox: box, UIDL: "u1", Key: archive.KeyFor(box, "u1", t0)}},
		{"nth", connectortest.Trigger{At: connectortest.AfterArchived, Nth: 2},
			connectortest.Event{Point: connectortest.AfterArchived, Mailbox: box, UIDL: "u2", Key: k2}},
		{"uidl", connectortest.Trigger{At: connectortest.AfterDele, UIDL: "u2"},
			connectortest.Event{Point: connectortest.AfterDele, Mailbox: box, UIDL: "u2"}},
		{"match", connectortest.Trigger{At: connectortest.AfterArchiveRecorded, Match: func(e connectortest.Event) bool { return e.Key == k2 }},
			connectortest.Event{Point: connectortest.AfterArchiveRecorded, Mailbox: box, UIDL: "u2", Key: k2}},
		{"other mailbox", connectortest.Trigger{At: connectortest.AfterQuit, Mailbox: "other"}, connectortest.Event{}},
		{"nth beyond", connectortest.Trigger{At: connectortest.AfterQuit, Nth: 2}, connectortest.Event{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(tt.trig)
			_, err := w.pipeline(bg)
			ev, ok := w.crash.Fired()
			if ok != (tt.fired != connectortest.Event{}) || ev != tt.fired || errors.Is(err, connectortest.ErrCrash) != ok {
				t.Fatalf("fired %v at %+v (pipeline: %v), want %+v", ok, ev, err, tt.fired)
			}
		})
	}
}

// A crash while a stream is in flight leaves it unfinished: an archive
// Put stores nothing, a RETR reader fails, and a final "." not yet sent is
// never sent.
func TestCrashCutsStreams(t *testing.T) {
	t.Run("archive put", func(t *testing.T) {
		w := newWorld(connectortest.Trigger{})
		body := &killAfter{r: strings.NewReader(strings.Repeat("x", 100)), n: 10, kill: w.crash.Kill}
		_, err := w.a.Put(bg, "k", archive.Meta{}, body)
		if !errors.Is(err, connectortest.ErrCrash) || len(w.arc.Keys()) != 0 {
			t.Fatalf("Put = %v, stored %v; want ErrCrash and nothing stored", err, w.arc.Keys())
		}
		if ev, _ := w.crash.Fired(); ev.Point != connectortest.Killed {
			t.Fatalf("fired at %+v, want Killed", ev)
		}
	})
	t.Run("retr", func(t *testing.T) {
		w := newWorld(connectortest.Trigger{})
		src, err := w.dialSrc(bg)
		mustNil(t, err)
		rc, err := src.Retr(bg, 1)
		mustNil(t, err)
		buf := make([]byte, 4)
		if _, err := rc.Read(buf); err != nil {
			t.Fatal(err)
		}
		w.crash.Kill()
		if _, err := rc.Read(buf); !errors.Is(err, connectortest.ErrCrash) {
			t.Fatalf("Read after the crash = %v", err)
		}
		if st := w.mb.Stats(); st.Open != 0 {
			t.Fatalf("%d sessions open after the crash", st.Open)
		}
		if err := rc.Close(); !errors.Is(err, connectortest.ErrCrash) {
			t.Fatalf("Close after the crash = %v", err)
		}
	})
	t.Run("final dot", func(t *testing.T) {
		w := newWorld(connectortest.Trigger{})
		rel, err := w.dialRelay(bg)
		mustNil(t, err)
		// The process dies while the final "." waits for an earlier write.
		env := relay.Envelope{To: []string{"a@x.example"}, BeforeEnd: func() error { w.crash.Kill(); return nil }}
		outs, err := rel.Send(bg, env, strings.NewReader("body"))
		if !errors.Is(err, connectortest.ErrCrash) || outs[0].Err == nil || len(w.rl.Messages()) != 0 {
			t.Fatalf("Send = %+v, %v; relay kept %d; want ErrCrash, a failed outcome and nothing kept", outs, err, len(w.rl.Messages()))
		}
		if st := w.rl.Stats(); st.Open != 0 {
			t.Fatalf("%d connections open after the crash", st.Open)
		}
	})
	t.Run("body", func(t *testing.T) {
		w := newWorld(connectortest.Trigger{})
		rel, err := w.dialRelay(bg)
		mustNil(t, err)
		body := &killAfter{r: strings.NewReader("some body"), n: 4, kill: w.crash.Kill}
		_, err = rel.Send(bg, relay.Envelope{To: []string{"a@x.example"}}, body)
		if !errors.Is(err, connectortest.ErrCrash) || len(w.rl.Messages()) != 0 {
			t.Fatalf("Send = %v, relay kept %d; want ErrCrash and nothing kept", err, len(w.rl.Messages()))
		}
	})
}

// At AfterRelayReply the outcomes come back with the error: the reply the
// process got and could not record.
func TestCrashRelayReplyKeepsOutcomes(t *testing.T) {
	w := newWorld(connectortest.Trigger{At: connectortest.AfterRelayReply})
	rel, err := w.dialRelay(bg)
	mustNil(t, err)
	w.rl.SetRcpt("b@x.example", connectortest.Reply(550, "5.1.1", "unknown"))
	outs, err := rel.Send(bg, relay.Envelope{To: []string{"a@x.example", "b@x.example"}}, strings.NewReader("m"))
	if !errors.Is(err, connectortest.ErrCrash) || len(outs) != 2 || outs[0].Err != nil || outs[1].Err == nil || outs[1].Err.Code != 550 {
		t.Fatalf("Send = %+v, %v; want a's acceptance and b's 550 with ErrCrash", outs, err)
	}
	if ev, _ := w.crash.Fired(); ev.Mailbox != "" || ev.UIDL != "" {
		t.Fatalf("a Send that opened no archived copy is named %+v", ev)
	}
}

// A ledger write that only marks deletions, or re-records the same
// outcome, is no new step.
func TestCrashLedgerEventsAreNew(t *testing.T) {
	w := newWorld(connectortest.Trigger{At: connectortest.AfterDeliveryRecorded, Nth: 2})
	rec := &ledger.Record{Mailbox: box, UIDL: "u1", FirstSeen: t0, ArchiveKey: "k", SHA256: "s", ArchivedAt: t0,
		Recipients: []ledger.Recipient{{Address: "a@x.example", Status: ledger.Accepted, At: t0}, {Address: "b@x.example", Status: ledger.Deferred, At: t0}}}
	steps := []struct {
		name  string
		edit  func()
		fired bool
	}{
		{"first write: archived and accepted", func() {}, false},
		{"deletion mark", func() { rec.DeletedAt = t0 }, false},
		{"b deferred again", func() { rec.Recipients[1].At = t0.Add(time.Minute) }, false},
		{"b accepted", func() { rec.Recipients[1].Status = ledger.Accepted }, true},
	}
	for _, s := range steps {
		s.edit()
		// The write that fires the crash returns its own result: it is
		// durable; the process is dead for its next call.
		if err := w.l.Put(bg, rec); err != nil || w.crash.Crashed() != s.fired {
			t.Fatalf("%s: Put = %v, crashed %v; want no error, crashed %v", s.name, err, w.crash.Crashed(), s.fired)
		}
	}
	if _, err := w.l.List(bg, box); !errors.Is(err, connectortest.ErrCrash) {
		t.Fatalf("a read after the crash = %v, want ErrCrash", err)
	}
	var points []connectortest.Point
	for _, ev := range w.crash.Events() {
		points = append(points, ev.Point)
	}
	want := []connectortest.Point{connectortest.BeforeDeliveryRecorded, connectortest.AfterArchiveRecorded, connectortest.AfterDeliveryRecorded,
		connectortest.BeforeDeletionRecorded, connectortest.BeforeDeliveryRecorded, connectortest.AfterDeliveryRecorded}
	if !slices.Equal(points, want) {
		t.Fatalf("events %v, want %v", points, want)
	}
}

// The Archive wrapper stages exactly when the wrapped archive does, and
// Close still closes the wrapped ledger after the crash.
func TestCrashWrappers(t *testing.T) {
	c := connectortest.NewCrash(connectortest.Trigger{})
	if _, ok := c.Archive(archivetest.NewMemory()).(archive.Stager); !ok {
		t.Error("wrapping a Stager lost Stage")
	}
	if _, ok := c.Archive(putOnly{archivetest.NewMemory()}).(archive.Stager); ok {
		t.Error("wrapping a plain Archive gained Stage")
	}
	led := ledgertest.NewMemory()
	l := c.Ledger(led)
	c.Kill()
	if err := l.Close(); !errors.Is(err, connectortest.ErrCrash) {
		t.Fatalf("Close after the crash = %v", err)
	}
	if _, err := led.Get(bg, box, nil); !errors.Is(err, ledgertest.ErrClosed) {
		t.Fatalf("the wrapped ledger after Close = %v, want closed", err)
	}
}

type putOnly struct{ a archive.Archive }

func (p putOnly) Put(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Info, error) {
	return p.a.Put(ctx, key, meta, r)
}
func (p putOnly) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return p.a.Open(ctx, key)
}

// killAfter kills the process once n bytes were read.
type killAfter struct {
	r    io.Reader
	n    int
	kill func()
}

func (k *killAfter) Read(p []byte) (int, error) {
	if k.n <= 0 {
		k.kill()
	}
	p = p[:min(len(p), max(k.n, 1))]
	n, err := k.r.Read(p)
	k.n -= n
	return n, err
}
