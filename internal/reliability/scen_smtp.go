package reliability

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/popconnector/popconnector/internal/tlsmode"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
)

// SMTPFaultCases are scenario 4: faults of the SMTP side.
func SMTPFaultCases() []Case {
	return []Case{
		{"smtp/421-at-greeting", runGreeting421},
		{"smtp/421-mid-session", runMidSession421},
		{"smtp/drop-mid-data", runDropMidData},
		{"smtp/no-reply-after-dot", runNoReplyAfterDot},
		{"smtp/drop-after-dot", runDropAfterDot},
		{"smtp/452-too-many-recipients", runTooManyRecipients},
		{"smtp/552-size-advertised", func(t T, o *Options) Row { return runTooLarge(t, o, true) }},
		{"smtp/552-after-data", func(t T, o *Options) Row { return runTooLarge(t, o, false) }},
		{"smtp/starttls-not-offered", runSTARTTLSNotOffered},
		{"smtp/untrusted-certificate", runUntrustedCertificate},
	}
}

// smtpRig is a pop3test mailbox of n generated messages relayed to a
// ScriptedSMTP running script.
func smtpRig(t T, o *Options, n int, script testenv.SMTPScript, recipients ...string) *Rig {
	r := NewRig(t, o, RigOptions{Script: &script, Recipients: recipients})
	ids, msgs := SeqMessages(1, n)
	r.ServePOP3(ids, msgs, nil)
	return r
}

// finish switches the relay to addr and polls until done.
func finish(t T, r *Rig, addr string) {
	t.Helper()
	r.SetSMTPAddr(addr)
	r.Clock.Advance(time.Hour)
	r.PollUntilDone(6)
	if !r.Done() {
		t.Errorf("not done once the SMTP fault was gone: last error %v", r.lastErr())
	}
}

// wantDeferred checks that the messages named are deferred with a reason
// containing reason and a next attempt, and still on the server.
func wantDeferred(t T, r *Rig, reason string, ids ...string) {
	t.Helper()
	recs := ledgerRecords(t, r)
	byUIDL := map[string]string{}
	for _, m := range r.Messages {
		byUIDL[m.UIDL] = m.ID
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	on := r.OnServer()
	for _, rec := range recs {
		id := byUIDL[rec.UIDL]
		if !want[id] {
			continue
		}
		delete(want, id)
		if rec.Delivered() || !strings.Contains(rec.LastError, reason) || rec.NextAttempt.IsZero() {
			t.Errorf("%s: delivered=%v last error %q next %v; want deferred with %q", id, rec.Delivered(), rec.LastError, rec.NextAttempt, reason)
		}
		if !on[id] {
			t.Errorf("%s: not on the server although undelivered", id)
		}
	}
	for id := range want {
		t.Errorf("%s: no ledger record", id)
	}
}

func allIDs(r *Rig) []string {
	var ids []string
	for _, m := range r.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

func runGreeting421(t T, o *Options) Row {
	r := smtpRig(t, o, 5, testenv.SMTPScript{})
	raw := StartRawSMTP(t, func(c *SMTPConn) { c.Reply("421 4.3.2 Service not available, closing transmission channel") })
	r.SetSMTPAddr(raw.Addr)
	res := r.Poll()
	if res.Deferred != 5 || res.Deleted != 0 {
		t.Errorf("421 greeting: deferred %d deleted %d, want 5 and 0", res.Deferred, res.Deleted)
	}
	wantDeferred(t, r, "421", allIDs(r)...)
	finish(t, r, r.SMTP.Addr)
	return r.Row("smtp/421-at-greeting", 0)
}

func runMidSession421(t T, o *Options) Row {
	var mails atomic.Int32
	r := smtpRig(t, o, 5, testenv.SMTPScript{OnMail: func(string) error {
		if mails.Add(1) == 2 {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "closing connection, try later"}
		}
		return nil
	}})
	res := r.Poll()
	if res.Deferred != 1 || res.Delivered != 4 {
		t.Errorf("421 after MAIL: delivered %d deferred %d, want 4 and 1", res.Delivered, res.Deferred)
	}
	wantDeferred(t, r, "421", "seq-2")
	finish(t, r, r.SMTP.Addr)
	return r.Row("smtp/421-mid-session", 0)
}

func runDropMidData(t T, o *Options) Row {
	r := smtpRig(t, o, 5, testenv.SMTPScript{})
	var sawEnd atomic.Bool
	raw := StartRawSMTP(t, func(c *SMTPConn) {
		c.Reply("220 raw.test ESMTP")
		if !c.Converse(nil) {
			return
		}
		for i := 0; i < 4; i++ { // a few lines of the body, then hang up
			l, err := c.Line()
			if err != nil {
				return
			}
			if l == "." {
				sawEnd.Store(true)
			}
		}
	})
	r.SetSMTPAddr(raw.Addr)
	res := r.Poll()
	if res.Deferred != 5 || res.Deleted != 0 {
		t.Errorf("dropped in DATA: deferred %d deleted %d, want 5 and 0", res.Deferred, res.Deleted)
	}
	if sawEnd.Load() {
		t.Errorf("the fault server read a complete message; the case did not cut DATA")
	}
	wantDeferred(t, r, "", allIDs(r)...)
	finish(t, r, r.SMTP.Addr)
	return r.Row("smtp/drop-mid-data", 0)
}

// runNoReplyAfterDot: the server takes the message but its reply to the
// final "." comes after the client's timeout: the client must treat it as
// deferred and deliver again later — the one accepted duplicate window.
func runNoReplyAfterDot(t T, o *Options) Row {
	var first atomic.Bool
	slept := make(chan struct{})
	r := smtpRig(t, o, 5, testenv.SMTPScript{OnData: func(_ string, _ []string, data []byte) error {
		if seqOf(data) == 2 && first.CompareAndSwap(false, true) {
			time.Sleep(4 * time.Second) // then accept: the client gave up at 1.5 s
			defer close(slept)
		}
		return nil
	}})
	r.RelayOpts.Timeout = 1500 * time.Millisecond
	r.Settings.DeliveryTimeout = 1500 * time.Millisecond
	res := r.Poll()
	if res.Deferred != 1 {
		t.Errorf("reply after the timeout: deferred %d, want 1", res.Deferred)
	}
	wantDeferred(t, r, "timed out", "seq-2")
	finish(t, r, r.SMTP.Addr)
	select { // the late copy is recorded once OnData returns
	case <-slept:
	case <-time.After(10 * time.Second):
		t.Errorf("the stalled DATA never finished")
	}
	for deadline := time.Now().Add(5 * time.Second); len(r.SMTP.Messages()) < 6 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	row := r.Row("smtp/no-reply-after-dot", 1)
	if row.Duplicates != 1 {
		t.Errorf("%d duplicates, want exactly 1 (the server kept the first copy)", row.Duplicates)
	}
	row.Notes = append(row.Notes, "duplicate window: the server accepted the copy whose reply timed out; redelivered once")
	return row
}

func runDropAfterDot(t T, o *Options) Row {
	var once atomic.Bool
	r := smtpRig(t, o, 5, testenv.SMTPScript{OnData: func(_ string, _ []string, data []byte) error {
		if seqOf(data) == 2 && once.CompareAndSwap(false, true) {
			return testenv.ErrDropConnection
		}
		return nil
	}})
	res := r.Poll()
	if res.Deferred != 1 {
		t.Errorf("hang-up after the final dot: deferred %d, want 1", res.Deferred)
	}
	wantDeferred(t, r, "", "seq-2")
	finish(t, r, r.SMTP.Addr)
	return r.Row("smtp/drop-after-dot", 0)
}

func runTooManyRecipients(t T, o *Options) Row {
	var mu sync.Mutex
	inTx := 0
	script := testenv.SMTPScript{
		OnMail: func(string) error { mu.Lock(); inTx = 0; mu.Unlock(); return nil },
		OnRcpt: func(string) error {
			mu.Lock()
			defer mu.Unlock()
			inTx++
			if inTx > 1 {
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
			}
			return nil
		},
	}
	r := smtpRig(t, o, 4, script, "a@corp.example", "b@corp.example", "c@corp.example")
	// A 452 4.5.3 is a per-transaction cap (Exchange's
	// MaxRecipientsPerMessage), not a failure: the relay sends the rest in
	// further transactions of the same attempt, so one poll delivers every
	// message to all three recipients, one transaction each.
	res := r.Poll()
	if res.Delivered != 4 || res.Deferred != 0 {
		t.Errorf("first poll: delivered %d, deferred %d; want 4 and 0 (the recipients split into transactions of one)", res.Delivered, res.Deferred)
	}
	got := r.SMTP.Messages()
	perMessage := map[string][]string{}
	for _, m := range got {
		if len(m.To) != 1 {
			t.Errorf("a transaction carried %d recipients %v; the server takes one", len(m.To), m.To)
		}
		id := fmt.Sprintf("seq-%d", seqOf(m.Data))
		perMessage[id] = append(perMessage[id], m.To...)
	}
	for _, id := range allIDs(r) {
		if rc := perMessage[id]; len(rc) != 3 {
			t.Errorf("%s: relayed to %v, want each of the 3 recipients once", id, rc)
		}
	}
	if !r.Done() {
		t.Errorf("not done after one poll: last error %v", r.lastErr())
	}
	return r.Row("smtp/452-too-many-recipients", 0)
}

func runTooLarge(t T, o *Options, advertised bool) Row {
	const limit = 20_000
	script := testenv.SMTPScript{}
	if advertised {
		script.MaxMessageBytes = limit
	} else {
		script.OnData = func(_ string, _ []string, data []byte) error {
			if len(data) > limit {
				return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message too big for system"}
			}
			return nil
		}
	}
	r := NewRig(t, o, RigOptions{Script: &script})
	ids, msgs := SeqMessages(1, 4)
	ids = append(ids, "seq-999")
	msgs = append(msgs, BigMessage(999, 60_000))
	r.ServePOP3(ids, msgs, nil)
	r.PollUntilDone(3)
	name := "smtp/552-after-data"
	if advertised {
		name = "smtp/552-size-advertised"
	}
	row := r.Row(name, 0)
	if row.Delivered != 4 || row.Waiting != 1 {
		t.Errorf("delivered %d waiting %d, want 4 and the large one waiting", row.Delivered, row.Waiting)
	}
	for _, rec := range ledgerRecords(t, r) {
		if rec.Size > limit && (!strings.Contains(rec.LastError, "552") || rec.Recipients[0].Status != "rejected") {
			t.Errorf("large message: status %s last error %q, want rejected with 552", rec.Recipients[0].Status, rec.LastError)
		}
	}
	return row
}

// runSTARTTLSNotOffered: TLS is required and the server does not offer
// STARTTLS: nothing but EHLO (and QUIT) may be sent, the password least of
// all.
func runSTARTTLSNotOffered(t T, o *Options) Row {
	r := smtpRig(t, o, 3, testenv.SMTPScript{})
	raw := StartRawSMTP(t, func(c *SMTPConn) {
		c.Reply("220 raw.test ESMTP")
		c.Converse(func(cmd string) bool {
			if strings.HasPrefix(strings.ToUpper(cmd), "EHLO") {
				c.Reply("250-raw.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")
				return true
			}
			return false
		})
	})
	r.SetSMTPAddr(raw.Addr)
	r.RelayOpts.TLS = tlsmode.StartTLS
	r.RelayOpts.Auth = &relay.AuthConfig{Mechanism: "plain", Username: smtpUser}
	r.RelayPass = secretFunc(smtpSecret)
	res := r.Poll()
	for _, l := range raw.Lines() {
		verb := strings.ToUpper(strings.SplitN(l, " ", 2)[0])
		if verb != "EHLO" && verb != "QUIT" {
			t.Errorf("sent in plaintext although STARTTLS was required: %q", l)
		}
	}
	if res.Deferred != 3 || res.Deleted != 0 {
		t.Errorf("no STARTTLS: deferred %d deleted %d, want 3 and 0", res.Deferred, res.Deleted)
	}
	wantDeferred(t, r, "STARTTLS", allIDs(r)...)
	row := r.Row("smtp/starttls-not-offered", 0)
	row.Notes = append(row.Notes, "reason: "+firstRecordError(t, r))
	return row
}

func runUntrustedCertificate(t T, o *Options) Row {
	serverCA := testenv.NewCA(t)
	otherCA := testenv.NewCA(t)
	var mails atomic.Int32
	r := smtpRig(t, o, 3, testenv.SMTPScript{TLS: serverCA, OnMail: func(string) error { mails.Add(1); return nil }})
	r.RelayOpts.TLS = tlsmode.StartTLS
	r.RelayOpts.TLSConfig = &tls.Config{RootCAs: otherCA.Pool}
	r.RelayOpts.ServerName = "localhost"
	res := r.Poll()
	if mails.Load() != 0 {
		t.Errorf("MAIL sent over a connection whose certificate did not verify")
	}
	if res.Deferred != 3 {
		t.Errorf("untrusted certificate: deferred %d, want 3", res.Deferred)
	}
	wantDeferred(t, r, "certificate", allIDs(r)...)
	reason := firstRecordError(t, r)
	// With the right CA the same server works, over TLS.
	r.RelayOpts.TLSConfig = &tls.Config{RootCAs: serverCA.Pool}
	finish(t, r, r.SMTP.Addr)
	for _, tx := range r.SMTP.Transactions() {
		if !tx.TLS {
			t.Errorf("a message was accepted outside TLS")
		}
	}
	row := r.Row("smtp/untrusted-certificate", 0)
	row.Notes = append(row.Notes, "reason: "+reason)
	return row
}

func firstRecordError(t T, r *Rig) string {
	for _, rec := range ledgerRecords(t, r) {
		if rec.LastError != "" {
			return rec.LastError
		}
	}
	return ""
}

// BigMessage returns a generated message of about size bytes with
// X-Test-Seq seq.
func BigMessage(seq, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: big-%d@isp.example\r\nTo: sales@isp.example\r\nSubject: large message %d\r\nMessage-ID: <big-%d@isp.example>\r\nX-Test-Seq: %d\r\n\r\n", seq, seq, seq, seq)
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%08d %s\r\n", i, strings.Repeat("abcdefghij", 7))
	}
	return []byte(b.String())
}

func secretFunc(s string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return s, nil }
}
