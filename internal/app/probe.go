package app

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"

	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/pop3"
)

// ProbeStep names a step of a login test, in the order they run.
type ProbeStep string

const (
	ProbeSecret  ProbeStep = "secret"  // resolving the password or the OAuth token
	ProbeConnect ProbeStep = "connect" // TCP, TLS (implicit or STLS), greeting, CAPA
	ProbeLogin   ProbeStep = "login"   // USER/PASS, APOP or AUTH
	ProbeStat    ProbeStep = "stat"    // STAT
)

// Probe is what a login test of one mailbox saw: every step up to the
// first that failed. It never fetches or deletes anything.
type Probe struct {
	// Failed is the step that failed, "" when all passed; Err its error.
	Failed ProbeStep
	Err    error
	// Greeting and Capabilities are the server's, once connected.
	Greeting     string
	Capabilities map[string][]string
	// TLS is the connection's TLS state; nil without TLS.
	TLS *tls.ConnectionState
	// Verified reports a certificate that was checked (verify_certificate
	// is not false).
	Verified bool
	// Mechanism is the sign-in mechanism configured ("auto" picks AUTH
	// PLAIN when offered, else USER/PASS).
	Mechanism string
	// Count and Size are STAT's answer.
	Count int
	Size  int64
}

// ProbeMailbox connects to mailbox m as a poll would (TLS, CAPA, the
// configured sign-in), asks STAT and says QUIT: no RETR, no DELE, so
// nothing on the server changes. A password or token is resolved with
// secrets and never appears in the result.
func ProbeMailbox(ctx context.Context, m config.Mailbox, secrets *config.Secrets) Probe {
	p := Probe{Mechanism: strings.ToLower(string(m.AuthMechanism))}
	opts, err := POP3Options(m)
	if err != nil {
		return Probe{Failed: ProbeConnect, Err: err, Mechanism: p.Mechanism}
	}
	p.Verified = opts.TLSConfig == nil || !opts.TLSConfig.InsecureSkipVerify
	mech := pop3.Mechanism(strings.ToUpper(string(m.AuthMechanism)))
	if m.AuthMechanism == config.MailboxAuthAuto {
		mech = pop3.MechAuto
	}
	var login func(ctx context.Context, c *pop3.Client) error
	if m.AuthMechanism.IsOAuth() {
		if m.OAuth == nil {
			p.Failed, p.Err = ProbeSecret, errors.New("auth_mechanism "+string(m.AuthMechanism)+" needs an oauth block")
			return p
		}
		tokens, err := TokenSource(*m.OAuth, secrets)
		if err != nil {
			p.Failed, p.Err = ProbeSecret, err
			return p
		}
		login = func(ctx context.Context, c *pop3.Client) error {
			return tokens.Authenticate(ctx, func(ctx context.Context, token string) error {
				return c.Login(ctx, mech, m.Username, token)
			}, tokenRejected)
		}
	} else {
		pass, err := secrets.Resolve(ctx, m.Password)
		if err != nil {
			p.Failed, p.Err = ProbeSecret, err
			return p
		}
		login = func(ctx context.Context, c *pop3.Client) error { return c.Login(ctx, mech, m.Username, pass) }
	}
	c, err := pop3.Dial(ctx, opts)
	if err != nil {
		p.Failed, p.Err = ProbeConnect, err
		return p
	}
	defer c.Close()
	p.Greeting, p.Capabilities = c.Greeting(), c.Capabilities()
	if st, ok := c.TLSConnectionState(); ok {
		p.TLS = &st
	}
	if err := login(ctx, c); err != nil {
		p.Failed, p.Err = ProbeLogin, err
		return p
	}
	if p.Count, p.Size, err = c.Stat(ctx); err != nil {
		p.Failed, p.Err = ProbeStat, err
		return p
	}
	// QUIT without DELE changes nothing (RFC 1939 §6); its error does not
	// change what the test found.
	_ = c.Quit(ctx)
	return p
}
