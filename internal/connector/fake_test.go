package connector_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/archive/archivetest"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/ledgertest"
)

// The pipeline against in-memory fakes of every interface: the same rules
// as the Dovecot and Postfix tests, in milliseconds. The real servers
// remain the end-to-end proof of each guarantee.

// fakeRig is one mailbox on fakes.
type fakeRig struct {
	t     *testing.T
	box   *connectortest.Mailbox
	smtp  *connectortest.Relay
	arc   *archivetest.Memory
	led   *ledgertest.Memory
	clock *fakeClock
	crash *connectortest.Crash
	mb    connector.Mailbox
	// inFlight is Settings.DeliveriesInFlight (0: one at a time), window
	// Settings.ReplyWindow (0: one).
	inFlight, window int
	evs              []connector.Event
}

func newFakeRig(t *testing.T, msgs ...connectortest.Message) *fakeRig {
	r := &fakeRig{t: t, box: connectortest.NewMailbox(msgs...), smtp: connectortest.NewRelay(), arc: archivetest.NewMemory(), clock: newClock()}
	r.led = ledgertest.NewMemory(ledgertest.WithClock(r.clock.Now))
	r.mb = connector.Mailbox{ID: "sales", Server: "pop.isp.example", DeliverTo: []string{"alice@corp.example", "bob@corp.example"},
		AfterDelivery: connector.DeleteAfterDelivery, PollTimeout: time.Minute}
	return r
}

func (r *fakeRig) poll() connector.Result { return r.pollWith(r.led) }

// pollWith polls with the ledger l (r.led, or a wrapper of it).
func (r *fakeRig) pollWith(l ledger.Ledger) connector.Result {
	r.t.Helper()
	mb := r.mb
	c := r.connector(l, &mb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Poll(ctx, mb)
}

// connector is the rig's connector over the ledger l, with mb's source
// wrapped by the crash when there is one.
func (r *fakeRig) connector(l ledger.Ledger, mb *connector.Mailbox) *connector.Connector {
	r.t.Helper()
	var (
		led  ledger.Ledger = l
		dial               = r.smtp.Dialer()
	)
	mb.Dial = r.box.Dial()
	c := &connector.Connector{Settings: connector.Settings{
		Postmaster: "postmaster@corp.example", Hostname: "popconn.test", RetryInterval: 10 * time.Minute, MaxRetryInterval: 2 * time.Hour,
		GiveUpAfter: 120 * time.Hour, DeliveryTimeout: 10 * time.Second, LeaseOwner: "fake/1", MaxTraceHops: 3,
		DeliveriesInFlight: r.inFlight, ReplyWindow: r.window},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: r.clock.Now,
		Events: func(ev connector.Event) { r.evs = append(r.evs, ev) }}
	c.Archive = r.arc
	if r.crash != nil {
		c.Archive, led, dial, mb.Dial = r.crash.Archive(r.arc), r.crash.Ledger(led), r.crash.Relay(dial), r.crash.Source(mb.ID, mb.Dial)
	}
	c.Ledger = led
	var err error
	if c.Routes, c.DialRoute, err = connectortest.SingleRoute("127.0.0.1:25", dial); err != nil {
		r.t.Fatal(err)
	}
	return c
}

func fakeMsg(i int) connectortest.Message {
	return connectortest.Message{UIDL: fmt.Sprintf("u%d", i),
		Data: []byte(fmt.Sprintf("From: a@isp.example\r\nSubject: %d\r\nMessage-ID: <m%d@isp.example>\r\n\r\nbody %d\r\n", i, i, i))}
}

// A poll archives, relays and deletes every message, in order, and its
// result is the sum of its events.
func TestFakePollDeliversAndDeletes(t *testing.T) {
	r := newFakeRig(t, fakeMsg(1), fakeMsg(2), fakeMsg(3))
	res := r.poll()
	if res.Err != nil || res.Fetched != 3 || res.Delivered != 3 || res.Deleted != 3 || r.box.Len() != 0 {
		t.Fatalf("result %+v, %d left on the server", res, r.box.Len())
	}
	got := r.smtp.Messages()
	for i, m := range got {
		if !bytes.Contains(m.Data, []byte(fmt.Sprintf("Message-ID: <m%d@isp.example>", i+1))) {
			t.Errorf("message %d relayed out of order", i+1)
		}
	}
	kinds := map[connector.EventKind]int{}
	for _, ev := range r.evs {
		kinds[ev.Kind]++
	}
	if kinds[connector.EventFetched] != 3 || kinds[connector.EventDelivered] != 3 || kinds[connector.EventDeleted] != 1 {
		t.Errorf("events %v", kinds)
	}
	if res := r.poll(); res.Fetched+res.Delivered+res.Deleted != 0 {
		t.Errorf("a second poll did something: %+v", res)
	}
}

// A 4xx for one recipient: the message stays; the retry goes to that
// recipient only, at the retry interval, and then the message is deleted.
func TestFakeRetryGoesOnlyToTheDeferred(t *testing.T) {
	r := newFakeRig(t, fakeMsg(1))
	r.smtp.SetRcpt("bob@corp.example", connectortest.Reply(451, "4.2.2", "mailbox busy"))
	if res := r.poll(); res.Deferred != 1 || res.Deleted != 0 || r.box.Len() != 1 {
		t.Fatalf("first poll %+v", res)
	}
	recs, _ := r.led.List(context.Background(), "sales")
	if f := recs[0].Recipients[1].Failure; f == nil || f.Code != 451 || !f.Temporary || f.Op != "rcpt" {
		t.Errorf("bob's failure %+v, want it stored as data", f)
	}
	if res := r.poll(); res.NotDue != 1 {
		t.Errorf("poll before the retry interval %+v, want not due", res)
	}
	r.smtp.SetRcpt("bob@corp.example", nil)
	r.clock.Advance(11 * time.Minute)
	if res := r.poll(); res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("retry %+v", res)
	}
	got := r.smtp.Messages()
	if len(got) != 2 || len(got[1].To) != 1 || got[1].To[0] != "bob@corp.example" {
		t.Errorf("transactions %+v, want the retry to bob only", got)
	}
}

// A crash at each point of the pipeline, then a fresh run: nothing lost,
// nothing deleted without a recorded delivery, a second copy only for a
// reply the crashed run could not record.
func TestFakeCrashAtEachPoint(t *testing.T) {
	for _, at := range []connectortest.Point{connectortest.AfterArchived, connectortest.AfterArchiveRecorded, connectortest.AfterRelayReply,
		connectortest.BeforeDeliveryRecorded, connectortest.AfterDeliveryRecorded, connectortest.AfterDele, connectortest.AfterQuit,
		connectortest.BeforeDeletionRecorded} {
		for _, nth := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d", at, nth), func(t *testing.T) {
				r := newFakeRig(t, fakeMsg(1), fakeMsg(2), fakeMsg(3))
				r.crash = connectortest.NewCrash(connectortest.Trigger{At: at, Nth: nth})
				crashed := r.poll()
				if !r.crash.Crashed() {
					t.Skipf("no %s #%d in this poll", at, nth)
				}
				r.crash, r.led = nil, r.led.Reopen()
				r.clock.Advance(3 * time.Minute) // past the dead poller's lease
				if res := r.poll(); res.Err != nil {
					t.Fatalf("run after the crash: %v", res.Err)
				}
				if n := r.box.Len(); n != 0 {
					t.Fatalf("%d left on the server", n)
				}
				copies := map[string]int{}
				for _, m := range r.smtp.Messages() {
					for i := 1; i <= 3; i++ {
						if bytes.Contains(m.Data, []byte(fmt.Sprintf("<m%d@isp.example>", i))) {
							copies[fmt.Sprint(i)]++
						}
					}
				}
				dups := 0
				for i := 1; i <= 3; i++ {
					n := copies[fmt.Sprint(i)]
					if n == 0 {
						t.Errorf("message %d lost", i)
					}
					dups += max(n-1, 0)
				}
				if dups > crashed.UnrecordedReplies || dups > 1 {
					t.Errorf("%d duplicates, the crashed run reported %d unrecorded replies (at most 1 allowed)", dups, crashed.UnrecordedReplies)
				}
			})
		}
	}
}

// A server that lists one size and sends another: the message is held,
// refetched on sessions of its own (the rest of the mailbox goes on and
// is deleted), and after four fetches of the same bytes set aside.
func TestFakeHeldThenSetAside(t *testing.T) {
	held := fakeMsg(1)
	held.ListSize = int64(len(held.Data)) + 5 // the server's count and what it sends disagree
	r := newFakeRig(t, held, fakeMsg(2))
	r.mb.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
	for i := 1; i <= 4; i++ {
		r.poll()
		r.clock.Advance(11 * time.Minute)
	}
	recs, _ := r.led.List(context.Background(), "sales")
	var rec *ledger.Record
	for _, x := range recs {
		if x.UIDL == "u1" {
			rec = x
		}
	}
	if rec == nil || rec.HeldFetches != 4 || rec.Disposition != ledger.DispositionBadmail {
		t.Fatalf("held record %+v", rec)
	}
	if st := r.box.Stats(); st.Retrs["u1"] != 4 {
		t.Errorf("u1 fetched %d times, want 4", st.Retrs["u1"])
	}
	r.poll()
	if n := r.box.Len(); n != 0 {
		t.Errorf("%d left on the server", n)
	}
	if len(r.smtp.Messages()) != 1 {
		t.Errorf("%d relayed, want only u2", len(r.smtp.Messages()))
	}
}

// A UIDL the server reuses never names the record it superseded again,
// even once the newer generations' records have retired: a third message
// listed under it with the first one's size is fetched as a message of
// its own, never taken for the first (which would relay the old archived
// copy and then delete the new message unread).
func TestFakeSupersededRecordNeverListedAgain(t *testing.T) {
	first := fakeMsg(1)
	r := newFakeRig(t, first)
	r.smtp.SetRcpt("alice@corp.example", connectortest.Reply(550, "5.1.1", "User unknown")) // left on the server, retried
	r.mb.DeliverTo = []string{"alice@corp.example"}
	r.poll()
	// The first message leaves the server; the server gives its UIDL to
	// another message.
	r.box.Remove("u1")
	second := connectortest.Message{UIDL: "u1", Data: append([]byte("X-Second: yes\r\n"), first.Data...)}
	r.box.Add(second)
	r.smtp.SetRcpt("alice@corp.example", nil)
	if res := r.poll(); res.Delivered < 1 {
		t.Fatalf("second message: %+v", res)
	}
	recs, _ := r.led.List(context.Background(), "sales")
	var old *ledger.Record
	for _, x := range recs {
		if x.UIDL == "u1" {
			old = x
		}
	}
	if old == nil || old.SupersededAt.IsZero() {
		t.Fatalf("the first record is not marked superseded: %+v", old)
	}
	// The newer generation retires; a third message comes under the UIDL
	// with the first one's size.
	third := connectortest.Message{UIDL: "u1", Data: []byte(strings.Replace(string(first.Data), "body 1", "body 3", 1))}
	r.box.Remove("u1")
	r.box.Add(third)
	r.led.Retire("sales", "u1 2")
	res := r.poll()
	if res.Err != nil || res.Fetched != 1 {
		t.Fatalf("third message: %+v, want it fetched as a message of its own", res)
	}
	found := false
	for _, m := range r.smtp.Messages() {
		found = found || bytes.Contains(m.Data, []byte("body 3"))
	}
	if !found {
		t.Error("the third message was not relayed")
	}
}

// Several deliveries in flight: every message delivered once and deleted;
// after a crash, the repeats are at most the declared reply window (here
// narrower than the deliveries in flight), each a reply the crashed run
// could not record.
func TestFakeDeliveriesInFlight(t *testing.T) {
	const n, inFlight, window = 20, 4, 2
	msgs := make([]connectortest.Message, n)
	for i := range msgs {
		msgs[i] = fakeMsg(i + 1)
	}
	t.Run("all delivered once", func(t *testing.T) {
		r := newFakeRig(t, msgs...)
		r.inFlight = inFlight
		res := r.poll()
		if res.Err != nil || res.Delivered != n || res.Deleted != n || r.box.Len() != 0 || len(r.smtp.Messages()) != n {
			t.Fatalf("result %+v, %d relayed, %d left", res, len(r.smtp.Messages()), r.box.Len())
		}
	})
	for _, at := range []connectortest.Point{connectortest.AfterRelayReply, connectortest.BeforeDeliveryRecorded, connectortest.AfterDeliveryRecorded} {
		for _, nth := range []int{3, 10} {
			t.Run(fmt.Sprintf("crash %s #%d", at, nth), func(t *testing.T) {
				r := newFakeRig(t, msgs...)
				r.inFlight, r.window = inFlight, window
				r.crash = connectortest.NewCrash(connectortest.Trigger{At: at, Nth: nth})
				crashed := r.poll()
				r.crash, r.led = nil, r.led.Reopen()
				r.clock.Advance(3 * time.Minute)
				if res := r.poll(); res.Err != nil || r.box.Len() != 0 {
					t.Fatalf("run after the crash: %+v, %d left", res, r.box.Len())
				}
				seen := map[string]int{}
				for _, m := range r.smtp.Messages() {
					for i := 1; i <= n; i++ {
						if bytes.Contains(m.Data, []byte(fmt.Sprintf("<m%d@isp.example>", i))) {
							seen[fmt.Sprint(i)]++
						}
					}
				}
				dups := 0
				for i := 1; i <= n; i++ {
					if seen[fmt.Sprint(i)] == 0 {
						t.Errorf("message %d lost", i)
					}
					dups += max(seen[fmt.Sprint(i)]-1, 0)
				}
				if dups > crashed.UnrecordedReplies || dups > window {
					t.Errorf("%d repeats; the crashed run reported %d unrecorded replies; the declared window is %d", dups, crashed.UnrecordedReplies, window)
				}
			})
		}
	}
}
