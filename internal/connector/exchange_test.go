package connector_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/popconnector/popconnector/internal/tlsmode"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/recipients"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
	"github.com/popconnector/popconnector/internal/testenv"
)

const postmaster = "postmaster@corp.example"

// routedConnector is the rig's connector over a route table: every route
// is dialled at its own address, without TLS.
func routedConnector(r *rig, routes []route.Route) *connector.Connector {
	r.t.Helper()
	t, err := route.New(routes)
	if err != nil {
		r.t.Fatal(err)
	}
	c := r.connector()
	c.Routes = t
	c.DialRoute = func(ctx context.Context, rt route.Route) (connector.Relay, error) {
		return app.DialSMTP(relay.Options{Addr: rt.Addr(), TLS: tlsmode.None, HeloDomain: "popconn.test", Timeout: 5 * time.Second}, nil)(ctx)
	}
	c.Settings.Notify = connector.NotifySettings{To: postmaster, Spam: true, UnknownRecipient: true, Badmail: true, RelayDenied: true}
	return c
}

// scriptRoute is one route to the rig's scripted server.
func scriptRoute(r *rig, name string, spaces ...string) route.Route {
	host, port, _ := net.SplitHostPort(r.smtp)
	var p int
	fmt.Sscan(port, &p)
	return route.Route{Name: name, Host: host, Port: p, AddressSpaces: spaces}
}

func pollWith(t *testing.T, c *connector.Connector, mb connector.Mailbox) connector.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := c.Poll(ctx, mb)
	if res.Err != nil {
		t.Fatalf("poll: %v", res.Err)
	}
	return res
}

// rejectRcpt answers RCPT for the listed addresses with err; other
// recipients (the postmaster's notices) are accepted.
func rejectRcpt(err error, addrs ...string) *testenv.SMTPScript {
	return &testenv.SMTPScript{OnRcpt: func(to string) error {
		for _, a := range addrs {
			if strings.EqualFold(to, a) {
				return err
			}
		}
		return nil
	}}
}

func smtpErr(code int, enh [3]int, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{enh[0], enh[1], enh[2]}, Message: msg}
}

// notice is a postmaster notice parsed back with go-message.
type notice struct {
	header     gomessage.Header
	text       string
	perMessage textproto.Header
	recipients []textproto.Header
	original   string
}

// notices returns the null-sender messages to the postmaster, parsed.
func notices(t *testing.T, got []testenv.Received) []notice {
	t.Helper()
	var out []notice
	for _, m := range got {
		if m.From != "" {
			continue
		}
		if len(m.To) != 1 || m.To[0] != postmaster {
			t.Errorf("notice sent to %v, want the postmaster only", m.To)
		}
		out = append(out, parseNotice(t, m.Data))
	}
	return out
}

func parseNotice(t *testing.T, data []byte) notice {
	t.Helper()
	e, err := gomessage.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("notice does not parse: %v", err)
	}
	n := notice{header: e.Header}
	mt, params, _ := e.Header.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("notice Content-Type %s %v, want multipart/report; report-type=delivery-status", mt, params)
	}
	mr := e.MultipartReader()
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(p.Body)
		ct, _, _ := p.Header.ContentType()
		switch ct {
		case "text/plain":
			n.text = string(body)
		case "message/delivery-status":
			br := bufio.NewReader(bytes.NewReader(body))
			h, err := textproto.ReadHeader(br)
			if err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			n.perMessage = h
			for {
				if _, err := br.Peek(1); err != nil {
					break
				}
				g, err := textproto.ReadHeader(br)
				if err != nil {
					t.Fatalf("per-recipient fields: %v", err)
				}
				n.recipients = append(n.recipients, g)
			}
		case "text/rfc822-headers":
			n.original = string(body)
		default:
			t.Errorf("unexpected part %d of type %s", i, ct)
		}
	}
	return n
}

func (n notice) cause() string { return n.header.Get("X-Popconn-Notice") }

// checkNotice checks a notice field by field.
func checkNotice(t *testing.T, n notice, cause, rcpt, status, diagnostic string) {
	t.Helper()
	if n.cause() != cause {
		t.Errorf("notice cause %q, want %q", n.cause(), cause)
	}
	if got := n.header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted %q", got)
	}
	if got := n.perMessage.Get("Reporting-Mta"); got != "dns; popconn.test" {
		t.Errorf("Reporting-MTA %q", got)
	}
	if got := n.perMessage.Get("Received-From-Mta"); got != "dns; 127.0.0.1" {
		t.Errorf("Received-From-MTA %q", got)
	}
	if len(n.recipients) != 1 {
		t.Fatalf("%d recipient groups, want 1", len(n.recipients))
	}
	g := n.recipients[0]
	if got := g.Get("Final-Recipient"); got != "rfc822; "+rcpt {
		t.Errorf("Final-Recipient %q, want rfc822; %s", got, rcpt)
	}
	if got := g.Get("Action"); got != "failed" {
		t.Errorf("Action %q, want failed", got)
	}
	if got := g.Get("Status"); got != status {
		t.Errorf("Status %q, want %q", got, status)
	}
	if got := g.Get("Diagnostic-Code"); !strings.HasPrefix(got, diagnostic) {
		t.Errorf("Diagnostic-Code %q, want prefix %q", got, diagnostic)
	}
	if !strings.Contains(n.original, "Message-ID: <order-4711@supplier.example>") {
		t.Errorf("original header part lacks the Message-ID:\n%s", n.original)
	}
}

func onlyRecord(t *testing.T, r *rig) *ledger.Record {
	t.Helper()
	recs := r.records()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	return recs[0]
}

// Each undeliverable option against the exact replies of seed 000.
func TestUndeliverableOptions(t *testing.T) {
	spam := smtpErr(550, [3]int{5, 7, 1}, "Message rejected as spam by Content Filtering")
	relayDenied := smtpErr(550, [3]int{5, 7, 1}, "Unable to relay for sales@corp.example")
	unknown := smtpErr(550, [3]int{5, 1, 1}, "User unknown")
	tests := []struct {
		name        string
		reply       error
		action      connector.UndeliverableAction
		disposition ledger.Disposition
		cause       string
		status      string
	}{
		{"leave keeps a spam rejection", spam, connector.LeaveRejected, "", "spam", "5.7.1"},
		{"delete on 550 5.7.1 spam", spam, connector.DeleteRejected, ledger.DispositionDeletedRejected, "spam", "5.7.1"},
		{"no delete on 550 5.7.1 Unable to relay", relayDenied, connector.DeleteRejected, "", "relay-denied", "5.7.1"},
		{"badmail on unknown recipient", unknown, connector.BadmailRejected, ledger.DispositionBadmail, "unknown-recipient", "5.1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOptions{script: rejectRcpt(tt.reply, "sales@corp.example")})
			sent := r.seed("order.eml")
			r.mailbox.Undeliverable = connector.Undeliverable{Action: tt.action, DeleteOnCodes: defaultDeleteCodes}
			c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
			res := pollWith(t, c, r.mailbox)
			rec := onlyRecord(t, r)
			if rec.Disposition != tt.disposition {
				t.Fatalf("disposition %q, want %q (reason %q)", rec.Disposition, tt.disposition, rec.DispositionReason)
			}
			checkDisposed(t, r, rec, res, sent["order.eml"])
			if tt.disposition == ledger.DispositionBadmail {
				var reason struct {
					Reason string `json:"reason"`
					UIDL   string `json:"uidl"`
				}
				if err := json.Unmarshal(r.archived(rec.BadmailKey+".reason.json"), &reason); err != nil {
					t.Fatal(err)
				}
				if reason.UIDL != rec.UIDL || !strings.Contains(reason.Reason, "550 5.1.1 User unknown") {
					t.Errorf("reason object %+v", reason)
				}
			}
			ns := notices(t, r.script.Messages())
			wantCauses := []string{tt.cause}
			if tt.disposition == ledger.DispositionBadmail {
				wantCauses = append(wantCauses, "badmail")
			}
			if len(ns) != len(wantCauses) {
				t.Fatalf("%d notices, want %v", len(ns), wantCauses)
			}
			for i, n := range ns {
				checkNotice(t, n, wantCauses[i], "sales@corp.example", tt.status, "smtp; 550 "+tt.status)
				if got := n.recipients[0].Get("Remote-Mta"); got != "dns; 127.0.0.1" {
					t.Errorf("Remote-MTA %q", got)
				}
			}
			if !equalStrings(rec.Notified, wantCauses) {
				t.Errorf("ledger Notified %v, want %v", rec.Notified, wantCauses)
			}
			if tt.disposition != "" {
				return
			}
			// The retry is rejected again: no second notice for the cause.
			r.clock.Advance(11 * time.Minute)
			res = pollWith(t, c, r.mailbox)
			if res.Rejected != 1 {
				t.Errorf("second poll %+v, want one rejection", res)
			}
			if n := len(notices(t, r.script.Messages())); n != 1 {
				t.Errorf("%d notices after the retry, want still 1", n)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// A message still deferred past the give-up age goes to badmail, with a
// notice; a message over the endpoint's SIZE limit
// gets the reason "too large"; a message carrying our trace field more
// than the limit is a loop and is never relayed.
func TestBadmailGiveUpTooLargeLoop(t *testing.T) {
	t.Run("give-up", func(t *testing.T) {
		r := newRig(t, rigOptions{script: rejectRcpt(smtpErr(451, [3]int{4, 3, 0}, "Mail server temporarily rejected message"), "sales@corp.example")})
		r.seed("order.eml")
		// Under "badmail" giving up moves the message off the server
		// (under "leave" it stays: TestGiveUpUnderLeaveKeepsTheMessage).
		r.mailbox.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
		c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
		if res := pollWith(t, c, r.mailbox); res.Deferred != 1 {
			t.Fatalf("first poll %+v, want deferred", res)
		}
		r.clock.Advance(121 * time.Hour)
		res := pollWith(t, c, r.mailbox)
		rec := onlyRecord(t, r)
		if res.GaveUp != 1 || res.Badmail != 1 || rec.Disposition != ledger.DispositionBadmail || !rec.GaveUp || !rec.Deleted() {
			t.Fatalf("result %+v record %+v, want given up into badmail and deleted", res, rec)
		}
		if !strings.HasPrefix(rec.DispositionReason, "gave up: not delivered 5d after") {
			t.Errorf("reason %q", rec.DispositionReason)
		}
		ns := notices(t, r.script.Messages())
		if len(ns) != 1 {
			t.Fatalf("%d notices, want 1 (badmail)", len(ns))
		}
		checkNotice(t, ns[0], "badmail", "sales@corp.example", "4.3.0", "smtp; 451 4.3.0 Mail server temporarily rejected message")
	})
	t.Run("too large", func(t *testing.T) {
		r := newRig(t, rigOptions{script: &testenv.SMTPScript{MaxMessageBytes: 600}})
		r.seed("order.eml")
		r.mailbox.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
		c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
		res := pollWith(t, c, r.mailbox)
		rec := onlyRecord(t, r)
		if res.Badmail != 1 || !strings.HasPrefix(rec.DispositionReason, "too large: ") || !strings.Contains(rec.DispositionReason, "552 5.3.4") {
			t.Fatalf("result %+v, reason %q", res, rec.DispositionReason)
		}
		if n := r.dovecot.Count(t, "sales"); n != 0 {
			t.Errorf("%d on server", n)
		}
	})
	t.Run("loop", func(t *testing.T) {
		r := newRig(t, rigOptions{script: &testenv.SMTPScript{}})
		var msg bytes.Buffer
		for i := 0; i < 4; i++ {
			msg.WriteString(relay.TraceHeader(relay.TraceInfo{From: "127.0.0.1", By: "popconn.test", With: "POP3", ID: fmt.Sprint("hop", i), For: []string{"sales@corp.example"}}))
		}
		msg.WriteString("From: a@b.example\r\nTo: sales@isp.example\r\nSubject: loop\r\nMessage-ID: <order-4711@supplier.example>\r\n\r\nbody\r\n")
		r.dovecot.Deliver(t, "sales", msg.Bytes())
		c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
		res := pollWith(t, c, r.mailbox)
		rec := onlyRecord(t, r)
		if res.Badmail != 1 || rec.TraceHops != 4 || !strings.Contains(rec.DispositionReason, "mail loop (5.4.6)") || rec.Attempts != 0 {
			t.Fatalf("result %+v, hops %d, attempts %d, reason %q", res, rec.TraceHops, rec.Attempts, rec.DispositionReason)
		}
		got := r.script.Messages()
		ns := notices(t, got)
		if len(got) != 1 || len(ns) != 1 {
			t.Fatalf("%d messages relayed, %d notices; want only the badmail notice", len(got), len(ns))
		}
		if ns[0].cause() != "badmail" || ns[0].recipients[0].Get("Status") != "5.4.6" {
			t.Errorf("loop notice cause %q status %q", ns[0].cause(), ns[0].recipients[0].Get("Status"))
		}
	})
}

// A global mailbox relays each message to the recipients its envelope
// headers name, and a message without a local recipient to the fallback.
func TestGlobalMailbox(t *testing.T) {
	r := newRig(t, rigOptions{script: &testenv.SMTPScript{}})
	res, err := recipients.NewResolver(recipients.GlobalOptions{
		LocalDomains: []string{"corp.example"},
		Rewrite:      map[string]string{"*@isp.example": "*@corp.example"},
		Fallback:     postmaster,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.mailbox.DeliverTo = nil
	r.mailbox.Global = res
	msgs := map[string]string{
		"bcc":      "Delivered-To: carol@isp.example\r\nX-Original-To: carol@isp.example\r\nFrom: a@elsewhere.example\r\nTo: alice@corp.example\r\nSubject: bcc\r\n\r\nhi\r\n",
		"two":      "X-Original-To: alice@corp.example\r\nX-Original-To: Bob <bob@isp.example>, alice@corp.example\r\nFrom: a@elsewhere.example\r\nTo: list@elsewhere.example\r\nSubject: two\r\n\r\nhi\r\n",
		"fallback": "From: a@elsewhere.example\r\nTo: someone@elsewhere.example\r\nSubject: fallback\r\n\r\nhi\r\n",
	}
	for _, k := range []string{"bcc", "two", "fallback"} {
		r.dovecot.Deliver(t, "sales", []byte(msgs[k]))
	}
	c := routedConnector(r, []route.Route{scriptRoute(r, "exchange")})
	if res := pollWith(t, c, r.mailbox); res.Delivered != 3 {
		t.Fatalf("result %+v, want 3 delivered", res)
	}
	want := map[string]string{"bcc": "carol@corp.example", "two": "alice@corp.example,bob@corp.example", "fallback": postmaster}
	for _, m := range r.script.Messages() {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(m.Data)))
		if err != nil {
			t.Fatal(err)
		}
		subj := h.Get("Subject")
		if got := strings.Join(m.To, ","); got != want[subj] {
			t.Errorf("%s: RCPT %s, want %s", subj, got, want[subj])
		}
		delete(want, subj)
	}
	if len(want) != 0 {
		t.Errorf("not relayed: %v", want)
	}
	sources := map[string]bool{}
	for _, rec := range r.records() {
		sources[rec.RecipientSource] = true
	}
	if !sources["Delivered-To"] || !sources["X-Original-To"] || !sources["fallback"] {
		t.Errorf("recipient sources %v", sources)
	}
}

// Routing: a route that cannot be reached fails over to the next cost;
// recipients of one message split over routes by address space.
func TestRoutingFailoverAndSplit(t *testing.T) {
	t.Run("failover", func(t *testing.T) {
		r := newRig(t, rigOptions{script: &testenv.SMTPScript{}})
		r.seed("order.eml", "newsletter.eml")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		down := route.Route{Name: "primary", Host: "127.0.0.1", Port: closed, Cost: 1}
		up := scriptRoute(r, "backup")
		up.Cost = 2
		var mu sync.Mutex
		dials := map[string]int{}
		c := routedConnector(r, []route.Route{down, up})
		dial := c.DialRoute
		c.DialRoute = func(ctx context.Context, rt route.Route) (connector.Relay, error) {
			mu.Lock()
			dials[rt.Name]++
			mu.Unlock()
			return dial(ctx, rt)
		}
		res := pollWith(t, c, r.mailbox)
		if res.Delivered != 2 || len(r.script.Messages()) != 2 {
			t.Fatalf("result %+v, %d relayed; want both over the backup route", res, len(r.script.Messages()))
		}
		if dials["primary"] != 1 || dials["backup"] != 1 {
			t.Errorf("dials %v: the down route is tried once per poll, the backup connection reused", dials)
		}
		if !strings.Contains(r.logs.String(), "route unreachable; failing over") {
			t.Error("failover not logged")
		}
	})
	t.Run("split by address space", func(t *testing.T) {
		r := newRig(t, rigOptions{script: &testenv.SMTPScript{}, deliverTo: []string{"sales@corp.example", "ops@partner.net", "x@nowhere.example"}})
		other := testenv.StartScriptedSMTP(t, testenv.SMTPScript{})
		r.seed("order.eml")
		host, port, _ := net.SplitHostPort(other.Addr)
		var p int
		fmt.Sscan(port, &p)
		c := routedConnector(r, []route.Route{
			scriptRoute(r, "exchange", "corp.example"),
			{Name: "partners", Host: host, Port: p, AddressSpaces: []string{"*.net"}},
		})
		res := pollWith(t, c, r.mailbox)
		if res.Deferred != 1 {
			t.Fatalf("result %+v, want deferred for the unroutable recipient", res)
		}
		a, b := r.script.Messages(), other.Messages()
		if len(a) != 1 || strings.Join(a[0].To, ",") != "sales@corp.example" || len(b) != 1 || strings.Join(b[0].To, ",") != "ops@partner.net" {
			t.Fatalf("exchange got %v, partners got %v", a, b)
		}
		rec := onlyRecord(t, r)
		for _, rc := range rec.Recipients {
			switch rc.Address {
			case "x@nowhere.example":
				if rc.Status != ledger.Deferred || !strings.Contains(rc.Reply, "no route") {
					t.Errorf("unroutable recipient %+v", rc)
				}
			default:
				if rc.Status != ledger.Accepted {
					t.Errorf("%s: %s", rc.Address, rc.Status)
				}
			}
		}
		if n := r.dovecot.Count(t, "sales"); n != 1 {
			t.Errorf("%d on server, want the partly delivered message kept", n)
		}
	})
}
