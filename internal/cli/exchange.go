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
		// An address is tested as delivery would use it: on its first
		// route (the closest address space, then the lowest cost), where
		// a refusal is a failure. A route it would fail over to is tested
		// too, but a refusal there is a warning: that route is used only
		// while the first one cannot be reached, and a "*" failover route
		// to another server may rightly refuse to relay for the domain.
		var first, failover []string
		primary := map[string]string{}
		for _, a := range addrs {
			cands := routing.Table.Candidates(a)
			switch i := slices.IndexFunc(cands, func(c route.Route) bool { return c.Name == rt.Name }); {
			case i == 0:
				first = append(first, a)
			case i > 0:
				failover = append(failover, a)
				primary[a] = cands[0].Name
			}
		}
		opts, _ := routing.Options(rt.Name)
		fmt.Fprintf(stdout, "route %s: %s, tls %s, address spaces %s, cost %d\n", rt.Name, rt.Addr(), opts.TLS, strings.Join(rt.AddressSpaces, " "), rt.Cost)
		failures += testRoute(routing, rt, opts, cfg.Postmaster, first, failover, primary, timeout, stdout)
	}
	if failures > 0 {
		fmt.Fprintf(stdout, "\nrelay test FAILED (%d problem(s)). Messages may appear to be delivered, but some would be left on the POP3 server; fix the causes above and run the test again.\n", failures)
		return 1
	}
	fmt.Fprintln(stdout, "\nrelay test passed: every route accepted every configured address.")
	return 0
}

// testRoute tests one route: connect, TLS, EHLO, AUTH, then the
// addresses it is the first route for (each refusal counts) and those it
// is a failover route for (a refusal is only a warning). It returns the
// number of failures.
func testRoute(routing *app.Routing, rt route.Route, opts relay.Options, postmaster string, first, failover []string, primary map[string]string, timeout time.Duration, w io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := routing.Dial(ctx, rt)
	if err != nil {
		e := relay.AsError(err)
		fmt.Fprintf(w, "  %s: FAILED: %v\n", stepName(e.Op), e)
		explain(w, e, rt, opts, "")
		if len(first) == 0 {
			// Only a failover route: mail does not depend on it while the
			// first routes answer.
			fmt.Fprintln(w, "    (this route is only a failover for the addresses it serves: not counted as a failure)")
			return 0
		}
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
	if len(first)+len(failover) == 0 {
		fmt.Fprintln(w, "  no configured Exchange address is routed here; nothing to check")
		return 0
	}
	failures := 0
	if len(first) > 0 {
		failures += verifyAddresses(ctx, c, rt, opts, postmaster, first, nil, w)
	}
	if len(failover) > 0 {
		verifyAddresses(ctx, c, rt, opts, postmaster, failover, primary, w)
	}
	return failures
}

// verifyAddresses asks the server about each of to in one transaction
// (MAIL, RCPT each, RSET) and prints one line per address, or one line
// for a MAIL FROM refusal, with the cause and fix of a known failure. With
// primary set, the addresses are failover ones: a refusal is printed as a
// warning naming the route used first. It returns the failures to count.
func verifyAddresses(ctx context.Context, c *relay.Client, rt route.Route, opts relay.Options, postmaster string, to []string, primary map[string]string, w io.Writer) int {
	outs, err := c.Verify(ctx, postmaster, to)
	label := func(a string) string {
		if primary == nil {
			return fmt.Sprintf("RCPT TO:<%s>", a)
		}
		return fmt.Sprintf("RCPT TO:<%s> (failover; first route %s)", a, primary[a])
	}
	failed := "FAILED"
	if primary != nil {
		failed = "WARNING, refused"
	}
	if e := beforeRcpt(outs, err); e != nil {
		// The transaction failed before any RCPT (MAIL FROM refused, the
		// connection lost): one line for it, not one per address.
		fmt.Fprintf(w, "  %s:<%s>: %s: %v\n", stepName(e.Op), postmaster, failed, e)
		explain(w, e, rt, opts, "")
		if primary != nil {
			return 0
		}
		return len(to)
	}
	failures := 0
	for i, a := range to {
		var e *relay.Error
		if i < len(outs) {
			e = outs[i].Err
		} else {
			e = relay.AsError(err)
		}
		if e == nil {
			fmt.Fprintf(w, "  %s: OK\n", label(a))
			continue
		}
		fmt.Fprintf(w, "  %s: %s: %v\n", label(a), failed, e)
		explain(w, e, rt, opts, a)
		if primary != nil {
			fmt.Fprintf(w, "    note:  this route is used for %s only while route %s cannot be reached; then the message would wait or be refused\n", a, primary[a])
			continue
		}
		failures++
	}
	return failures
}

// beforeRcpt returns the error of a verification that failed before any
// recipient was asked about: no outcome at all, or the same MAIL FROM
// refusal for every recipient. Nil otherwise.
func beforeRcpt(outs []relay.Outcome, err error) *relay.Error {
	if len(outs) == 0 {
		if e := relay.AsError(err); err != nil && e.Op != "rcpt" {
			return e
		}
		return nil
	}
	for _, o := range outs {
		if o.Err == nil || o.Err.Op != "mail" {
			return nil
		}
	}
	return outs[0].Err
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
func explain(w io.Writer, e *relay.Error, rt route.Route, opts relay.Options, rcpt string) {
	msg := strings.ToLower(e.Message + " " + e.Error())
	domain := rcpt[strings.LastIndexByte(rcpt, '@')+1:]
	var cause, fix string
	switch {
	case e.Op == "connect" && e.Code == 0:
		cause = "nothing accepted an SMTP connection at " + rt.Addr() + " (refused, filtered or timed out)"
		fix = "check the host name and port: the port is the binding of the Exchange receive connector (25 by default); check firewalls between this host and Exchange"
	case relay.CertificateMismatch(e) != nil:
		m := relay.CertificateMismatch(e)
		cause = fmt.Sprintf("the certificate of the receive connector is for %s, not for %s, the name checked", m.Names(), m.Checked)
		fix = "set server_name to one of the names in the certificate (the receive connector's FQDN setting), or connect by that name"
		if opts.ServerName != "" {
			fix = "server_name is " + opts.ServerName + ": set it to one of the names in the certificate (the receive connector's FQDN setting)"
		}
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
			opts, _ := routing.Options(rt.Name)
			explain(stdout, e, rt, opts, to)
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
		opts, _ := routing.Options(rt.Name)
		explain(stdout, e, rt, opts, to)
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
