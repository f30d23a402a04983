package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/notify"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
)

// exchangeAddresses are the addresses the relay test asks Exchange about:
// deliver_to of individual mailboxes, and postmaster@ each local domain of
// global mailboxes (plus their fallback), in configuration order, once each.
func exchangeAddresses(cfg *config.Config) []string {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if k := strings.ToLower(a); a != "" && !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	for _, m := range cfg.Mailboxes {
		if !m.Enabled {
			continue
		}
		for _, a := range m.DeliverTo {
			add(a)
		}
		if m.Type == config.MailboxGlobal && m.Global != nil {
			for _, d := range m.Global.LocalDomains {
				add("postmaster@" + strings.TrimSuffix(strings.ToLower(d), "."))
			}
			add(m.Global.Fallback)
		}
	}
	return out
}

// routingCommand parses the flags of a command that talks to the delivery
// routes (--config, --timeout) and builds the routing table. A nil config
// means the command ends with the returned exit code.
func routingCommand(name string, args []string, defTimeout time.Duration, timeoutHelp string, stderr io.Writer) (*config.Config, *app.Routing, time.Duration, int) {
	fs, path := newFlags(name, stderr)
	timeout := fs.Duration("timeout", defTimeout, timeoutHelp)
	if err := fs.Parse(args); err != nil {
		return nil, nil, 0, 2
	}
	cfg, code := loadConfig(*path, stderr)
	if cfg == nil {
		return nil, nil, 0, code
	}
	routing, err := app.NewRouting(cfg, config.NewSecrets())
	if err != nil {
		fmt.Fprintf(stderr, "popconn: %v\n", err)
		return nil, nil, 0, 2
	}
	return cfg, routing, *timeout, 0
}

// testRelayCmd is seed 000's relay test: for every route, connect,
// STARTTLS, EHLO, AUTH, MAIL FROM the postmaster, RCPT TO each configured
// Exchange address the route serves, RSET, QUIT. No message is sent.
func testRelayCmd(args []string, stdout, stderr io.Writer) int {
	cfg, routing, timeout, code := routingCommand("test-relay", args, 30*time.Second, "limit for each route's test", stderr)
	if cfg == nil {
		return code
	}
	addrs := exchangeAddresses(cfg)
	failures := 0
	for _, rt := range routing.Table.Routes() {
		var to []string
		for _, a := range addrs {
			if slices.ContainsFunc(routing.Table.Candidates(a), func(c route.Route) bool { return c.Name == rt.Name }) {
				to = append(to, a)
			}
		}
		opts, _ := routing.Options(rt.Name)
		fmt.Fprintf(stdout, "route %s: %s, tls %s, address spaces %s, cost %d\n", rt.Name, rt.Addr(), opts.TLS, strings.Join(rt.AddressSpaces, " "), rt.Cost)
		failures += testRoute(routing, rt, opts, cfg.Postmaster, to, timeout, stdout)
	}
	if failures > 0 {
		fmt.Fprintf(stdout, "\nrelay test FAILED (%d problem(s)). Messages may appear to be delivered, but some would be left on the POP3 server; fix the causes above and run the test again.\n", failures)
		return 1
	}
	fmt.Fprintln(stdout, "\nrelay test passed: every route accepted every configured address.")
	return 0
}

func testRoute(routing *app.Routing, rt route.Route, opts relay.Options, postmaster string, to []string, timeout time.Duration, w io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := routing.Dial(ctx, rt)
	if err != nil {
		e := relay.AsError(err)
		fmt.Fprintf(w, "  %s: FAILED: %v\n", stepName(e.Op), e)
		explain(w, e, rt, "")
		return 1
	}
	defer func() {
		if err := c.Quit(); err != nil {
			c.Close()
		}
	}()
	tlsState := "no TLS"
	if c.TLS() {
		tlsState = "TLS verified"
		if opts.TLSConfig != nil && opts.TLSConfig.InsecureSkipVerify {
			tlsState = "TLS (certificate NOT verified: verify_certificate is false)"
		}
	}
	auth := "no AUTH configured"
	if opts.Auth != nil {
		auth = "AUTH " + strings.ToUpper(opts.Auth.Mechanism) + " accepted"
	}
	size := ""
	if n := c.MaxSize(); n > 0 {
		size = fmt.Sprintf(", message size limit %d bytes", n)
	}
	fmt.Fprintf(w, "  connect, EHLO: OK (%s; %s%s; transactions: %s)\n", tlsState, auth, size, transactionMode(c.Pipelining()))
	if len(to) == 0 {
		fmt.Fprintln(w, "  no configured Exchange address is routed here; nothing to check")
		return 0
	}
	outs, err := c.Verify(ctx, postmaster, to)
	failures := 0
	for i, a := range to {
		var e *relay.Error
		if i < len(outs) {
			e = outs[i].Err
		} else {
			e = relay.AsError(err)
		}
		if e == nil {
			fmt.Fprintf(w, "  RCPT TO:<%s>: OK\n", a)
			continue
		}
		failures++
		fmt.Fprintf(w, "  RCPT TO:<%s>: FAILED: %v\n", a, e)
		explain(w, e, rt, a)
	}
	return failures
}

func stepName(op string) string {
	switch op {
	case "connect":
		return "connect"
	case "tls":
		return "STARTTLS/TLS"
	case "ehlo":
		return "EHLO"
	case "auth":
		return "AUTH"
	case "mail":
		return "MAIL FROM"
	case "rcpt":
		return "RCPT TO"
	}
	return "SMTP"
}

// explain prints the cause and the fix of a known failure, in Exchange
// administrator's terms.
func explain(w io.Writer, e *relay.Error, rt route.Route, rcpt string) {
	msg := strings.ToLower(e.Message + " " + e.Error())
	domain := rcpt[strings.LastIndexByte(rcpt, '@')+1:]
	var cause, fix string
	switch {
	case e.Op == "connect" && e.Code == 0:
		cause = "nothing accepted an SMTP connection at " + rt.Addr() + " (refused, filtered or timed out)"
		fix = "check the host name and port: the port is the binding of the Exchange receive connector (25 by default); check firewalls between this host and Exchange"
	case strings.Contains(msg, "does not match the server name"):
		cause = "the certificate of the receive connector names another host than " + rt.Host
		fix = "set server_name to the name in the certificate (the receive connector's FQDN setting), or connect by that name"
	case strings.Contains(msg, "certificate"):
		cause = "the receive connector's certificate is not trusted by this host"
		fix = "give the issuing (internal) CA in ca_file, or assign a certificate from a trusted CA to the receive connector"
	case strings.Contains(msg, "does not offer starttls"):
		cause = "the receive connector does not offer STARTTLS (TLS is not enabled or no certificate is assigned)"
		fix = "enable TLS on the receive connector (Authentication: Transport Layer Security) and assign a certificate; only on a trusted network, set tls: opportunistic or none"
	case strings.Contains(msg, "must issue a starttls"):
		cause = "the receive connector requires TLS before MAIL"
		fix = "set tls: starttls for this route"
	case e.Op == "auth" || e.Code == 535 || e.Code == 530 || strings.Contains(msg, "authentication"):
		cause = "the receive connector refused the credentials, does not offer AUTH, or requires authentication that is not configured"
		fix = "check auth.username and the password reference; on the receive connector enable Basic authentication (offered after TLS) and the Exchange users permission group, or allow this host anonymously"
	case notify.Classify(e) == notify.CauseRelayDenied:
		cause = fmt.Sprintf("Exchange will not accept mail for %s from this connector: %s is not an accepted domain (Exchange 2000/2003: no recipient policy for it, KB 325464), or the receive connector does not allow this host to submit or relay", rcpt, domain)
		fix = fmt.Sprintf("add %s as an accepted domain (recipient policy), or grant this host relay permission on the receive connector (its remote IP range with Anonymous users / Externally secured)", domain)
	case notify.Classify(e) == notify.CauseUnknownRecipient:
		cause = "Exchange has no recipient with the address " + rcpt
		fix = "add the address as an e-mail address (proxy address) of the Exchange recipient, or correct deliver_to / the global mailbox's local domains"
	case e.Code == 552 || e.Enhanced == "5.3.4":
		cause = "the message size limit of the receive connector is too small"
		fix = "raise the receive connector's maximum message size"
	default:
		return
	}
	fmt.Fprintf(w, "    cause: %s\n    fix:   %s\n", cause, fix)
}

// testNotifyCmd sends notify.TestMessage to the notify address through
// the route that serves it (POPcon's "Test settings (email to
// postmaster)").
func testNotifyCmd(args []string, stdout, stderr io.Writer) int {
	cfg, routing, timeout, code := routingCommand("test-notify", args, 60*time.Second, "limit for the test", stderr)
	if cfg == nil {
		return code
	}
	to := cfg.Notify.To
	if to == "" {
		to = cfg.Postmaster
	}
	host := cfg.Delivery.HELODomain
	if host == "" {
		host, _ = os.Hostname()
	}
	onOff := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	settings := []string{
		"notify on spam: " + onOff(cfg.Notify.Spam),
		"notify on unknown recipient: " + onOff(cfg.Notify.UnknownRecipient),
		"notify on badmail: " + onOff(cfg.Notify.Badmail),
		"notify on relay denied: " + onOff(cfg.Notify.RelayDenied),
	}
	for _, r := range app.ConfigRoutes(cfg) {
		settings = append(settings, fmt.Sprintf("route %s: %s (tls %s), address spaces %s, cost %d", r.Name, r.Addr(), r.TLS, strings.Join(r.AddressSpaces, " "), r.Cost))
	}
	var body bytes.Buffer
	if err := notify.TestMessage(&body, notify.TestNotice{From: cfg.Postmaster, To: to, ReportingMTA: host, Now: time.Now(), Settings: settings}); err != nil {
		fmt.Fprintf(stderr, "popconn: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	candidates := routing.Table.Candidates(to)
	if len(candidates) == 0 {
		fmt.Fprintf(stdout, "test notification to %s: FAILED: no route's address space serves %s\n", to, to)
		return 1
	}
	var last error
	for _, rt := range candidates {
		c, err := routing.Dial(ctx, rt)
		if err != nil {
			e := relay.AsError(err)
			fmt.Fprintf(stdout, "route %s (%s): %s FAILED: %v\n", rt.Name, rt.Addr(), stepName(e.Op), e)
			explain(stdout, e, rt, to)
			last = e
			continue
		}
		outs, err := c.Send(ctx, relay.Envelope{From: "", To: []string{to}, Size: int64(body.Len())}, bytes.NewReader(body.Bytes()))
		if qerr := c.Quit(); qerr != nil {
			c.Close()
		}
		switch {
		case len(outs) == 1 && outs[0].Err == nil && err == nil:
			fmt.Fprintf(stdout, "test notification to %s accepted by route %s (%s): %s\n", to, rt.Name, rt.Addr(), outs[0].Reply)
			return 0
		case len(outs) == 1 && outs[0].Err != nil:
			err = outs[0].Err
		}
		e := relay.AsError(orNoOutcome(err))
		fmt.Fprintf(stdout, "test notification to %s via route %s (%s): FAILED: %v\n", to, rt.Name, rt.Addr(), e)
		explain(stdout, e, rt, to)
		return 1
	}
	fmt.Fprintf(stdout, "test notification to %s: FAILED: no route could be reached (last error: %v)\n", to, last)
	return 1
}

func orNoOutcome(err error) error {
	if err == nil {
		return errors.New("no outcome from the SMTP server")
	}
	return err
}

// transactionMode says in words how messages are sent on a connection
// (relay.Client.Pipelining).
func transactionMode(mode string) string {
	switch mode {
	case "chunking":
		return "PIPELINING with CHUNKING (BDAT)"
	case "pipelining":
		return "PIPELINING"
	}
	return "one command at a time"
}
