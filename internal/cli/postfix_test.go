package cli_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/cli"
	"github.com/popconnector/popconnector/internal/testenv"
)

// exchange is a real MTA standing in for the Exchange receive connector:
// corp.example is its accepted domain, and it knows only the addresses
// below. One instance serves every test of the package; TestMain gives
// it the CA.
var exchange = &testenv.SharedPostfix{Options: testenv.PostfixOptions{
	Recipients: []string{"sales@corp.example", "postmaster@corp.example", "mailadmin@corp.example"},
	Listeners: []testenv.PostfixListener{
		{Name: "require-tls", RequireTLS: true},
		{Name: "other-name", RequireTLS: true, CertHosts: []string{"mail.other.example"}},
	},
}}

func TestMain(m *testing.M) {
	var caSession testenv.Session
	caSession.Name = "cli tests"
	if err := testenv.Guard(func() { exchange.Options.TLS = testenv.NewCA(&caSession) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	exchange.Close()
	caSession.Close()
	os.Exit(code)
}

// relayConfig writes a configuration whose only route is addr with the
// given route settings, and one mailbox per deliver_to address.
func relayConfig(t *testing.T, addr, routeSettings, extra string, deliverTo ...string) string {
	t.Helper()
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	var b strings.Builder
	fmt.Fprintf(&b, "postmaster: postmaster@corp.example\ndelivery: {host: localhost, port: %s, %s}\n%smailboxes:\n", port, routeSettings, extra)
	for i, a := range deliverTo {
		fmt.Fprintf(&b, "  - {id: mb%d, server: pop.isp.example, username: u%d, password: \"env:CLI_TEST_UNUSED\", deliver_to: [%s]}\n", i, i, a)
	}
	return writeConfig(t, t.TempDir(), b.String())
}

func runCLI(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := cli.Main(args, &out, &errb); code != wantCode {
		t.Fatalf("%s: exit %d, want %d\n%s\n%s", args[0], code, wantCode, out.String(), errb.String())
	}
	return out.String()
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// test-relay against Postfix's own replies: an accepted-domain recipient
// passes; a domain it does not accept gets "554 5.7.1 Relay access
// denied" and an unknown local user "550 5.1.1", each explained in
// Exchange terms, and the exit status is 1.
func TestTestRelayPostfixRefusals(t *testing.T) {
	pf := exchange.Get(t)
	ca := fmt.Sprintf("tls: starttls, ca_file: %s", pf.CA.CertFile)
	cfg := relayConfig(t, pf.Addr, ca, "", "sales@corp.example", "orders@other.example", "nobody@corp.example")
	out := runCLI(t, 1, "test-relay", "--config", cfg)
	wantLines(t, out,
		"connect, EHLO: OK (TLS verified; no AUTH configured, message size limit 10240000 bytes; transactions: PIPELINING with CHUNKING (BDAT))",
		"RCPT TO:<sales@corp.example>: OK",
		"RCPT TO:<orders@other.example>: FAILED: smtp rcpt: 554 5.7.1 <orders@other.example>: Relay access denied",
		"cause: Exchange will not accept mail for orders@other.example from this connector: other.example is not an accepted domain",
		"fix:   add other.example as an accepted domain (recipient policy), or grant this host relay permission on the receive connector",
		"RCPT TO:<nobody@corp.example>: FAILED: smtp rcpt: 550 5.1.1 <nobody@corp.example>: Recipient address rejected: User unknown in virtual mailbox table",
		"cause: Exchange has no recipient with the address nobody@corp.example",
		"relay test FAILED (2 problem(s))",
	)
	if n := len(pf.Messages(t, "sales@corp.example")); n != 0 {
		t.Errorf("the relay test delivered %d messages, want none", n)
	}
}

// A receive connector that requires TLS: the test passes with STARTTLS
// verified against the CA, fails with TLS off (530 before MAIL, explained),
// and reports a certificate that names another host.
func TestTestRelayPostfixTLS(t *testing.T) {
	pf := exchange.Get(t)
	ca := fmt.Sprintf("tls: starttls, ca_file: %s", pf.CA.CertFile)
	t.Run("required and verified", func(t *testing.T) {
		out := runCLI(t, 0, "test-relay", "--config", relayConfig(t, pf.ListenerAddr(t, "require-tls"), ca, "", "sales@corp.example"))
		wantLines(t, out, "connect, EHLO: OK (TLS verified", "RCPT TO:<sales@corp.example>: OK", "relay test passed")
	})
	t.Run("required but off", func(t *testing.T) {
		out := runCLI(t, 1, "test-relay", "--config", relayConfig(t, pf.ListenerAddr(t, "require-tls"), "tls: none", "", "sales@corp.example"))
		// The 530 answers MAIL FROM: it is reported on that line, once.
		wantLines(t, out, "MAIL FROM:<postmaster@corp.example>: FAILED: smtp mail: 530 5.7.0 Must issue a STARTTLS command first",
			"cause: the receive connector requires TLS before MAIL", "fix:   set tls: starttls for this route")
		if strings.Contains(out, "RCPT TO:") {
			t.Errorf("a MAIL FROM refusal is reported on an RCPT TO line:\n%s", out)
		}
	})
	t.Run("certificate names another host", func(t *testing.T) {
		out := runCLI(t, 1, "test-relay", "--config", relayConfig(t, pf.ListenerAddr(t, "other-name"), ca, "", "sales@corp.example"))
		wantLines(t, out, "STARTTLS/TLS: FAILED:", "TLS certificate does not match the server name localhost: it is for mail.other.example",
			"cause: the certificate of the receive connector is for mail.other.example, not for localhost, the name checked",
			"fix:   set server_name to one of the names in the certificate")
		if strings.Contains(out, "ServerName") {
			t.Errorf("the hint names a Go field:\n%s", out)
		}
		// The fix the output gives works.
		out = runCLI(t, 0, "test-relay", "--config", relayConfig(t, pf.ListenerAddr(t, "other-name"), ca+", server_name: mail.other.example", "", "sales@corp.example"))
		wantLines(t, out, "connect, EHLO: OK (TLS verified", "relay test passed")
	})
}

// A contoso route for the accepted domain and a "*" failover route to a
// server that refuses to relay (a common layout: the failover is an
// Internet smart host). Delivery uses the first route, so the layout
// passes; the failover's refusal is shown as a warning naming the first
// route, not counted.
func TestTestRelayFailoverRoute(t *testing.T) {
	pf := exchange.Get(t)
	refusing := testenv.StartScriptedSMTP(t, testenv.SMTPScript{OnRcpt: func(to string) error {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
	}})
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`postmaster: postmaster@corp.example
routes:
  - {name: contoso, host: localhost, port: %s, tls: starttls, ca_file: %s, address_spaces: [corp.example]}
  - {name: internet, host: 127.0.0.1, port: %s, tls: none, address_spaces: ["*"], cost: 5}
mailboxes:
  - {id: sales, server: pop.isp.example, username: sales, password: "env:CLI_TEST_UNUSED", deliver_to: [sales@corp.example]}
`, port(pf.Addr), pf.CA.CertFile, port(refusing.Addr)))
	out := runCLI(t, 0, "test-relay", "--config", cfg)
	wantLines(t, out,
		"route contoso: localhost:",
		"RCPT TO:<sales@corp.example>: OK",
		"route internet: 127.0.0.1:",
		"RCPT TO:<sales@corp.example> (failover; first route contoso): WARNING, refused: smtp rcpt: 554 5.7.1",
		"note:  this route is used for sales@corp.example only while route contoso cannot be reached",
		"relay test passed",
	)
	// The same refusal on the first route fails the test.
	cfg = writeConfig(t, t.TempDir(), fmt.Sprintf(`postmaster: postmaster@corp.example
routes:
  - {name: internet, host: 127.0.0.1, port: %s, tls: none, address_spaces: ["*"]}
mailboxes:
  - {id: sales, server: pop.isp.example, username: sales, password: "env:CLI_TEST_UNUSED", deliver_to: [sales@corp.example]}
`, port(refusing.Addr)))
	out = runCLI(t, 1, "test-relay", "--config", cfg)
	wantLines(t, out, "RCPT TO:<sales@corp.example>: FAILED: smtp rcpt: 554 5.7.1", "relay test FAILED (1 problem(s))")
}

// test-notify through Postfix: the test message arrives in the notify
// address's Maildir, from the null sender, and parses.
func TestTestNotifyPostfix(t *testing.T) {
	pf := exchange.Get(t)
	ca := fmt.Sprintf("tls: starttls, ca_file: %s", pf.CA.CertFile)
	cfg := relayConfig(t, pf.Addr, ca, "notify: {to: mailadmin@corp.example}\n", "sales@corp.example")
	out := runCLI(t, 0, "test-notify", "--config", cfg)
	// Postfix's reply names the queue id ("queued as", and the size over BDAT).
	wantLines(t, out, "test notification to mailadmin@corp.example accepted by route delivery", ": 2.0.0 Ok: ", " queued as ")
	got := pf.Messages(t, "mailadmin@corp.example")
	if len(got) != 1 {
		t.Fatalf("%d messages in the Maildir of mailadmin@corp.example, want 1", len(got))
	}
	if got[0].ReturnPath != "" {
		t.Errorf("Return-Path %q, want the null sender", got[0].ReturnPath)
	}
	e, err := gomessage.Read(bytes.NewReader(got[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	if e.Header.Get("X-Popconn-Notice") != "test" || !strings.HasPrefix(e.Header.Get("Subject"), "popconnector test notification") ||
		e.Header.Get("Delivered-To") != "mailadmin@corp.example" || e.Header.Get("Auto-Submitted") == "" {
		t.Errorf("header %v", e.Header)
	}
	if to := e.Header.Get("To"); !strings.Contains(to, "mailadmin@corp.example") {
		t.Errorf("To %q", to)
	}
	body, _ := io.ReadAll(e.Body)
	wantLines(t, string(body), "notify on badmail: yes", "route delivery: localhost:")
}
