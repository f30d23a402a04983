package connector_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/route"
	"github.com/popconnector/popconnector/internal/testenv"
)

// leadingDot is a message Dovecot 2.3 serves one octet short of its LIST
// size: it does not dot-stuff a first line that starts with ".", so the
// client takes the dot for stuffing. Every fetch gives the same bytes.
var leadingDot = []byte(".abc first line starts with a dot\r\nFrom: a@supplier.example\r\nTo: sales@isp.example\r\n" +
	"Subject: held\r\nMessage-ID: <held-1@supplier.example>\r\n\r\nbody\r\n")

// loneDot's first line is one ".", which Dovecot serves unstuffed: the
// client reads it as the end of the message, and the rest of it is left
// on the wire. Only the server has the message.
var loneDot = []byte(".\r\nFrom: a@supplier.example\r\nSubject: held\r\nMessage-ID: <held-1@supplier.example>\r\n\r\nbody\r\n")

// heldRecord returns the record of the held message among r's records.
func heldRecord(t *testing.T, r *rig) *ledger.Record {
	t.Helper()
	for _, rec := range r.records() {
		if rec.ListSize == int64(len(leadingDot)) || rec.ListSize == int64(len(loneDot)) {
			return rec
		}
	}
	t.Fatal("no record of the held message")
	return nil
}

// A held message is refetched at the retry interval; the fourth fetch with
// the same bytes confirms the hold and the undeliverable action applies:
// badmail sets the served bytes aside and the message leaves the server;
// leave keeps it there, refetched at the slowest pace, the postmaster told
// once. The other message of the mailbox is never held up.
func TestHeldMessageFollowsUndeliverableAction(t *testing.T) {
	tests := []struct {
		name        string
		msg         []byte
		action      connector.UndeliverableAction
		disposition ledger.Disposition
		cause       string
		onServer    int // at the end: the held message, unless set aside
	}{
		{"badmail", leadingDot, connector.BadmailRejected, ledger.DispositionBadmail, "badmail", 0},
		{"leave", leadingDot, connector.LeaveRejected, "", "held", 1},
		// The rest of the message was never received: deleting would
		// lose it, so badmail keeps it on the server like leave.
		{"badmail, rest of the message unread", loneDot, connector.BadmailRejected, "", "held", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOptions{script: &testenv.SMTPScript{}})
			r.dovecot.Deliver(t, "sales", tt.msg)
			r.seed("order.eml")
			served := tt.msg[1:] // the first dot taken for stuffing
			if tt.msg[1] == '\r' {
				served = nil // the lone dot taken for the end
			}
			fewer := fmt.Sprintf("(%d fewer)", len(tt.msg)-len(served))
			r.mailbox.Undeliverable = connector.Undeliverable{Action: tt.action, DeleteOnCodes: defaultDeleteCodes}
			c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})

			for fetch := 1; fetch <= 3; fetch++ {
				if fetch > 1 {
					r.dovecot.Deliver(t, "sales", []byte(fmt.Sprintf("From: a@b.example\r\nSubject: fresh %d\r\nMessage-ID: <fresh-%d@b.example>\r\n\r\nbody\r\n", fetch, fetch)))
				}
				pollWith(t, c, r.mailbox)
				rec := heldRecord(t, r)
				if rec.HeldFetches != fetch || rec.Disposition != "" || !strings.Contains(rec.Held, fewer) {
					t.Fatalf("after fetch %d: held %q, fetches %d, disposition %q", fetch, rec.Held, rec.HeldFetches, rec.Disposition)
				}
				if want := r.clock.Now().Add(10 * time.Minute).UTC(); !rec.NextRefetch.Equal(want) {
					t.Errorf("after fetch %d: next fetch %v, want the retry interval (%v)", fetch, rec.NextRefetch, want)
				}
				// A refetch runs on a session of its own: the message that
				// arrived meanwhile is delivered and deleted in the same
				// poll. (The first fetch of a message that comes short ends
				// its session's DELEs: the rest of it may be on the wire.)
				if n := r.dovecot.Count(t, "sales"); fetch > 1 && n != 1 {
					t.Fatalf("after fetch %d: %d messages on the server, want the held one only", fetch, n)
				}
				// Not due: the poll does not fetch it again.
				pollWith(t, c, r.mailbox)
				if got := heldRecord(t, r).HeldFetches; got != fetch {
					t.Fatalf("a poll before the retry interval refetched it (%d fetches)", got)
				}
				r.clock.Advance(11 * time.Minute)
			}
			if n := len(r.script.Messages()); n != 3 {
				t.Fatalf("%d messages relayed before the hold was confirmed, want order.eml and the two fresh ones", n)
			}
			pollWith(t, c, r.mailbox) // the fourth fetch confirms the hold
			rec := heldRecord(t, r)
			if rec.HeldFetches != 4 || rec.Disposition != tt.disposition {
				t.Fatalf("after the fourth fetch: fetches %d, disposition %q (%q)", rec.HeldFetches, rec.Disposition, rec.DispositionReason)
			}
			ns := notices(t, r.script.Messages())
			if len(ns) != 1 || ns[0].cause() != tt.cause {
				t.Fatalf("notices %d, want one of cause %q", len(ns), tt.cause)
			}
			if !strings.Contains(ns[0].text, fewer) {
				t.Errorf("notice text does not say how the bytes differ:\n%s", ns[0].text)
			}
			switch {
			case tt.disposition == ledger.DispositionBadmail:
				if got := r.archived(rec.BadmailKey); string(got) != string(served) {
					t.Errorf("badmail copy %q, want the served bytes %q", got, served)
				}
				var reason struct {
					Reason string `json:"reason"`
				}
				if err := json.Unmarshal(r.archived(rec.BadmailKey+".reason.json"), &reason); err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("listed %d octets but sent %d %s", len(tt.msg), len(served), fewer); !strings.Contains(reason.Reason, want) ||
					!strings.Contains(reason.Reason, "differ from the server's copy") {
					t.Errorf("badmail reason %q, want it to say %q and that the bytes differ from the server's copy", reason.Reason, want)
				}
			default:
				if want := r.clock.Now().Add(2 * time.Hour).UTC(); !rec.NextRefetch.Equal(want) {
					t.Errorf("confirmed hold: next fetch %v, want the slowest pace (%v)", rec.NextRefetch, want)
				}
				st := connector.Summarize("sales", r.records())
				if len(st.Held) != 1 || st.Held[0].UIDL != rec.UIDL {
					t.Errorf("status shows %d held, want this one", len(st.Held))
				}
				// The slowest pace: another fetch after two hours, the
				// postmaster not told again.
				r.clock.Advance(2*time.Hour + time.Minute)
				pollWith(t, c, r.mailbox)
				if got := heldRecord(t, r); got.HeldFetches != 5 {
					t.Errorf("fetches %d after the slow interval, want 5", got.HeldFetches)
				}
				if n := len(notices(t, r.script.Messages())); n != 1 {
					t.Errorf("%d notices after a later fetch, want still 1", n)
				}
			}
			pollWith(t, c, r.mailbox) // the DELEs a held fetch kept back
			if n := r.dovecot.Count(t, "sales"); n != tt.onServer {
				t.Errorf("%d messages left on the server, want %d", n, tt.onServer)
			}
		})
	}
}

// Giving up under "leave" stops the attempts, copies the message to
// badmail and tells the postmaster, but keeps it on the POP3 server.
func TestGiveUpUnderLeaveKeepsTheMessage(t *testing.T) {
	r := newRig(t, rigOptions{script: rejectRcpt(smtpErr(451, [3]int{4, 3, 0}, "Mail server temporarily rejected message"), "sales@corp.example")})
	sent := r.seed("order.eml")
	c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
	if res := pollWith(t, c, r.mailbox); res.Deferred != 1 {
		t.Fatalf("first poll %+v, want deferred", res)
	}
	r.clock.Advance(121 * time.Hour)
	res := pollWith(t, c, r.mailbox)
	rec := onlyRecord(t, r)
	if res.GaveUp != 1 || res.Badmail != 1 || rec.Disposition != "" || !rec.GaveUp || rec.Deleted() || rec.BadmailKey == "" {
		t.Fatalf("result %+v record %+v, want given up, copied to badmail, kept", res, rec)
	}
	if got := r.archived(rec.BadmailKey); string(got) != string(sent["order.eml"]) {
		t.Error("badmail copy differs from the message")
	}
	ns := notices(t, r.script.Messages())
	if len(ns) != 1 {
		t.Fatalf("%d notices, want 1 (badmail)", len(ns))
	}
	checkNotice(t, ns[0], "badmail", "sales@corp.example", "4.3.0", "smtp; 451 4.3.0 Mail server temporarily rejected message")
	if !strings.Contains(ns[0].text, "left on the POP3 server") {
		t.Errorf("notice does not say the message stays on the server:\n%s", ns[0].text)
	}
	// No more automatic attempts, and it stays.
	r.clock.Advance(24 * time.Hour)
	res = pollWith(t, c, r.mailbox)
	if res.Deferred+res.Rejected+res.Delivered+res.Deleted != 0 || len(r.script.Messages()) != 1 {
		t.Errorf("a poll after giving up did something: %+v", res)
	}
	if n := r.dovecot.Count(t, "sales"); n != 1 {
		t.Errorf("%d on the server, want the message kept", n)
	}
}

// A message too large for Exchange under "leave" is tried again only at
// the slowest pace, with a "too large" notice once; its reason says "too
// large" once.
func TestTooLargeUnderLeave(t *testing.T) {
	// 30 KB against a 10 KB limit: the notice (its original header part
	// only) still fits.
	r := newRig(t, rigOptions{script: &testenv.SMTPScript{MaxMessageBytes: 10000}})
	r.dovecot.Deliver(t, "sales", bigOrder())
	c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
	c.Settings.Notify.TooLarge = true
	res := pollWith(t, c, r.mailbox)
	rec := onlyRecord(t, r)
	if res.Rejected != 1 || rec.Disposition != "" || strings.Count(rec.LastError, "too large") != 1 {
		t.Fatalf("result %+v, disposition %q, error %q", res, rec.Disposition, rec.LastError)
	}
	if want := r.clock.Now().Add(2 * time.Hour).UTC(); !rec.NextAttempt.Equal(want) {
		t.Errorf("next attempt %v, want the slowest pace %v", rec.NextAttempt, want)
	}
	ns := notices(t, r.script.Messages())
	if len(ns) != 1 || ns[0].cause() != "too-large" {
		t.Fatalf("%d notices, want one too-large; log:\n%s", len(ns), r.logs.String())
	}
	r.clock.Advance(11 * time.Minute)
	if res := pollWith(t, c, r.mailbox); res.Rejected != 0 || res.NotDue != 1 {
		t.Errorf("poll at the retry interval %+v, want not due", res)
	}
	r.clock.Advance(2 * time.Hour)
	if res := pollWith(t, c, r.mailbox); res.Rejected != 1 {
		t.Errorf("poll after the slow pace %+v, want one more attempt", res)
	}
	if n := len(notices(t, r.script.Messages())); n != 1 {
		t.Errorf("%d notices, want still 1", n)
	}
	// Under badmail the reason says "too large" once too.
	rb := newRig(t, rigOptions{script: &testenv.SMTPScript{MaxMessageBytes: 600}})
	rb.seed("order.eml")
	rb.mailbox.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
	pollWith(t, routedConnector(rb, []route.Route{scriptRoute(rb, "exchange")}), rb.mailbox)
	brec := onlyRecord(t, rb)
	var reason struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(rb.archived(brec.BadmailKey+".reason.json"), &reason); err != nil {
		t.Fatal(err)
	}
	if strings.Count(reason.Reason, "too large") != 1 {
		t.Errorf("badmail reason %q says too large %d times", reason.Reason, strings.Count(reason.Reason, "too large"))
	}
}

// A notice about a message given up and left on the server that the SMTP
// server could not take (a 4xx) is tried again at the retry interval,
// though the message gets no more delivery attempts; it is sent once.
func TestGiveUpNoticeRetriedLater(t *testing.T) {
	var noticesRefused atomic.Bool
	noticesRefused.Store(true)
	script := &testenv.SMTPScript{OnRcpt: func(to string) error {
		switch {
		case strings.EqualFold(to, "sales@corp.example"):
			return smtpErr(451, [3]int{4, 3, 0}, "Mail server temporarily rejected message")
		case strings.EqualFold(to, postmaster) && noticesRefused.Load():
			return smtpErr(452, [3]int{4, 3, 1}, "Insufficient system storage")
		}
		return nil
	}}
	r := newRig(t, rigOptions{script: script})
	r.seed("order.eml")
	c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
	pollWith(t, c, r.mailbox)
	r.clock.Advance(121 * time.Hour)
	if res := pollWith(t, c, r.mailbox); res.GaveUp != 1 || res.Notices != 0 {
		t.Fatalf("give-up poll %+v, want given up, notice not accepted", res)
	}
	if rec := onlyRecord(t, r); rec.NextNotice.IsZero() || len(rec.Notified) != 0 {
		t.Fatalf("after a refused notice: next %v, notified %v; want a notice retry scheduled", rec.NextNotice, rec.Notified)
	}
	noticesRefused.Store(false)
	r.clock.Advance(11 * time.Minute)
	if res := pollWith(t, c, r.mailbox); res.Notices != 1 || res.Deferred+res.Rejected+res.Delivered != 0 {
		t.Fatalf("retry poll %+v, want the notice only", res)
	}
	r.clock.Advance(11 * time.Minute)
	if res := pollWith(t, c, r.mailbox); res.Notices != 0 {
		t.Errorf("a later poll sent %d notices again", res.Notices)
	}
	if rec := onlyRecord(t, r); !equalStrings(rec.Notified, []string{"badmail"}) || !rec.GaveUp || rec.Deleted() {
		t.Errorf("record notified %v, gave up %v, deleted %v", rec.Notified, rec.GaveUp, rec.Deleted())
	}
}
