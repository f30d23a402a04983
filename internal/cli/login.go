package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/relay"
)

// testLoginCmd tests each enabled mailbox's POP3 account (or the one
// --mailbox names): connect, TLS, CAPA, sign-in and STAT, then QUIT. It
// never sends RETR or DELE. Each failure is printed with its cause and a
// fix, as test-relay does for Exchange.
func testLoginCmd(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("test-login", stderr)
	only := fs.String("mailbox", "", "test only the mailbox with this id")
	timeout := fs.Duration("timeout", 30*time.Second, "limit for each mailbox's test")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, code := loadConfig(*path, stderr)
	if cfg == nil {
		return code
	}
	var boxes []config.Mailbox
	for _, m := range cfg.Mailboxes {
		if *only != "" && m.ID == *only || *only == "" && m.Enabled {
			boxes = append(boxes, m)
		}
	}
	if len(boxes) == 0 {
		if *only != "" {
			fmt.Fprintf(stderr, "popconn: no mailbox %q in %s\n", *only, *path)
		} else {
			fmt.Fprintf(stderr, "popconn: no enabled mailbox in %s\n", *path)
		}
		return 2
	}
	secrets := config.NewSecrets()
	failures := 0
	for _, m := range boxes {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		p := app.ProbeMailbox(ctx, m, secrets)
		cancel()
		printProbe(stdout, m, p)
		if p.Failed != "" {
			failures++
		}
	}
	if failures > 0 {
		fmt.Fprintf(stdout, "\nlogin test FAILED for %d of %d mailbox(es); nothing was fetched or deleted. Fix the causes above and run the test again.\n", failures, len(boxes))
		return 1
	}
	fmt.Fprintf(stdout, "\nlogin test passed for %d mailbox(es); nothing was fetched or deleted.\n", len(boxes))
	return 0
}

func printProbe(w io.Writer, m config.Mailbox, p app.Probe) {
	fmt.Fprintf(w, "mailbox %s: %s, tls %s, user %s, sign-in %s\n", m.ID, m.Server, m.TLS, m.Username, p.Mechanism)
	if p.Failed == app.ProbeSecret {
		fmt.Fprintf(w, "  password: FAILED: %v\n", p.Err)
		explainPOP3(w, m, p)
		return
	}
	if p.Failed == app.ProbeConnect {
		fmt.Fprintf(w, "  connect: FAILED: %v\n", p.Err)
		explainPOP3(w, m, p)
		return
	}
	tlsState := "no TLS"
	if p.TLS != nil {
		tlsState = tls.VersionName(p.TLS.Version) + ", certificate verified"
		if !p.Verified {
			tlsState = tls.VersionName(p.TLS.Version) + ", certificate NOT verified (verify_certificate is false)"
		}
	}
	fmt.Fprintf(w, "  connect: OK (%s; greeting %q)\n", tlsState, p.Greeting)
	fmt.Fprintf(w, "  CAPA: %s\n", capaLine(p.Capabilities))
	if p.Failed == app.ProbeLogin {
		fmt.Fprintf(w, "  login: FAILED: %v\n", p.Err)
		explainPOP3(w, m, p)
		return
	}
	fmt.Fprintln(w, "  login: OK")
	if p.Failed == app.ProbeStat {
		fmt.Fprintf(w, "  STAT: FAILED: %v\n", p.Err)
		explainPOP3(w, m, p)
		return
	}
	fmt.Fprintf(w, "  STAT: OK, %d message(s), %d bytes on the server\n", p.Count, p.Size)
	if len(p.Capabilities) > 0 {
		if _, ok := p.Capabilities["UIDL"]; !ok {
			fmt.Fprintln(w, "  note:  the server does not list UIDL in CAPA; popconn needs UIDL and will refuse the mailbox if UIDL fails at the first poll")
		}
	}
}

// capaLine lists the capabilities, SASL with its mechanisms.
func capaLine(caps map[string][]string) string {
	if len(caps) == 0 {
		return "not answered (the server does not support CAPA)"
	}
	var names []string
	for k, v := range caps {
		if len(v) > 0 && (k == "SASL" || k == "IMPLEMENTATION") {
			k += " " + strings.Join(v, " ")
		}
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// explainPOP3 prints the cause and the fix of a known POP3 failure, in
// the terms of an administrator setting up an ISP account.
func explainPOP3(w io.Writer, m config.Mailbox, p app.Probe) {
	err := p.Err
	host, port, _ := net.SplitHostPort(m.Server)
	var (
		pe        *pop3.Error
		unknownCA x509.UnknownAuthorityError
		header    tls.RecordHeaderError
		dns       *net.DNSError
	)
	var cause, fix string
	switch {
	case p.Failed == app.ProbeSecret && errors.Is(err, config.ErrNotReference):
		cause = "the password setting is not a secret reference"
		fix = "put the password in an environment variable or a file and write env:NAME or file:/path (see check-config)"
	case p.Failed == app.ProbeSecret:
		cause = "the password (or OAuth secret) could not be read"
		fix = "set the environment variable or create the file the reference names, readable only by the user popconn runs as; check-config lists every reference"
	case errors.Is(err, pop3.ErrPlaintextRefused):
		cause = "popconn will not send the password over an unencrypted connection"
		fix = "use tls: implicit (port 995) or tls: starttls (port 110 with STLS); only on a trusted network set allow_plaintext_auth: true"
	case errors.Is(err, pop3.ErrNoSTLS):
		cause = "the server at " + m.Server + " does not offer STLS, so TLS cannot start on this port"
		fix = "use tls: implicit with port 995 if the provider offers POP3S; popconn never falls back to plaintext"
	case errors.Is(err, pop3.ErrMechanismNotOffered):
		cause = "the server does not offer the configured sign-in mechanism (" + p.Mechanism + ")"
		fix = "set auth_mechanism to one the server lists in CAPA (auto picks AUTH PLAIN, else USER/PASS)"
	case relay.CertificateMismatch(err) != nil:
		mm := relay.CertificateMismatch(err)
		cause = fmt.Sprintf("the server's certificate is for %s, not for %s, the name checked", mm.Names(), mm.Checked)
		fix = "set server to the name in the certificate (providers often use one host name for all customers), or server_name to it"
	case errors.As(err, &unknownCA):
		cause = "the server's certificate is not signed by an authority this host trusts (self-signed or a private CA)"
		fix = "give the issuing CA in ca_file; turn verify_certificate off only on a network you control"
	case errors.As(err, &header):
		cause = "the server did not answer TLS on port " + port
		fix = "port 995 is tls: implicit; port 110 is tls: starttls (or none on a trusted network)"
	case errors.As(err, &dns):
		cause = "the host name " + host + " does not resolve"
		fix = "check the spelling of server, and DNS on this host"
	case p.Failed == app.ProbeConnect && isRefusedOrTimeout(err):
		cause = "nothing accepted a POP3 connection at " + m.Server + " (refused, filtered or timed out)"
		fix = "check server and port (995 for POP3S, 110 for POP3 with STLS) and the firewalls between this host and the provider"
	case errors.As(err, &pe) && pe.Code == "IN-USE":
		cause = "another POP3 client holds the mailbox (the server locks it while a session is open)"
		fix = "stop the other client for this account (fetchmail, Outlook, a phone); popconn retries at the next poll"
	case errors.As(err, &pe) && pe.Code == "LOGIN-DELAY":
		cause = "the provider allows a login only every few minutes"
		fix = "raise poll_interval above the provider's login delay"
	case errors.Is(err, pop3.ErrAuth):
		cause = "the server refused the user name or the password"
		fix = "check username (often the whole address) and the password the reference gives; some providers need an app password, or POP3 enabled in their webmail settings"
	default:
		return
	}
	fmt.Fprintf(w, "    cause: %s\n    fix:   %s\n", cause, fix)
}

func isRefusedOrTimeout(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded)
}
