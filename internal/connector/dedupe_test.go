package connector_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/popconnector/popconnector/internal/tlsmode"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/recipients"
	"github.com/popconnector/popconnector/internal/testenv"
)

const week = 7 * 24 * time.Hour

// boxFor is a mailbox of the rig's Dovecot user with duplicate suppression
// on (the default window, 7 days).
func boxFor(r *rig, user string, deliverTo ...string) connector.Mailbox {
	mb := r.mailbox
	mb.ID = user
	mb.DeliverTo = deliverTo
	mb.DuplicateWindow = week
	mb.Dial = app.DialPOP3(pop3.Options{
		Addr: r.dovecot.TLSAddr, TLS: tlsmode.Implicit,
		TLSConfig: &tls.Config{RootCAs: r.dovecot.CA.Pool}, Timeout: 10 * time.Second,
	}, user, func(context.Context) (string, error) { return popPassword, nil })
	return mb
}

func pollBox(t *testing.T, r *rig, mb connector.Mailbox) connector.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := r.connector().Poll(ctx, mb)
	if res.Err != nil {
		t.Fatalf("poll %s: %v", mb.ID, res.Err)
	}
	return res
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copiesPerRecipient counts the relayed messages each recipient got.
func copiesPerRecipient(got []testenv.Received) map[string]int {
	n := map[string]int{}
	for _, m := range got {
		for _, to := range m.To {
			n[to]++
		}
	}
	return n
}

func recordsOf(t *testing.T, r *rig, mailbox string) []*ledger.Record {
	t.Helper()
	recs, err := r.led.List(context.Background(), mailbox)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func recipientOf(t *testing.T, rec *ledger.Record, addr string) ledger.Recipient {
	t.Helper()
	for _, rc := range rec.Recipients {
		if rc.Address == addr {
			return rc
		}
	}
	t.Fatalf("record %s/%s has no recipient %s: %+v", rec.Mailbox, rec.UIDL, addr, rec.Recipients)
	return ledger.Recipient{}
}

// Two mailboxes carry the same message for the same person: it is relayed
// once; the second copy is recorded as a suppressed duplicate naming the
// first, counts as settled (deleted from the server like a delivered one)
// and stays in the archive.
func TestDuplicateAcrossMailboxesDeliveredOnce(t *testing.T) {
	r := newRig(t, rigOptions{users: []string{"support"}})
	order := fixture(t, "order.eml")
	r.dovecot.Deliver(t, "sales", order)
	r.dovecot.Deliver(t, "support", order)
	sales := boxFor(r, "sales", "alice@corp.example")
	support := boxFor(r, "support", "alice@CORP.Example") // the domain spelled otherwise

	if res := pollBox(t, r, sales); res.Delivered != 1 || res.Suppressed != 0 {
		t.Fatalf("first copy: %+v", res)
	}
	res := pollBox(t, r, support)
	if res.Delivered != 0 || res.Suppressed != 1 || res.Deleted != 1 {
		t.Fatalf("second copy: %+v, want suppressed and deleted", res)
	}
	got := r.sink.Messages(t)
	if len(got) != 1 {
		t.Fatalf("%d messages relayed, want 1: %+v", len(got), copiesPerRecipient(got))
	}
	first := recordsOf(t, r, "sales")[0]
	rec := recordsOf(t, r, "support")[0]
	rc := recipientOf(t, rec, "alice@CORP.Example")
	if rc.Status != ledger.Suppressed || !strings.Contains(rc.Reply, "mailbox sales, UIDL "+first.UIDL) {
		t.Errorf("second copy's outcome %+v, want suppressed naming sales/%s", rc, first.UIDL)
	}
	if !rec.Delivered() || !rec.Settled() || !rec.Deleted() {
		t.Errorf("second copy's record is not settled and deleted: %+v", rec)
	}
	if n := r.dovecot.Count(t, "sales") + r.dovecot.Count(t, "support"); n != 0 {
		t.Errorf("%d messages left on the servers, want both copies deleted", n)
	}
	if digest(r.archived(rec.ArchiveKey)) != digest(order) {
		t.Error("the suppressed copy is not in the archive as fetched")
	}
	if s := connector.Summarize("support", recordsOf(t, r, "support")); s.Suppressed != 1 || s.Delivered != 1 {
		t.Errorf("status %+v, want 1 suppressed (and counted delivered)", s)
	}
	if !strings.Contains(r.logs.String(), "duplicate copy suppressed") {
		t.Error("suppression not logged")
	}
}

// A copy with some new recipients is relayed to those only: A,B first,
// then B,C delivers only C.
func TestDuplicateSplitRecipients(t *testing.T) {
	r := newRig(t, rigOptions{users: []string{"support"}})
	nl := fixture(t, "newsletter.eml")
	r.dovecot.Deliver(t, "sales", nl)
	r.dovecot.Deliver(t, "support", nl)
	pollBox(t, r, boxFor(r, "sales", "a@corp.example", "b@corp.example"))
	res := pollBox(t, r, boxFor(r, "support", "b@corp.example", "c@corp.example"))
	if res.Delivered != 1 || res.Suppressed != 1 || res.Deleted != 1 {
		t.Fatalf("second copy: %+v, want delivered to C with B suppressed", res)
	}
	got := r.sink.Messages(t)
	if len(got) != 2 || !slices.Equal(got[1].To, []string{"c@corp.example"}) {
		t.Fatalf("transactions %+v, want the second to RCPT c@corp.example only", got)
	}
	if n := copiesPerRecipient(got); n["a@corp.example"] != 1 || n["b@corp.example"] != 1 || n["c@corp.example"] != 1 {
		t.Errorf("copies per recipient %v, want one each", n)
	}
	rec := recordsOf(t, r, "support")[0]
	if b, c := recipientOf(t, rec, "b@corp.example"), recipientOf(t, rec, "c@corp.example"); b.Status != ledger.Suppressed || c.Status != ledger.Accepted {
		t.Errorf("outcomes b=%s c=%s, want suppressed and accepted", b.Status, c.Status)
	}
	// C's acceptance is indexed in turn.
	if m, err := r.led.Accepted(context.Background(), rec.MessageID, []string{"c@corp.example"}); err != nil || m["c@corp.example"].Mailbox != "support" {
		t.Errorf("index for c: %+v %v", m, err)
	}
}

// A global mailbox holding two copies of one list message (the person is
// on two lists that carried it) relays it once, in one poll.
func TestDuplicateCopiesInGlobalMailbox(t *testing.T) {
	r := newRig(t, rigOptions{})
	res, err := recipients.NewResolver(recipients.GlobalOptions{LocalDomains: []string{"corp.example"}, Fallback: postmaster})
	if err != nil {
		t.Fatal(err)
	}
	mb := boxFor(r, "sales")
	mb.Global = res
	for _, list := range []string{"a.lists.example", "b.lists.example"} {
		r.dovecot.Deliver(t, "sales", []byte("X-Original-To: alice@corp.example\r\nList-Id: <"+list+">\r\n"+
			"From: author@elsewhere.example\r\nTo: "+list+"\r\nMessage-ID: <thread-42@elsewhere.example>\r\nSubject: cross-posted\r\n\r\nbody\r\n"))
	}
	out := pollBox(t, r, mb)
	if out.Delivered != 1 || out.Suppressed != 1 || out.Deleted != 2 {
		t.Fatalf("result %+v, want one delivered, one suppressed, both deleted", out)
	}
	if n := copiesPerRecipient(r.sink.Messages(t)); n["alice@corp.example"] != 1 || len(n) != 1 {
		t.Errorf("copies per recipient %v, want alice once", n)
	}
}

// A message without a Message-ID is never suppressed: both copies go.
func TestDuplicateWithoutMessageIDDeliveredTwice(t *testing.T) {
	r := newRig(t, rigOptions{users: []string{"support"}})
	raw := fixture(t, "no-message-id.eml")
	r.dovecot.Deliver(t, "sales", raw)
	r.dovecot.Deliver(t, "support", raw)
	a := pollBox(t, r, boxFor(r, "sales", "alice@corp.example"))
	b := pollBox(t, r, boxFor(r, "support", "alice@corp.example"))
	if a.Suppressed+b.Suppressed != 0 || a.Delivered != 1 || b.Delivered != 1 {
		t.Fatalf("results %+v / %+v, want both delivered", a, b)
	}
	if n := copiesPerRecipient(r.sink.Messages(t)); n["alice@corp.example"] != 2 {
		t.Errorf("alice got %d copies, want 2", n["alice@corp.example"])
	}
}

// A copy seen after the window (the reading mailbox's, or the shorter
// one's) is delivered again; within it, it is not.
func TestDuplicateWindow(t *testing.T) {
	for _, tc := range []struct {
		name          string
		advance       time.Duration
		supportWindow time.Duration
		wantCopies    int
	}{
		{"within the window", 6 * 24 * time.Hour, week, 1},
		{"after the window", week + time.Hour, week, 2},
		{"after the second mailbox's shorter window", 2 * time.Hour, time.Hour, 2},
		{"suppression off for the second mailbox", 0, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOptions{users: []string{"support"}})
			order := fixture(t, "order.eml")
			r.dovecot.Deliver(t, "sales", order)
			r.dovecot.Deliver(t, "support", order)
			pollBox(t, r, boxFor(r, "sales", "alice@corp.example"))
			r.clock.Advance(tc.advance)
			support := boxFor(r, "support", "alice@corp.example")
			support.DuplicateWindow = tc.supportWindow
			res := pollBox(t, r, support)
			if n := copiesPerRecipient(r.sink.Messages(t))["alice@corp.example"]; n != tc.wantCopies {
				t.Errorf("alice got %d copies, want %d (result %+v)", n, tc.wantCopies, res)
			}
			if res.Deleted != 1 {
				t.Errorf("second copy not deleted: %+v", res)
			}
		})
	}
}

// bobDeferredOnce is a rig whose scripted server answers bob's first RCPT
// with 451, and its mailbox holding order.eml for alice and bob.
func bobDeferredOnce(t *testing.T) (*rig, connector.Mailbox) {
	var refused atomic.Int32
	r := newRig(t, rigOptions{script: &testenv.SMTPScript{OnRcpt: func(to string) error {
		if to == "bob@corp.example" && refused.Add(1) == 1 {
			return smtpErr(451, [3]int{4, 2, 2}, "mailbox busy, try later")
		}
		return nil
	}}})
	r.seed("order.eml")
	return r, boxFor(r, "sales", "alice@corp.example", "bob@corp.example")
}

// A retry of the same record after a 4xx goes to the deferred recipient:
// the record's own acceptance of the other recipient suppresses nothing.
func TestDuplicateRetryOfOwnRecordNotSuppressed(t *testing.T) {
	r, mb := bobDeferredOnce(t)
	if res := pollBox(t, r, mb); res.Deferred != 1 || res.Suppressed != 0 {
		t.Fatalf("first attempt: %+v, want deferred for bob", res)
	}
	r.clock.Advance(11 * time.Minute)
	res := pollBox(t, r, mb)
	if res.Delivered != 1 || res.Suppressed != 0 || res.Deleted != 1 {
		t.Fatalf("retry: %+v, want delivered to bob, nothing suppressed", res)
	}
	got := r.script.Messages()
	if len(got) != 2 || !slices.Equal(got[0].To, []string{"alice@corp.example"}) || !slices.Equal(got[1].To, []string{"bob@corp.example"}) {
		t.Fatalf("transactions %+v, want alice then bob", got)
	}
	rec := onlyRecord(t, r)
	for _, a := range []string{"alice@corp.example", "bob@corp.example"} {
		if rc := recipientOf(t, rec, a); rc.Status != ledger.Accepted {
			t.Errorf("%s: %s, want accepted", a, rc.Status)
		}
	}
}

// A crash between two copies' deliveries. Before the first copy's 250 is
// recorded its delivery claim is still live: the second copy waits (a
// claim alone never suppresses), the first copy's next run sends it again
// (the one reply-window duplicate, counted as an unrecorded reply), and
// the waiting copy is then suppressed by that record. Once the 250 is
// recorded, the second copy is suppressed at once. Either way nothing is
// lost and every copy leaves the server.
func TestDuplicateCrashBetweenCopies(t *testing.T) {
	for _, tc := range []struct {
		at         connectortest.Point
		wantCopies int
	}{
		{connectortest.AfterRelayReply, 2},
		{connectortest.AfterDeliveryRecorded, 1},
	} {
		t.Run(string(tc.at), func(t *testing.T) {
			r := newRig(t, rigOptions{users: []string{"support"}})
			order := fixture(t, "order.eml")
			r.dovecot.Deliver(t, "sales", order)
			r.dovecot.Deliver(t, "support", order)
			sales, support := boxFor(r, "sales", "alice@corp.example"), boxFor(r, "support", "alice@corp.example")
			r.crash = connectortest.NewCrash(connectortest.Trigger{At: tc.at, Mailbox: "sales"})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			sales.Dial = r.crash.Source(sales.ID, sales.Dial)
			crashed := r.connector().Poll(ctx, sales)
			if !r.crash.Crashed() {
				t.Fatalf("poll did not crash: %+v", crashed)
			}
			r.crash = nil
			sales = boxFor(r, "sales", "alice@corp.example")
			r.restart()
			second := pollBox(t, r, support)
			again := pollBox(t, r, sales)
			r.clock.Advance(time.Minute)
			third := pollBox(t, r, support)
			got := copiesPerRecipient(r.sink.Messages(t))["alice@corp.example"]
			if got != tc.wantCopies || got != 1+crashed.UnrecordedReplies {
				t.Errorf("alice got %d copies, want %d (= 1 + %d unrecorded replies)", got, tc.wantCopies, crashed.UnrecordedReplies)
			}
			if n := r.dovecot.Count(t, "sales") + r.dovecot.Count(t, "support"); n != 0 {
				t.Errorf("%d copies left on the servers", n)
			}
			for _, id := range []string{"sales", "support"} {
				for _, rec := range recordsOf(t, r, id) {
					if !rec.Settled() || !rec.Deleted() {
						t.Errorf("%s/%s not settled and deleted: %+v", id, rec.UIDL, rec.Recipients)
					}
				}
			}
			if tc.wantCopies == 2 && (second.Deferred != 1 || second.Delivered != 0 || again.Delivered != 1 || third.Suppressed != 1) {
				t.Errorf("after a crash before the record: support %+v, sales %+v, support again %+v; want support waiting for the claim, sales delivered again, support then suppressed",
					second, again, third)
			}
			if tc.wantCopies == 1 && second.Suppressed != 1 {
				t.Errorf("after a crash after the record: support %+v, want suppressed", second)
			}
		})
	}
}

// indexFailingLedger records every outcome but fails every duplicate-index
// write after it, as the DynamoDB ledger reports an entry PutItem that
// failed once the record's PutItem had succeeded.
type indexFailingLedger struct {
	ledger.Ledger
	failed atomic.Int32
}

func (l *indexFailingLedger) PutAccepted(ctx context.Context, rec *ledger.Record, acc []ledger.Acceptance) error {
	if err := l.Ledger.Put(ctx, rec); err != nil {
		return err
	}
	if len(acc) == 0 {
		return nil
	}
	l.failed.Add(1)
	return fmt.Errorf("injected: entry PutItem throttled: %w", ledger.ErrIndexNotWritten)
}

// failingConnector is the rig's connector on a ledger whose
// duplicate-index writes fail.
func failingConnector(r *rig, led *indexFailingLedger) *connector.Connector {
	c := r.connector()
	c.Ledger = led
	return c
}

// A duplicate-index entry that cannot be written after its delivery was
// recorded is a warning: the delivery counts as recorded, so the message
// is deleted like any delivered one (the background outcome write), a
// retry goes only to the recipients still waiting (the synchronous
// write), nothing counts as an unrecorded reply and nothing is sent again.
// Its only cost is that a later copy is not suppressed.
func TestDuplicateIndexNotWrittenAfterRecord(t *testing.T) {
	t.Run("delivered: deleted, later copy delivered again", func(t *testing.T) {
		r := newRig(t, rigOptions{script: &testenv.SMTPScript{}, users: []string{"support"}})
		order := fixture(t, "order.eml")
		r.dovecot.Deliver(t, "sales", order)
		r.dovecot.Deliver(t, "support", order)
		failing := &indexFailingLedger{Ledger: r.led}
		res := pollWith(t, failingConnector(r, failing), boxFor(r, "sales", "alice@corp.example"))
		if res.Delivered != 1 || res.Deleted != 1 || res.UnrecordedReplies != 0 || failing.failed.Load() != 1 {
			t.Fatalf("result %+v, %d index failures; want delivered, deleted, no unrecorded reply, one failure", res, failing.failed.Load())
		}
		if n := r.dovecot.Count(t, "sales"); n != 0 {
			t.Errorf("%d messages left in sales, want the delivered one deleted", n)
		}
		if rec := recordsOf(t, r, "sales")[0]; !rec.Delivered() || !rec.Deleted() || rec.Version < 2 {
			t.Errorf("record %+v, want delivered and deleted", rec)
		}
		if !strings.Contains(r.logs.String(), "delivery recorded, but not its duplicate-index entry") {
			t.Error("the missing entry was not logged")
		}
		if again := pollWith(t, failingConnector(r, failing), boxFor(r, "sales", "alice@corp.example")); again.Delivered != 0 {
			t.Errorf("second poll of sales delivered %d", again.Delivered)
		}
		// Without the entry, a copy polled once the first copy's claim
		// has expired is not recognised: the one duplicate this failure
		// can cause. (While the claim is live, the claim's holder record
		// shows the acceptance.)
		r.clock.Advance(5 * time.Minute)
		if second := pollBox(t, r, boxFor(r, "support", "alice@corp.example")); second.Suppressed != 0 || second.Delivered != 1 {
			t.Errorf("support copy: %+v, want delivered (no entry to suppress it)", second)
		}
		if n := copiesPerRecipient(r.received())["alice@corp.example"]; n != 2 {
			t.Errorf("alice got %d copies, want 2", n)
		}
	})
	t.Run("partly delivered: the retry skips the recorded recipient", func(t *testing.T) {
		r, mb := bobDeferredOnce(t)
		failing := &indexFailingLedger{Ledger: r.led}
		res := pollWith(t, failingConnector(r, failing), mb)
		if res.Deferred != 1 || res.Deleted != 0 || res.UnrecordedReplies != 0 || failing.failed.Load() != 1 {
			t.Fatalf("first attempt: %+v, %d index failures; want deferred for bob, no unrecorded reply, one failure", res, failing.failed.Load())
		}
		if a := recipientOf(t, onlyRecord(t, r), "alice@corp.example"); a.Status != ledger.Accepted {
			t.Fatalf("alice: %s, want her 250 recorded", a.Status)
		}
		r.clock.Advance(11 * time.Minute)
		res = pollWith(t, failingConnector(r, failing), mb)
		if res.Delivered != 1 || res.Deleted != 1 || res.UnrecordedReplies != 0 {
			t.Fatalf("retry: %+v, want delivered to bob and deleted", res)
		}
		got := r.received()
		if len(got) != 2 || !slices.Equal(got[0].To, []string{"alice@corp.example"}) || !slices.Equal(got[1].To, []string{"bob@corp.example"}) {
			t.Fatalf("transactions %+v, want alice then bob only", got)
		}
		if n := r.dovecot.Count(t, "sales"); n != 0 {
			t.Errorf("%d messages left on the server", n)
		}
	})
}
