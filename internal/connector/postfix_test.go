package connector_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/notify"
	"github.com/popconnector/popconnector/internal/route"
	"github.com/popconnector/popconnector/internal/testenv"
)

// exchange is a real MTA standing in for Exchange, shared by the tests of
// this file: corp.example and admin.example are its accepted domains. Each
// test sends its notices to an address of its own (noticeBox), so the
// Maildirs keep the tests apart.
var exchange = &testenv.SharedPostfix{Options: testenv.PostfixOptions{
	Recipients: append(append([]string{"sales@corp.example", "big@corp.example"}, noticeBoxes(12)...), teamBoxes(10)...),
	Listeners: []testenv.PostfixListener{
		{Name: "rcpt-limit-3", RecipientLimit: 3},
		{Name: "small", MessageSizeLimit: 20000},
		{Name: "small-nosize", MessageSizeLimit: 20000, HideSize: true},
		{Name: "spam-filter", RejectSubject: `\[SPAM\]`},
	},
}}

func TestMain(m *testing.M) {
	code := m.Run()
	exchange.Close()
	os.Exit(code)
}

func noticeBox(i int) string { return fmt.Sprintf("pm-%d@admin.example", i) }

func noticeBoxes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = noticeBox(i)
	}
	return out
}

func teamBoxes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("team-%d@corp.example", i)
	}
	return out
}

// A server that caps recipients per message (Exchange's
// MaxRecipientsPerMessage; here Postfix's smtpd_recipient_limit = 3)
// answers "452 4.5.3 too many recipients" past the cap: the message goes
// to every recipient in one poll, in several transactions, and is
// deleted once all are recorded.
func TestPostfixRecipientLimitSplitsWithinOnePoll(t *testing.T) {
	pf := exchange.Get(t)
	team := teamBoxes(10)
	r := newRig(t, rigOptions{smtpAddr: pf.Addr, deliverTo: team})
	r.dovecot.Deliver(t, "sales", []byte("From: a@isp.example\r\nTo: team@isp.example\r\nSubject: to the team\r\nMessage-ID: <team-1@isp.example>\r\n\r\nHello all.\r\n"))
	c := routedConnector(r, []route.Route{addrRoute(t, "exchange", pf.ListenerAddr(t, "rcpt-limit-3"))})
	res := pollWith(t, c, r.mailbox)
	if res.Err != nil || res.Delivered != 1 || res.Deleted != 1 || res.Deferred != 0 {
		t.Fatalf("result %+v, want the message delivered to all 10 and deleted in one poll", res)
	}
	rec := onlyRecord(t, r)
	if rec.Attempts != 1 || len(rec.Recipients) != 10 {
		t.Fatalf("record: %d attempts, %d recipients", rec.Attempts, len(rec.Recipients))
	}
	for _, rc := range rec.Recipients {
		if rc.Status != ledger.Accepted {
			t.Errorf("%s: %s %d %s", rc.Address, rc.Status, rc.Code, rc.Reply)
		}
	}
	for _, to := range team {
		if n := len(pf.Messages(t, to)); n != 1 {
			t.Errorf("%s received %d copies, want 1", to, n)
		}
	}
}

// Postfix's own replies, as test-relay and the rejection paths meet them.
const (
	unknownUserReply = "550 5.1.1 <nobody@corp.example>: Recipient address rejected: User unknown in virtual mailbox table"
	relayDeniedReply = "554 5.7.1 <orders@other.example>: Relay access denied"
)

// addrRoute is a route to addr serving spaces (all domains when none).
func addrRoute(t *testing.T, name, addr string, spaces ...string) route.Route {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return route.Route{Name: name, Host: host, Port: p, AddressSpaces: spaces}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// postfixNotices reads the notices delivered to box, parsed; each must
// come from the null sender.
func postfixNotices(t *testing.T, pf *testenv.Postfix, box string) []notice {
	t.Helper()
	var out []notice
	for _, d := range pf.Messages(t, box) {
		if d.ReturnPath != "" {
			t.Errorf("notice from <%s>, want the null sender", d.ReturnPath)
		}
		out = append(out, parseNotice(t, d.Data))
	}
	return out
}

func causesOf(ns []notice) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.cause())
	}
	return out
}

// The undeliverable options end to end: Dovecot, the connector, Postfix's
// refusals, the postmaster's notices in a Maildir.
func TestPostfixUndeliverableOptions(t *testing.T) {
	pf := exchange.Get(t)
	listed := []notify.ReplyCode{{Code: 550, Enhanced: "5.1.1"}}
	tests := []struct {
		name        string
		to          string
		action      connector.UndeliverableAction
		codes       []notify.ReplyCode
		disposition ledger.Disposition
		causes      []string
		status      string
		reply       string
	}{
		{"leave: unknown user stays and is retried", "nobody@corp.example", connector.LeaveRejected, nil, "", []string{"unknown-recipient"}, "5.1.1", unknownUserReply},
		{"delete: 550 5.1.1 is not a default code", "nobody@corp.example", connector.DeleteRejected, nil, "", []string{"unknown-recipient"}, "5.1.1", unknownUserReply},
		{"delete: 550 5.1.1 listed", "nobody@corp.example", connector.DeleteRejected, listed, ledger.DispositionDeletedRejected, []string{"unknown-recipient"}, "5.1.1", unknownUserReply},
		{"badmail: copy and reason record", "nobody@corp.example", connector.BadmailRejected, nil, ledger.DispositionBadmail, []string{"unknown-recipient", "badmail"}, "5.1.1", unknownUserReply},
		{"delete: never on relay denied (554 5.7.1 is a default code)", "orders@other.example", connector.DeleteRejected, nil, "", []string{"relay-denied"}, "5.7.1", relayDeniedReply},
		{"badmail: never on relay denied", "orders@other.example", connector.BadmailRejected, nil, "", []string{"relay-denied"}, "5.7.1", relayDeniedReply},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			box := noticeBox(i)
			r := newRig(t, rigOptions{smtpAddr: pf.Addr, deliverTo: []string{tt.to}})
			sent := r.seed("order.eml")
			codes := tt.codes
			if codes == nil {
				codes = defaultDeleteCodes
			}
			r.mailbox.Undeliverable = connector.Undeliverable{Action: tt.action, DeleteOnCodes: codes}
			c := routedConnector(r, []route.Route{addrRoute(t, "exchange", pf.Addr)})
			c.Settings.Notify.To = box
			res := pollWith(t, c, r.mailbox)
			rec := onlyRecord(t, r)
			if rec.Disposition != tt.disposition {
				t.Fatalf("disposition %q, want %q (reason %q, last error %q)", rec.Disposition, tt.disposition, rec.DispositionReason, rec.LastError)
			}
			if got := rec.Recipients[0]; got.Code != 0 && !strings.Contains(got.Reply, tt.reply) {
				t.Errorf("recorded reply %q, want %q", got.Reply, tt.reply)
			}
			checkDisposed(t, r, rec, res, sent["order.eml"])
			if tt.disposition == ledger.DispositionBadmail {
				var reason struct {
					Reason     string             `json:"reason"`
					UIDL       string             `json:"uidl"`
					Recipients []ledger.Recipient `json:"recipients"`
				}
				if err := json.Unmarshal(r.archived(rec.BadmailKey+".reason.json"), &reason); err != nil {
					t.Fatal(err)
				}
				if reason.UIDL != rec.UIDL || !strings.Contains(reason.Reason, tt.reply) || len(reason.Recipients) != 1 || reason.Recipients[0].Code != 550 {
					t.Errorf("reason object %+v", reason)
				}
			}
			ns := postfixNotices(t, pf, box)
			if got := causesOf(ns); !equalStrings(got, tt.causes) {
				t.Fatalf("notices %v, want %v", got, tt.causes)
			}
			for _, n := range ns {
				checkNotice(t, n, n.cause(), tt.to, tt.status, "smtp; "+tt.reply)
				if got := n.recipients[0].Get("Remote-Mta"); got != "dns; 127.0.0.1" {
					t.Errorf("Remote-MTA %q", got)
				}
			}
			if !equalStrings(rec.Notified, tt.causes) {
				t.Errorf("ledger Notified %v, want %v", rec.Notified, tt.causes)
			}
			if tt.disposition != "" {
				return
			}
			// Retried at the interval and refused again: no second notice.
			r.clock.Advance(11 * time.Minute)
			if res := pollWith(t, c, r.mailbox); res.Rejected != 1 || res.Deleted != 0 {
				t.Errorf("second poll %+v, want one rejection and no deletion", res)
			}
			if got := causesOf(postfixNotices(t, pf, box)); !equalStrings(got, tt.causes) {
				t.Errorf("notices after the retry %v, want still %v", got, tt.causes)
			}
		})
	}
}

// checkDisposed checks where a message stands after the poll res: left
// on the POP3 server and rejected without a disposition, or deleted after
// one; with badmail, the copy under badmail/ equals original.
func checkDisposed(t *testing.T, r *rig, rec *ledger.Record, res connector.Result, original []byte) {
	t.Helper()
	onServer := r.dovecot.Count(t, "sales")
	if rec.Disposition == "" {
		if onServer != 1 || rec.Deleted() || res.Rejected != 1 {
			t.Errorf("left on server: count %d, deleted %v, result %+v", onServer, rec.Deleted(), res)
		}
	} else if onServer != 0 || !rec.Deleted() {
		t.Errorf("after disposition %s: %d on server, deleted %v", rec.Disposition, onServer, rec.Deleted())
	}
	if rec.Disposition == ledger.DispositionBadmail {
		if copied := r.archived(rec.BadmailKey); rec.BadmailKey != "badmail/"+rec.ArchiveKey || !bytes.Equal(copied, original) {
			t.Errorf("badmail copy %s: %d bytes, equal to the served message: %v", rec.BadmailKey, len(copied), bytes.Equal(copied, original))
		}
	}
}

// bigOrder is order.eml's header with a body of about 30 kB, over the
// 20000-byte limit of the "small" listeners; its notices stay well under.
func bigOrder() []byte {
	raw, _ := os.ReadFile("testdata/order.eml")
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	var b bytes.Buffer
	b.Write(head)
	b.WriteString("\r\n\r\n")
	for i := 0; i < 400; i++ {
		fmt.Fprintf(&b, "line %03d %s\r\n", i, strings.Repeat("x", 66))
	}
	return b.Bytes()
}

// Over message_size_limit: set aside as "too large", whether the client
// learns the limit from SIZE (and does not send) or from Postfix's 552 for
// the body (over BDAT, the CHUNKING path Postfix offers: "Chunk exceeds
// message size limit"; over DATA, "message file too big").
func TestPostfixTooLarge(t *testing.T) {
	pf := exchange.Get(t)
	tests := []struct {
		name, listener, reply string
		box                   int
	}{
		{"SIZE advertised", "small", "552 5.3.4 message size", 10},
		{"552 for the body", "small-nosize", "552 5.3.4 ", 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOptions{smtpAddr: pf.Addr, deliverTo: []string{"big@corp.example"}})
			msg := bigOrder()
			r.dovecot.Deliver(t, "sales", msg)
			r.mailbox.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
			c := routedConnector(r, []route.Route{addrRoute(t, "exchange", pf.ListenerAddr(t, tt.listener))})
			c.Settings.Notify.To = noticeBox(tt.box)
			res := pollWith(t, c, r.mailbox)
			rec := onlyRecord(t, r)
			if res.Badmail != 1 || rec.Disposition != ledger.DispositionBadmail || !strings.HasPrefix(rec.DispositionReason, "too large: ") ||
				!strings.Contains(rec.DispositionReason, tt.reply) {
				t.Fatalf("result %+v, disposition %q, reason %q", res, rec.Disposition, rec.DispositionReason)
			}
			checkDisposed(t, r, rec, res, msg)
			if n := len(pf.Messages(t, "big@corp.example")); n != 0 {
				t.Errorf("Postfix delivered %d messages to big@corp.example, want none", n)
			}
			ns := postfixNotices(t, pf, noticeBox(tt.box))
			if len(ns) != 1 || ns[0].cause() != "badmail" {
				t.Fatalf("notices %v, want one badmail notice", causesOf(ns))
			}
			checkNotice(t, ns[0], "badmail", "big@corp.example", "5.3.4", "smtp; "+tt.reply)
			if !strings.Contains(ns[0].text, "too large") {
				t.Errorf("notice text lacks the reason:\n%s", ns[0].text)
			}
		})
	}
}

// A notice for a message already set aside (badmail, deleted from the
// POP3 server) whose route is down is sent by a later poll once due, and
// never twice.
func TestPostfixNoticeRetriedWhenRouteComesBack(t *testing.T) {
	pf := exchange.Get(t)
	box := noticeBox(6)
	r := newRig(t, rigOptions{smtpAddr: pf.Addr, deliverTo: []string{"nobody@corp.example"}})
	r.seed("order.eml")
	r.mailbox.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
	withAdmin := func(addr string) *connector.Connector {
		c := routedConnector(r, []route.Route{addrRoute(t, "exchange", pf.Addr, "corp.example"), addrRoute(t, "admin", addr, "admin.example")})
		c.Settings.Notify.To = box
		return c
	}
	start := r.clock.Now()
	res := pollWith(t, withAdmin(closedAddr(t)), r.mailbox)
	rec := onlyRecord(t, r)
	if res.Badmail != 1 || res.Notices != 0 || !rec.Deleted() || len(rec.Notified) != 0 {
		t.Fatalf("first poll %+v, deleted %v, notified %v: want set aside, deleted, no notice", res, rec.Deleted(), rec.Notified)
	}
	if want := start.Add(10 * time.Minute); !rec.NextNotice.Equal(want.UTC()) {
		t.Errorf("notice retry at %v, want %v", rec.NextNotice, want)
	}

	// Route back, retry not due yet.
	r.clock.Advance(5 * time.Minute)
	if res := pollWith(t, withAdmin(pf.Addr), r.mailbox); res.Notices != 0 {
		t.Errorf("poll before the retry is due sent %d notices", res.Notices)
	}
	if n := len(pf.Messages(t, box)); n != 0 {
		t.Fatalf("%d notices before the retry was due", n)
	}

	r.clock.Advance(6 * time.Minute)
	if res := pollWith(t, withAdmin(pf.Addr), r.mailbox); res.Notices != 2 {
		t.Fatalf("retry poll %+v, want 2 notices", res)
	}
	rec = onlyRecord(t, r)
	if !equalStrings(rec.Notified, []string{"unknown-recipient", "badmail"}) || !rec.NextNotice.IsZero() {
		t.Errorf("after the retry: notified %v, next %v", rec.Notified, rec.NextNotice)
	}
	r.clock.Advance(11 * time.Minute)
	if res := pollWith(t, withAdmin(pf.Addr), r.mailbox); res.Notices != 0 {
		t.Errorf("a later poll sent %d notices again", res.Notices)
	}

	ns := postfixNotices(t, pf, box)
	if got := causesOf(ns); !equalStrings(got, []string{"unknown-recipient", "badmail"}) {
		t.Fatalf("notices %v, want exactly one per cause", got)
	}
	for _, n := range ns {
		checkNotice(t, n, n.cause(), "nobody@corp.example", "5.1.1", "smtp; "+unknownUserReply)
		// Rebuilt from the ledger: the first attempt's time, no Remote-MTA.
		if got := n.recipients[0].Get("Last-Attempt-Date"); got != start.UTC().Format(time.RFC1123Z) {
			t.Errorf("Last-Attempt-Date %q, want %q", got, start.UTC().Format(time.RFC1123Z))
		}
		if !strings.Contains(n.text, "moved to badmail") {
			t.Errorf("notice text lacks the disposition:\n%s", n.text)
		}
	}
}

// A notice Postfix refuses (the notify address is unknown: 550 5.1.1) is
// reported once and never sent again: the same refusal would follow, as
// for a content filter matching the notice.
func TestPostfixRefusedNoticeReportedOnce(t *testing.T) {
	pf := exchange.Get(t)
	r := newRig(t, rigOptions{smtpAddr: pf.Addr, deliverTo: []string{"nobody@corp.example"}})
	r.seed("order.eml")
	r.mailbox.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
	c := routedConnector(r, []route.Route{addrRoute(t, "exchange", pf.Addr)})
	c.Settings.Notify.To = "unknown-admin@admin.example"
	refused := func() int {
		return strings.Count(r.logs.String(), "notice to the postmaster refused by the SMTP server; not sent again")
	}
	retried := func() int {
		return strings.Count(r.logs.String(), "notice to the postmaster not accepted; retried later")
	}

	for i, advance := range []time.Duration{0, 11 * time.Minute, 121 * time.Hour, 240 * time.Hour} {
		r.clock.Advance(advance)
		res := pollWith(t, c, r.mailbox)
		rec := onlyRecord(t, r)
		// Two causes (unknown recipient, badmail), each refused once.
		if refused() != 2 || retried() != 0 || !rec.NextNotice.IsZero() || res.Notices != 0 || len(rec.Notified) != 0 ||
			!equalStrings(rec.NoticesRefused, []string{"unknown-recipient", "badmail"}) {
			t.Fatalf("poll %d: %d refusals, %d retries logged, next %v, notified %v, refused %v; want 2 refusals once, no retry",
				i, refused(), retried(), rec.NextNotice, rec.Notified, rec.NoticesRefused)
		}
	}
	if !strings.Contains(r.logs.String(), "550 5.1.1 <unknown-admin@admin.example>: Recipient address rejected") {
		t.Error("Postfix's refusal is not in the log")
	}
}

// A Subject-based content filter (Postfix header_checks) refuses a message
// as spam; the notice about it reaches the postmaster through the same
// filter, since its Subject names the cause and the archived copy, never
// the original Subject, which the notice carries only in its
// text/rfc822-headers part.
func TestPostfixSpamNoticePassesTheSameFilter(t *testing.T) {
	pf := exchange.Get(t)
	box := noticeBox(7)
	r := newRig(t, rigOptions{smtpAddr: pf.Addr})
	r.dovecot.Deliver(t, "sales", []byte("From: promo@bulk.example\r\nTo: sales@isp.example\r\nSubject: [SPAM] buy now\r\n"+
		"Message-ID: <spam-1@bulk.example>\r\n\r\nbody\r\n"))
	c := routedConnector(r, []route.Route{addrRoute(t, "exchange", pf.ListenerAddr(t, "spam-filter"))})
	c.Settings.Notify.To = box
	res := pollWith(t, c, r.mailbox)
	rec := onlyRecord(t, r)
	if res.Rejected != 1 || recipientOf(t, rec, "sales@corp.example").Code != 550 {
		t.Fatalf("result %+v, recipient %+v: want the filter's 550", res, rec.Recipients)
	}
	ns := postfixNotices(t, pf, box)
	if len(ns) != 1 || ns[0].cause() != "spam" {
		t.Fatalf("notices %v, want one spam notice through the filter", causesOf(ns))
	}
	if subj := ns[0].header.Get("Subject"); strings.Contains(subj, "SPAM") || strings.Contains(subj, "buy now") {
		t.Errorf("notice Subject %q repeats the original", subj)
	}
	if !strings.Contains(ns[0].original, "Subject: [SPAM] buy now") {
		t.Errorf("the original header is not in the notice:\n%s", ns[0].original)
	}
	if !equalStrings(rec.Notified, []string{"spam"}) {
		t.Errorf("ledger notified %v, want [spam]", rec.Notified)
	}
}
