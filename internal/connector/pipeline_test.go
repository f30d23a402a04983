package connector_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var fixtures = []string{"order.eml", "newsletter.eml", "no-message-id.eml", "bounce.eml", "long-line.eml"}

// Every message reaches the SMTP server byte for byte apart from the
// trace header (and the Message-ID we add where there was none), the
// archive holds exactly what Dovecot served, the mailbox is empty after
// the delete policy, and a second run relays nothing.
func TestRelayByteExactArchiveAndDelete(t *testing.T) {
	r := newRig(t, rigOptions{})
	sent := r.seed(fixtures...)

	res := r.poll()
	if res.Err != nil {
		t.Fatalf("poll: %v", res.Err)
	}
	if res.Fetched != len(fixtures) || res.Delivered != len(fixtures) || res.Deleted != len(fixtures) {
		t.Fatalf("result %+v, want %d fetched, delivered and deleted", res, len(fixtures))
	}
	got := r.sink.WaitFor(t, len(fixtures), 10*time.Second)
	byDigest := countByDigest(t, got)
	for _, name := range sortedKeys(sent) {
		if byDigest[digest(sent[name])] != 1 {
			t.Errorf("%s: relayed %d times byte-exact, want 1", name, byDigest[digest(sent[name])])
		}
	}
	// The archive holds what the POP3 server served; the fixtures are CRLF
	// so Dovecot serves them unchanged.
	recs := r.records()
	if len(recs) != len(fixtures) {
		t.Fatalf("%d ledger records, want %d", len(recs), len(fixtures))
	}
	archived := map[string]bool{}
	for _, rec := range recs {
		b := r.archived(rec.ArchiveKey)
		if digest(b) != rec.SHA256 {
			t.Errorf("%s: archive digest %s, ledger says %s", rec.UIDL, digest(b), rec.SHA256)
		}
		archived[digest(b)] = true
		if !rec.Delivered() || !rec.Deleted() {
			t.Errorf("%s: delivered=%v deleted=%v", rec.UIDL, rec.Delivered(), rec.Deleted())
		}
		if rec.Recipients[0].Reply == "" {
			t.Errorf("%s: the server's 250 text was not kept", rec.UIDL)
		}
	}
	for name, raw := range sent {
		if !archived[digest(raw)] {
			t.Errorf("%s: no archive object equals the served bytes", name)
		}
	}
	if n := r.dovecot.Count(t, "sales"); n != 0 {
		t.Errorf("%d messages left on the POP3 server after delete policy", n)
	}
	// Envelope: Return-Path sender, null sender kept null.
	for _, m := range got {
		rest, added := stripAdded(t, m.Data)
		switch digest(rest) {
		case digest(sent["order.eml"]):
			if m.From != "orders@supplier.example" {
				t.Errorf("order: MAIL FROM %q, want the Return-Path", m.From)
			}
		case digest(sent["bounce.eml"]):
			if m.From != "" {
				t.Errorf("bounce: MAIL FROM %q, want the null sender", m.From)
			}
		case digest(sent["no-message-id.eml"]):
			if !strings.HasPrefix(added, "popconn.sales.") {
				t.Errorf("message without Message-ID: added %q", added)
			}
		}
		if len(m.To) != 1 || m.To[0] != "sales@corp.example" {
			t.Errorf("RCPT %v", m.To)
		}
	}

	for _, d := range r.sink.Dumps(t) {
		rest, _ := stripAdded(t, d.Data)
		if digest(rest) == digest(sent["order.eml"]) && !strings.Contains(d.MailArgs, "BODY=8BITMIME") {
			t.Errorf("order has 8-bit text; MAIL args %q lack BODY=8BITMIME", d.MailArgs)
		}
	}

	res = r.poll()
	if res.Err != nil || res.Fetched != 0 || res.Delivered != 0 {
		t.Fatalf("second poll over an empty mailbox: %+v", res)
	}
	if n := len(r.sink.Messages(t)); n != len(fixtures) {
		t.Fatalf("second poll relayed again: %d messages at the sink", n)
	}
}

// Under keep, the mailbox stays intact, and a second run relays nothing.
func TestKeepPolicyRelaysOnce(t *testing.T) {
	r := newRig(t, rigOptions{policy: connector.Keep})
	r.seed(fixtures...)
	for i := 0; i < 2; i++ {
		res := r.poll()
		if res.Err != nil {
			t.Fatalf("poll %d: %v", i, res.Err)
		}
		if i == 1 && (res.Fetched != 0 || res.Delivered != 0) {
			t.Fatalf("second poll under keep: %+v", res)
		}
	}
	if n := r.dovecot.Count(t, "sales"); n != len(fixtures) {
		t.Errorf("%d messages on the server under keep, want %d", n, len(fixtures))
	}
	if n := len(r.sink.WaitFor(t, len(fixtures), 5*time.Second)); n != len(fixtures) {
		t.Errorf("%d relayed, want %d", n, len(fixtures))
	}
}

// keep_days deletes a delivered message only once it is old enough.
func TestKeepDaysPolicy(t *testing.T) {
	r := newRig(t, rigOptions{policy: connector.KeepDays})
	r.mailbox.KeepFor = 3 * 24 * time.Hour
	r.seed("order.eml")
	if res := r.poll(); res.Err != nil || res.Delivered != 1 || res.Deleted != 0 {
		t.Fatalf("first poll: %+v", res)
	}
	r.clock.Advance(3*24*time.Hour + time.Minute)
	if res := r.poll(); res.Err != nil || res.Deleted != 1 || res.Delivered != 0 {
		t.Fatalf("poll after keep_days: %+v", res)
	}
	if n := r.dovecot.Count(t, "sales"); n != 0 {
		t.Errorf("%d left on server", n)
	}
}

// A 4xx for one of two recipients: the other is accepted once, the failed
// one is retried alone on a later run, and the message stays on the
// server until both have it.
func TestPartialRecipientRetry(t *testing.T) {
	var rcpts []string
	failB := true
	r := newRig(t, rigOptions{
		deliverTo: []string{"a@corp.example", "b@corp.example"},
		script: &testenv.SMTPScript{OnRcpt: func(to string) error {
			rcpts = append(rcpts, to)
			if to == "b@corp.example" && failB {
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
			}
			return nil
		}},
	})
	r.seed("order.eml")
	res := r.poll()
	if res.Err != nil || res.Deferred != 1 || res.Deleted != 0 {
		t.Fatalf("first poll: %+v", res)
	}
	rec := r.records()[0]
	if rec.Recipients[0].Status != ledger.Accepted || rec.Recipients[1].Status != ledger.Deferred {
		t.Fatalf("recipients after first poll: %+v", rec.Recipients)
	}
	if rec.Recipients[1].Code != 452 || rec.Recipients[1].Enhanced != "4.2.2" || !strings.Contains(rec.LastError, "mailbox full") {
		t.Fatalf("deferral reason not recorded: %+v / %q", rec.Recipients[1], rec.LastError)
	}
	if n := r.dovecot.Count(t, "sales"); n != 1 {
		t.Fatalf("message left the server with a recipient pending: %d on server", n)
	}
	// Not due yet: nothing is sent.
	if res := r.poll(); res.NotDue != 1 || len(r.script.Messages()) != 1 {
		t.Fatalf("poll before next attempt: %+v, %d sent", res, len(r.script.Messages()))
	}
	failB = false
	r.clock.Advance(11 * time.Minute)
	rcpts = nil
	res = r.poll()
	if res.Err != nil || res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("retry poll: %+v", res)
	}
	if fmt.Sprint(rcpts) != "[b@corp.example]" {
		t.Fatalf("retry sent RCPT to %v, want only b", rcpts)
	}
	msgs := r.script.Messages()
	if len(msgs) != 2 || fmt.Sprint(msgs[0].To) != "[a@corp.example]" || fmt.Sprint(msgs[1].To) != "[b@corp.example]" {
		t.Fatalf("transactions: %+v", msgs)
	}
}

// A 5xx leaves the message on the server with the reason recorded, retried
// at the retry interval (the seeds' default undeliverable option).
func TestPermanentRejectionStaysOnServer(t *testing.T) {
	r := newRig(t, rigOptions{script: &testenv.SMTPScript{OnRcpt: func(string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Unable to relay for sales@corp.example"}
	}}})
	r.seed("order.eml")
	before := r.clock.Now()
	res := r.poll()
	if res.Err != nil || res.Rejected != 1 {
		t.Fatalf("poll: %+v", res)
	}
	rec := r.records()[0]
	if rec.Recipients[0].Status != ledger.Rejected || rec.Recipients[0].Code != 550 || rec.Recipients[0].Enhanced != "5.7.1" {
		t.Fatalf("recipient %+v", rec.Recipients[0])
	}
	if !strings.Contains(rec.LastError, "Unable to relay") {
		t.Fatalf("reason %q", rec.LastError)
	}
	if d := rec.NextAttempt.Sub(before); d < 10*time.Minute || d > 11*time.Minute {
		t.Fatalf("next attempt in %v, want the 10 min retry interval", d)
	}
	if n := r.dovecot.Count(t, "sales"); n != 1 {
		t.Fatalf("rejected message left the server")
	}
	if !strings.Contains(r.logs.String(), "Unable to relay") {
		t.Fatalf("reason not in the log")
	}
}

// The work per poll is bounded; the rest waits for the next poll.
func TestMaxMessagesPerPoll(t *testing.T) {
	r := newRig(t, rigOptions{maxPerPoll: 2})
	r.seed(fixtures...)
	res := r.poll()
	if res.Err != nil || res.Fetched != 2 || res.Stopped != "max messages per poll" {
		t.Fatalf("first poll: %+v", res)
	}
	for i := 0; i < 3 && r.dovecot.Count(t, "sales") > 0; i++ {
		if res := r.poll(); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if n := r.dovecot.Count(t, "sales"); n != 0 {
		t.Fatalf("%d left after bounded polls", n)
	}
	if n := len(r.sink.WaitFor(t, len(fixtures), 5*time.Second)); n != len(fixtures) {
		t.Fatalf("%d relayed", n)
	}
}

// Bad input gets a clear error and changes nothing: wrong password,
// unreachable server, certificate that does not verify.
func TestMailboxErrorsChangeNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *rig)
		want  string
	}{
		{"wrong password", func(r *rig) {}, "auth"},
		{"unreachable server", func(r *rig) { r.mailbox.Dial = dialAddr(r, "127.0.0.1:1", nil) }, "connect"},
		{"certificate not trusted", func(r *rig) { r.mailbox.Dial = dialAddr(r, r.dovecot.TLSAddr, noCA) }, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pass := "wrong-" + popPassword
			r := newRig(t, rigOptions{password: pass})
			tt.setup(r)
			r.seed("order.eml")
			res := r.poll()
			if res.Err == nil {
				t.Fatalf("poll succeeded: %+v", res)
			}
			msg := strings.ToLower(res.Err.Error())
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", res.Err, tt.want)
			}
			if strings.Contains(res.Err.Error(), popPassword) {
				t.Errorf("error contains the password")
			}
			if n := r.dovecot.Count(t, "sales"); n != 1 {
				t.Errorf("server holds %d, want 1", n)
			}
			if n := len(r.records()); n != 0 {
				t.Errorf("ledger has %d records", n)
			}
			if n := len(r.sink.Messages(t)); n != 0 {
				t.Errorf("%d relayed", n)
			}
		})
	}
}

// Mailboxes are polled in parallel, each by one worker, and one failing
// mailbox does not stop the others.
func TestPollAllParallel(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.seed(fixtures...)
	bad := r.mailbox
	bad.ID = "broken"
	bad.Dial = dialAddr(r, "127.0.0.1:1", nil)
	res := r.connector().PollAll(t.Context(), []connector.Mailbox{bad, r.mailbox}, 2)
	if res[0].Err == nil || res[1].Err != nil || res[1].Delivered != len(fixtures) {
		t.Fatalf("results: %+v", res)
	}
}

// A second poller on the same mailbox while the first holds the lease gets
// ErrLeaseHeld and touches nothing.
func TestLeaseExcludesSecondPoller(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.seed("order.eml")
	l, err := r.led.Lease(t.Context(), "sales", "other-host/7", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	res := r.poll()
	if !errors.Is(res.Err, ledger.ErrLeaseHeld) {
		t.Fatalf("poll with the lease held elsewhere: %v", res.Err)
	}
	if len(r.sink.Messages(t)) != 0 || r.dovecot.Count(t, "sales") != 1 {
		t.Fatal("poller without the lease changed something")
	}
	l.Release(t.Context())
	if res := r.poll(); res.Err != nil || res.Delivered != 1 {
		t.Fatalf("poll after release: %+v", res)
	}
}

// outcomeFailingLedger fails the first write that records an accepted
// delivery, as a ledger that went away while the outcome was written in
// the background.
type outcomeFailingLedger struct {
	ledger.Ledger
	failed atomic.Int32
}

func (l *outcomeFailingLedger) failFirst(rec *ledger.Record) error {
	if rec.Delivered() && l.failed.CompareAndSwap(0, 1) {
		return errors.New("injected: ledger write failed")
	}
	return nil
}

func (l *outcomeFailingLedger) Put(ctx context.Context, recs ...*ledger.Record) error {
	for _, r := range recs {
		if err := l.failFirst(r); err != nil {
			return err
		}
	}
	return l.Ledger.Put(ctx, recs...)
}

func (l *outcomeFailingLedger) PutAccepted(ctx context.Context, rec *ledger.Record, acc []ledger.Acceptance) error {
	if err := l.failFirst(rec); err != nil {
		return err
	}
	return l.Ledger.PutAccepted(ctx, rec, acc)
}

// When the background write of a delivered message's outcome fails, the
// next message is abandoned before its final "." (the server takes
// nothing), its record keeps no attempt, nothing is deleted, and the
// duplicate is exactly the one message whose acceptance was not recorded.
func TestFailedOutcomeWriteAbandonsTheNextMessage(t *testing.T) {
	r := newRig(t, rigOptions{script: &testenv.SMTPScript{}})
	sent := r.seed("order.eml", "newsletter.eml", "no-message-id.eml")
	failing := &outcomeFailingLedger{Ledger: r.led}
	c := r.connector()
	c.Ledger = failing
	res := c.Poll(t.Context(), r.mailbox)
	if res.Err == nil || failing.failed.Load() != 1 {
		t.Fatalf("first poll: %+v, %d injected failures; want an error from the failed write", res, failing.failed.Load())
	}
	if res.UnrecordedReplies != 1 || res.Deleted != 0 {
		t.Fatalf("first poll: %d unrecorded replies, %d deleted; want 1 and 0", res.UnrecordedReplies, res.Deleted)
	}
	if n := len(r.received()); n != 1 {
		t.Fatalf("the server took %d messages in the first poll, want only the first (the second abandoned before its dot)", n)
	}
	for _, rec := range r.records() {
		if rec.Attempts != 0 || !rec.NextAttempt.IsZero() {
			t.Errorf("record %s: %d attempts, next attempt %v; want untouched", rec.UIDL, rec.Attempts, rec.NextAttempt)
		}
	}
	if n := r.dovecot.Count(t, "sales"); n != len(sent) {
		t.Fatalf("%d messages on the server after the failed poll, want all %d", n, len(sent))
	}
	// The next poll delivers everything; the first message twice (its
	// acceptance was never recorded), the others once.
	res = pollWith(t, c, r.mailbox)
	if res.Err != nil || res.Deleted != len(sent) {
		t.Fatalf("second poll: %+v", res)
	}
	if n := len(r.received()); n != len(sent)+1 {
		t.Fatalf("the server took %d messages in all, want %d (one duplicate)", n, len(sent)+1)
	}
}
