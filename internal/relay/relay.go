package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/mailaddr"
	"github.com/popconnector/popconnector/internal/oauth/oauthsasl"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// Options configure a connection.
type Options struct {
	// Addr is host:port. The host may be a bracketed address literal such
	// as "[192.0.2.1]" (RFC 5321 §4.1.3); the brackets are removed. The
	// port is required.
	Addr string
	// TLS is the policy. Required: Dial refuses "" and unknown values.
	//   - tlsmode.StartTLS requires STARTTLS (RFC 3207): if the server does
	//     not offer it, or the upgrade fails, the connection is refused.
	//     Never downgrades.
	//   - tlsmode.Opportunistic uses STARTTLS when offered and continues in
	//     plaintext when it is not offered or the server refuses the
	//     command. A failed handshake (for example a certificate that does
	//     not verify) is still an error: the connection is not retried in
	//     plaintext.
	//   - tlsmode.Implicit speaks TLS from the first byte (RFC 8314 §3.3,
	//     port 465).
	//   - tlsmode.None never uses TLS, even when offered.
	TLS tlsmode.Mode
	// TLSConfig is the base TLS configuration (RootCAs and so on). It is
	// cloned, never modified. Certificates are verified unless it sets
	// InsecureSkipVerify. Nil means the system roots.
	TLSConfig *tls.Config
	// ServerName overrides the name the certificate must carry (PrivateLink
	// endpoints are reached by a name their certificate rarely has). Empty
	// means TLSConfig.ServerName, else the host of Addr.
	ServerName string
	// HeloDomain is the name given in EHLO/HELO; empty means os.Hostname().
	HeloDomain string
	// Timeout bounds the dial, the TLS handshake, and every single read and
	// write on the connection, including each write of the body and the wait
	// for the reply to the final ".". Required (the configuration's
	// default is config.DefaultTimeout); Dial refuses zero.
	Timeout time.Duration
	// Auth, if set, authenticates after TLS (RFC 4954).
	Auth *AuthConfig
	// AllowPlaintextAuth permits AUTH on a connection without TLS. Off by
	// default: the password would cross the network in clear.
	AllowPlaintextAuth bool
	// Logger receives the transcript at debug level (never the AUTH payload
	// or password) and nothing at other levels. Nil discards.
	Logger *slog.Logger
	// NoPipelining sends one command at a time and waits for its reply,
	// even when the server offers PIPELINING (RFC 2920) or CHUNKING
	// (RFC 3030): for servers whose pipelining is broken. Off by default:
	// both are used when offered (see Client.Pipelining).
	NoPipelining bool
	// NoChunking sends the message with DATA even when the server offers
	// CHUNKING; PIPELINING is still used when offered.
	NoChunking bool
}

// Envelope is the SMTP envelope of one message (RFC 5321 §2.3.1).
type Envelope struct {
	// From is the reverse-path; "" is the null sender <>.
	From string
	// To are the forward-paths, one RCPT each.
	To []string
	// Size is the message size in bytes for SIZE= (RFC 1870); 0 = unknown.
	Size int64
	// Needs8BitMIME asks for BODY=8BITMIME (RFC 6152). When the server does
	// not advertise it the message is sent anyway and Outcome.Warning says so.
	Needs8BitMIME bool
	// NeedsSMTPUTF8 asks for SMTPUTF8 (RFC 6531); set implicitly when an
	// address is not ASCII. If the server does not advertise it, every
	// recipient gets a permanent *Error and nothing is sent.
	NeedsSMTPUTF8 bool
	// BeforeEnd, when set, is called once the whole body is on the wire and
	// before the final "." that commits the transaction. An error abandons
	// the message: the connection is closed without the ".", so the server
	// takes nothing (RFC 5321 §4.1.1.4), and every recipient gets a
	// temporary *Error wrapping it. The caller uses it to hold the commit
	// until its own earlier work (a ledger write) is known to have
	// succeeded. It is called at most once per Send: when the server takes
	// fewer recipients per transaction than the envelope has (see "Too many
	// recipients" in the package doc), only the first transaction that ends
	// its data waits for it; the later ones of the same Send end at once.
	BeforeEnd func() error
	// Reopen, when set, opens the body again from its first byte, for a
	// further transaction of the same Send when the server limits the
	// recipients per transaction and the body was already sent. It is
	// called before that transaction's MAIL; what it returns must yield the
	// same bytes as the body given to Send (Size still describes them), and
	// Send closes it. Without Reopen a body that is an io.Seeker is sought
	// back to where it was when Send began; any other body is sent once,
	// and the recipients the server could not take in that transaction are
	// deferred (a temporary *Error saying why).
	Reopen func(ctx context.Context) (io.ReadCloser, error)
}

// Outcome is the final word on one recipient.
type Outcome struct {
	Address string
	// Err is nil when the server accepted the message for Address.
	Err *Error
	// Reply is the text of the 250 reply to the final "." when accepted
	// (Exchange puts its queue id there). Empty from Verify.
	Reply string
	// Warning notes something the caller may want to log about an accepted
	// message, such as 8-bit data sent to a server that did not advertise
	// 8BITMIME.
	Warning string
}

// Client is one SMTP connection. It serves any number of transactions, one
// at a time; it is not safe for concurrent use.
type Client struct {
	opts    Options
	log     *slog.Logger
	tr      *transcript
	secrets secrets

	wc      *wireConn
	sc      *smtp.Client
	ext     map[string]string
	tls     bool
	maxSize int64
	rcptMax int // RCPTMAX of the LIMITS extension (RFC 9422), 0 if none

	broken *Error // set when the connection can no longer be used
	dirty  bool   // a transaction may be open: RSET before the next MAIL
	buf    []byte // body copy buffer, reused
	chunk  []byte // BDAT chunk buffer, reused

	// The pipelined path (pipeline.go) writes through bw and reads replies
	// through tp, both on wc; go-smtp's client keeps its own reader, but
	// SMTP is lockstep between transactions, so neither holds bytes then.
	mode string // modeChunking, modePipelining or modeNone
	bw   *bufio.Writer
	tp   *textproto.Reader
}

const copyBufferSize = 32 << 10

// Dial connects to opts.Addr, reads the greeting, says EHLO (HELO if EHLO is
// not recognised, RFC 5321 §4.1.1.1), applies the TLS policy and
// authenticates. The returned error is an *Error.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		return nil, &Error{Op: "connect", Message: fmt.Sprintf("Options.Timeout must be positive, got %v", opts.Timeout), Local: true}
	}
	if err := tlsmode.SMTP.Check(opts.TLS); err != nil {
		return nil, &Error{Op: "connect", Message: "Options.TLS: " + err.Error(), Local: true, Err: err}
	}
	if opts.HeloDomain == "" {
		opts.HeloDomain = localName()
	} else if strings.ContainsAny(opts.HeloDomain, " \t\r\n") {
		return nil, &Error{Op: "ehlo", Message: fmt.Sprintf("invalid HELO domain %q", opts.HeloDomain), Local: true}
	}
	host, port, err := splitAddr(opts.Addr)
	if err != nil {
		return nil, &Error{Op: "connect", Message: err.Error(), Local: true, Err: err}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With(slog.String("smtp_server", net.JoinHostPort(host, port)))
	sec := newSecrets(opts.Auth)
	c := &Client{opts: opts, log: log, secrets: sec, tr: newTranscript(log, sec)}

	dialer := net.Dialer{Timeout: opts.Timeout}
	raw, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, classify("connect", err)
	}
	if err := c.open(ctx, raw, host); err != nil {
		if c.wc != nil {
			c.wc.Close()
		} else {
			raw.Close()
		}
		return nil, c.secrets.scrubError(err)
	}
	return c, nil
}

// open runs everything between the TCP connect and the first transaction.
func (c *Client) open(ctx context.Context, raw net.Conn, host string) *Error {
	cfg := c.tlsConfig(host)
	conn := raw
	if c.opts.TLS == tlsmode.Implicit {
		tc, err := c.handshake(ctx, raw, cfg)
		if err != nil {
			return err
		}
		conn = tc
	}
	c.wc = newWireConn(conn, c.opts.Timeout, c.tr)
	unbind := c.wc.bind(ctx)
	defer func() { unbind() }()

	if err := c.hello(); err != nil {
		return err
	}

	if c.opts.TLS == tlsmode.StartTLS || c.opts.TLS == tlsmode.Opportunistic {
		if _, offered := c.ext["STARTTLS"]; !offered {
			if c.opts.TLS == tlsmode.StartTLS {
				return &Error{Op: "tls", Message: "server does not offer STARTTLS and the TLS policy requires it; nothing was sent", Temporary: true, Local: true}
			}
			c.tr.note("STARTTLS not offered; continuing without TLS (opportunistic)")
		} else {
			upgraded, err := c.startTLS(ctx, raw, cfg)
			if err != nil {
				return err
			}
			if upgraded {
				unbind()
				unbind = c.wc.bind(ctx)
				if err := c.hello(); err != nil {
					return err
				}
			}
		}
	}

	if c.opts.Auth != nil {
		if err := c.auth(ctx); err != nil {
			return err
		}
	}
	return nil
}

// hello reads the greeting (if not yet read) and says EHLO on c.wc, and
// records the extensions the server advertised.
func (c *Client) hello() *Error {
	c.sc = smtp.NewClient(c.wc)
	c.sc.CommandTimeout = c.opts.Timeout
	c.sc.SubmissionTimeout = c.opts.Timeout
	c.wc.capture = new(bytes.Buffer)
	written := c.wc.written
	err := c.sc.Hello(c.opts.HeloDomain)
	captured := c.wc.capture.Bytes()
	c.wc.capture = nil
	if err != nil {
		op := "ehlo"
		if c.wc.written == written {
			op = "connect" // the greeting failed: nothing was sent yet
		}
		return classify(op, err)
	}
	c.ext = parseEHLO(captured)
	c.mode = pickMode(c.ext, c.opts)
	c.bw = bufio.NewWriter(c.wc)
	c.tp = textproto.NewReader(bufio.NewReader(c.wc))
	c.maxSize = 0
	if v, ok := c.ext["SIZE"]; ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n > 0 {
			c.maxSize = n
		}
	}
	c.rcptMax = rcptMax(c.ext["LIMITS"])
	return nil
}

// startTLS sends STARTTLS and performs the handshake (RFC 3207 §4). It is
// done here rather than by go-smtp so that handshake failures surface as Op
// "tls" with the context honoured, and so that the transcript sees
// plaintext. upgraded is false only when opportunistic TLS met a refusal.
func (c *Client) startTLS(ctx context.Context, raw net.Conn, cfg *tls.Config) (upgraded bool, _ *Error) {
	if _, err := c.wc.Write([]byte("STARTTLS\r\n")); err != nil {
		return false, classify("tls", err)
	}
	br := bufio.NewReader(c.wc)
	code, msg, err := textproto.NewReader(br).ReadResponse(220)
	if err != nil {
		e := classify("tls", err)
		var te *textproto.Error
		if c.opts.TLS == tlsmode.Opportunistic && errors.As(err, &te) && code != 421 {
			// The state is as before STARTTLS (RFC 3207 §4): carry on in
			// plaintext with the session go-smtp already holds.
			c.tr.note("STARTTLS refused; continuing without TLS (opportunistic)", slog.Int("code", code), slog.String("reply", c.secrets.scrub(msg)))
			return false, nil
		}
		return false, e
	}
	if br.Buffered() > 0 {
		return false, &Error{Op: "tls", Message: "server sent data after its STARTTLS reply, before the TLS handshake (possible command injection); refusing", Temporary: true, Local: true}
	}
	tc, e := c.handshake(ctx, raw, cfg)
	if e != nil {
		return false, e
	}
	// A fresh go-smtp client over the TLS connection: it forgets what it
	// learned in plaintext (RFC 3207 §4.2) and reads the synthesised greeting.
	c.wc = newWireConn(tc, c.opts.Timeout, c.tr)
	c.wc.greeting = []byte("220 TLS established\r\n")
	return true, nil
}

// handshake runs the TLS client handshake on raw within the timeout.
func (c *Client) handshake(ctx context.Context, raw net.Conn, cfg *tls.Config) (*tls.Conn, *Error) {
	d := time.Now().Add(c.opts.Timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	_ = raw.SetDeadline(d)
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, classify("tls", err)
	}
	_ = raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.tls = true
	c.tr.note("TLS established", slog.String("version", tls.VersionName(st.Version)),
		slog.String("cipher", tls.CipherSuiteName(st.CipherSuite)), slog.String("server_name", cfg.ServerName),
		slog.Bool("verified", !cfg.InsecureSkipVerify))
	return tc, nil
}

func (c *Client) tlsConfig(host string) *tls.Config {
	var cfg *tls.Config
	if c.opts.TLSConfig != nil {
		cfg = c.opts.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	switch {
	case c.opts.ServerName != "":
		cfg.ServerName = c.opts.ServerName
	case cfg.ServerName == "":
		cfg.ServerName = host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg
}

// auth authenticates (RFC 4954). The transcript shows only the mechanism.
func (c *Client) auth(ctx context.Context) *Error {
	a := c.opts.Auth
	if isBearer(a.Mechanism) {
		return c.authBearer(ctx, strings.ToUpper(a.Mechanism))
	}
	mech, sc, err := a.saslClient()
	if err != nil {
		return &Error{Op: "auth", Message: err.Error(), Local: true}
	}
	if e := c.authAllowed(mech); e != nil {
		return e
	}
	c.tr.redact = true
	err = c.sc.Auth(sc)
	c.tr.redact = false
	if err != nil {
		return c.secrets.scrubError(classify("auth", err))
	}
	c.tr.note("authenticated", slog.String("mechanism", mech), slog.String("username", a.Username))
	return nil
}

// authAllowed checks the TLS policy and that the server offers mech.
func (c *Client) authAllowed(mech string) *Error {
	if !c.tls && !c.opts.AllowPlaintextAuth {
		return &Error{Op: "auth", Message: "refusing to send credentials over a connection without TLS (set AllowPlaintextAuth to override)", Local: true}
	}
	if !supportsAuth(c.ext, mech) {
		return &Error{Op: "auth", Message: fmt.Sprintf("server does not offer AUTH %s (offers %q)", mech, c.ext["AUTH"]), Local: true}
	}
	return nil
}

// authBearer signs in with an OAuth access token (XOAUTH2, or OAUTHBEARER
// per RFC 7628). A 535 to a token that came from the token source's cache
// makes the source renew it and the AUTH is tried once more on the same
// connection. A failure to get a token is a temporary local error: the
// mail stays where it is.
func (c *Client) authBearer(ctx context.Context, mech string) *Error {
	a := c.opts.Auth
	if a.Token == nil {
		return &Error{Op: "auth", Message: "AUTH " + mech + " needs an OAuth token source", Local: true}
	}
	if e := c.authAllowed(mech); e != nil {
		return e
	}
	host, port := c.hostPort()
	var challenge *oauthsasl.Challenge
	err := a.Token.Authenticate(ctx, func(ctx context.Context, token string) error {
		ir, err := oauthsasl.InitialResponse(mech, a.Username, host, port, token)
		if err != nil {
			return &Error{Op: "auth", Message: err.Error(), Local: true}
		}
		c.secrets = c.secrets.with(token, base64.StdEncoding.EncodeToString(ir))
		c.tr.secrets = c.secrets
		bc := &bearerClient{mech: mech, ir: ir}
		c.tr.redact = true
		err = c.sc.Auth(bc)
		c.tr.redact = false
		challenge = bc.challenge
		if err == nil {
			return nil
		}
		e := c.secrets.scrubError(classify("auth", err))
		if bc.challenge != nil {
			out := *e
			out.Message += " (token refused: " + bc.challenge.String() + ")"
			e = &out
		}
		return e
	}, func(err error) bool { return bearerRejected(err, challenge) })
	if err == nil {
		c.tr.note("authenticated", slog.String("mechanism", mech), slog.String("username", a.Username))
		return nil
	}
	var e *Error
	if errors.As(err, &e) && error(e) == err {
		return e
	}
	// No token could be had, or renewing a rejected one failed.
	return c.secrets.scrubError(&Error{Op: "auth", Message: "OAuth sign-in: " + err.Error(), Temporary: true, Local: true, Err: err})
}

// hostPort is the server name and port OAUTHBEARER reports (RFC 7628 §3.1).
func (c *Client) hostPort() (string, int) {
	host, p, _ := splitAddr(c.opts.Addr)
	if c.opts.ServerName != "" {
		host = c.opts.ServerName
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

func supportsAuth(ext map[string]string, mech string) bool {
	for _, m := range strings.Fields(ext["AUTH"]) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// Extensions returns the EHLO keywords (upper case) and their parameters as
// last advertised (after TLS when TLS is used). Empty after a HELO fallback.
func (c *Client) Extensions() map[string]string { return maps.Clone(c.ext) }

// MaxSize returns the SIZE limit the server advertised (RFC 1870), 0 if none.
func (c *Client) MaxSize() int64 { return c.maxSize }

// TLS reports whether the connection is encrypted.
func (c *Client) TLS() bool { return c.tls }

// Pipelining reports how transactions are sent: "chunking" (PIPELINING
// and CHUNKING, the body in BDAT chunks), "pipelining" (PIPELINING, the
// body after DATA) or "none" (one command at a time, through go-smtp).
func (c *Client) Pipelining() string { return c.mode }

// Send runs one transaction (RFC 5321 §3.3): MAIL FROM, one RCPT per
// recipient, DATA with body streamed through a fixed buffer, and the reply to
// the final ".". It returns one Outcome per env.To, in order: recipients
// refused at RCPT carry that refusal; recipients accepted at RCPT carry the
// DATA reply (nil Err and its text on 250). If no recipient is accepted, DATA
// is not sent and the transaction is reset. Messages that cannot go (SIZE
// over the advertised limit, SMTPUTF8 needed but not offered, malformed
// addresses) are refused locally with permanent errors and nothing is sent.
//
// When the server answers an RCPT that the transaction has too many
// recipients (see "Too many recipients" in the package doc), Send ends the
// transaction for the recipients accepted so far and sends the message again
// to the others in new transactions on the same connection, until each one's
// RCPT had a real answer; each recipient then carries the final reply of its
// own transaction.
//
// A non-nil error (an *Error) means the connection is unusable: every
// recipient without a final outcome then has a temporary *Error, and the
// caller must Close and dial again. A transaction left open by an earlier
// refusal is reset (RSET) before MAIL, so one Client serves many messages.
func (c *Client) Send(ctx context.Context, env Envelope, body io.Reader) ([]Outcome, error) {
	return c.transaction(ctx, env, body, false)
}

// Verify checks that the server would accept mail from from to each of to:
// MAIL and one RCPT each, then RSET; no message is sent. Accepted recipients
// have a nil Err and an empty Reply. Recipients past the server's limit per
// transaction are asked in further transactions, as Send does.
func (c *Client) Verify(ctx context.Context, from string, to []string) ([]Outcome, error) {
	return c.transaction(ctx, Envelope{From: from, To: to}, nil, true)
}

// txn is one call to Send or Verify: one SMTP transaction, or several when
// the server limits the recipients per transaction (split.go). The fields
// after "the transaction in progress" are reset by begin.
type txn struct {
	ctx     context.Context
	env     Envelope
	body    io.Reader // the body's source for the transaction in progress
	verify  bool
	utf8    bool   // SMTPUTF8 needed
	valid   []bool // env.To[i] passed the local checks
	out     []Outcome
	settled []bool // out[i] is final: no later step changes it

	// Across transactions.
	pending  []int         // recipients whose RCPT awaits a real answer, in order
	limit    int           // most RCPTs per transaction; 0 = not known
	rounds   int           // transactions begun
	ended    bool          // BeforeEnd was called (once per Send)
	bodyRead bool          // body has been read from: a new transaction needs it again
	seeker   io.Seeker     // body, when it can be sought back to seekAt
	seekAt   int64         // body's offset when Send began
	reopened io.ReadCloser // the body opened by env.Reopen, closed by Send

	// The transaction in progress.
	rcpts    []int  // recipients whose RCPT this transaction carries, in order
	rest     []int  // pending recipients left for a later transaction (limit)
	written  int    // RCPTs of rcpts written so far
	answered int    // RCPTs answered for real (accepted or refused, not "too many")
	again    []int  // recipients answered "too many recipients"
	tooMany  *Error // the first such reply, temporary
	steps    []step // pipelined replies still owed, in order
	mailErr  *Error // MAIL refused
	accepted []int  // indexes in out accepted at RCPT
	dataErr  *Error // DATA, a BDAT chunk or the final reply refused
	final    string // text of the last reply read for the message
}

func (c *Client) transaction(ctx context.Context, env Envelope, body io.Reader, verify bool) ([]Outcome, error) {
	t := &txn{ctx: ctx, env: env, body: body, verify: verify, out: make([]Outcome, len(env.To)), settled: make([]bool, len(env.To))}
	for i, a := range env.To {
		t.out[i].Address = a
	}
	if c.broken != nil {
		e := &Error{Op: c.broken.Op, Message: "connection already unusable: " + c.broken.Error(), Temporary: true, Local: true, Err: c.broken}
		return fill(t.out, e), e
	}
	if len(env.To) == 0 {
		return t.out, nil
	}
	if err := ctx.Err(); err != nil {
		return t.out, c.lose(t, classify("mail", err))
	}
	if !c.localChecks(t) {
		return t.out, nil
	}
	t.prepare(c.rcptMax)
	defer t.closeBody()

	unbind := c.wc.bind(ctx)
	defer unbind()
	for {
		t.begin()
		var e *Error
		if c.mode == modeNone {
			e = c.lockstep(t)
		} else {
			e = c.pipelined(t)
		}
		if e != nil {
			return t.out, e
		}
		if !c.another(t) {
			return t.out, nil
		}
	}
}

// localChecks refuses what cannot go before anything is written: bad
// addresses, SMTPUTF8 not offered, SIZE over the limit. It reports whether
// any recipient is left to try.
func (c *Client) localChecks(t *txn) bool {
	env, out := t.env, t.out
	if err := checkAddress(env.From, true); err != nil {
		fill(out, &Error{Op: "mail", Code: 501, Enhanced: "5.1.7", Message: "invalid sender address: " + err.Error(), Local: true})
		return false
	}
	t.utf8 = env.NeedsSMTPUTF8 || NeedsSMTPUTF8(env.From, env.To)
	if _, ok := c.ext["SMTPUTF8"]; t.utf8 && !ok {
		e := &Error{Op: "mail", Code: 554, Enhanced: "5.6.9", Message: "message needs SMTPUTF8 (RFC 6531) but the server does not advertise it; not sent", Local: true}
		if NeedsSMTPUTF8(env.From, env.To) {
			e.Code, e.Enhanced = 553, "5.6.7"
			e.Message = "non-ASCII address needs SMTPUTF8 (RFC 6531) but the server does not advertise it; not sent"
		}
		fill(out, e)
		return false
	}
	if !t.verify && c.maxSize > 0 && env.Size > c.maxSize {
		fill(out, &Error{Op: "mail", Code: 552, Enhanced: "5.3.4",
			Message: fmt.Sprintf("message size %d exceeds the server's limit of %d (RFC 1870); not sent", env.Size, c.maxSize), Local: true})
		return false
	}
	t.valid = make([]bool, len(env.To))
	anyValid := false
	for i, a := range env.To {
		if err := checkAddress(a, false); err != nil {
			out[i].Err = &Error{Op: "rcpt", Code: 501, Enhanced: "5.1.3", Message: "invalid recipient address: " + err.Error(), Local: true}
			t.settled[i] = true
			continue
		}
		t.valid[i], anyValid = true, true
	}
	return anyValid
}

// lockstep runs the transaction through go-smtp, one command and one
// reply at a time. After a "too many recipients" reply no more RCPT is
// sent: the recipients left go to the next transaction.
func (c *Client) lockstep(t *txn) *Error {
	if c.dirty {
		if err := c.sc.Reset(); err != nil {
			return c.lose(t, c.classify("rset", err))
		}
		c.dirty = false
	}
	var mailOpts *smtp.MailOptions
	if t.env.Size > 0 || t.utf8 {
		mailOpts = &smtp.MailOptions{Size: t.env.Size, UTF8: t.utf8}
	}
	if err := c.sc.Mail(t.env.From, mailOpts); err != nil {
		e := c.classify("mail", err)
		if connectionLost(e) {
			return c.lose(t, e)
		}
		t.mailErr = e
		t.refuseMail()
		return nil
	}
	c.dirty = true
	for _, i := range t.rcpts {
		if t.tooMany != nil {
			break
		}
		t.written++
		if err := c.sc.Rcpt(t.env.To[i], nil); err != nil {
			e := c.classify("rcpt", err)
			if connectionLost(e) {
				return c.lose(t, e)
			}
			t.rcptRefused(i, e)
			continue
		}
		t.rcptAccepted(i)
	}
	t.carryUnwritten()
	if t.verify || len(t.accepted) == 0 {
		if err := c.sc.Reset(); err != nil {
			return c.lose(t, c.classify("rset", err))
		}
		c.dirty = false
		return nil
	}
	return c.lockstepData(t)
}

// lockstepData sends DATA, the body and the final "." through go-smtp.
func (c *Client) lockstepData(t *txn) *Error {
	dc, err := c.sc.Data()
	if err != nil {
		e := c.classify("data", err)
		if connectionLost(e) {
			return c.lose(t, e)
		}
		t.dataErr = e
		t.refuse(e)
		return nil
	}
	// go-smtp's Data has flushed "DATA" and read 354; until Close writes the
	// terminator the connection is ours. Close ends it with "\r\n.\r\n" as
	// if its own writer had seen nothing.
	if e := c.writeBody(t); e != nil {
		return c.lose(t, e)
	}
	resp, err := dc.CloseWithResponse()
	c.tr.endData()
	if err != nil {
		e := c.classify("data", err)
		if connectionLost(e) {
			// Also the duplicate window: the server may have taken it.
			return c.lose(t, e)
		}
		t.dataErr = e
		t.refuse(e)
		c.dirty = false
		return nil
	}
	c.dirty = false
	c.deliver(t, resp.StatusText)
	return nil
}

// writeBody streams the body through the dot-stuffer (see dotStuffer for
// why not go-smtp's writer) straight to the wire, then runs BeforeEnd:
// all of DATA but the terminator. A non-nil error means the terminator
// must never be sent.
func (c *Client) writeBody(t *txn) *Error {
	src := t.source()
	c.tr.beginData()
	stuffer := newDotStuffer(c.wc)
	_, err := io.CopyBuffer(stuffer, src, c.copyBuf())
	if err == nil {
		err = stuffer.Finish()
	}
	if err != nil {
		return c.abandon(src, nil, err)
	}
	return c.beforeEnd(t, src)
}

// beforeEnd runs env.BeforeEnd, the caller's last word before the commit,
// once per Send: a later transaction of the same Send ends without it.
func (c *Client) beforeEnd(t *txn, src *bodyReader) *Error {
	if t.env.BeforeEnd == nil || t.ended {
		return nil
	}
	t.ended = true
	if err := t.env.BeforeEnd(); err != nil {
		return c.abandon(src, err, err)
	}
	return nil
}

// abandon is the error for a message given up before its commit: the
// caller's BeforeEnd refused (abandoned), the body could not be read, or
// the write failed. Closing the connection is then the only abort (SMTP
// has no way to cancel DATA, RFC 5321 §4.1.1.4).
func (c *Client) abandon(src *bodyReader, abandoned, err error) *Error {
	c.tr.endData()
	switch {
	case abandoned != nil:
		return &Error{Op: "data", Message: "message abandoned before the final \".\"; connection closed: " + abandoned.Error(), Temporary: true, Local: true, Err: abandoned}
	case src.err != nil:
		return &Error{Op: "data", Message: "reading the message body failed; connection closed without ending DATA", Temporary: true, Local: true, Err: src.err}
	}
	e := c.classify("data", err)
	e.Temporary = true
	return e
}

func (c *Client) copyBuf() []byte {
	if c.buf == nil {
		c.buf = make([]byte, copyBufferSize)
	}
	return c.buf
}

// refuse gives e, the refusal of the message, to every recipient accepted
// at RCPT.
func (t *txn) refuse(e *Error) {
	for _, i := range t.accepted {
		t.out[i].Err = e
		t.settled[i] = true
	}
}

// deliver records the server's acceptance, reply text, for every
// recipient accepted at RCPT.
func (c *Client) deliver(t *txn, reply string) {
	var warning string
	if t.env.Needs8BitMIME {
		if _, ok := c.ext["8BITMIME"]; !ok {
			warning = "server does not advertise 8BITMIME (RFC 6152); 8-bit message sent as is"
		}
	}
	for _, i := range t.accepted {
		t.out[i].Reply = c.secrets.scrub(reply)
		t.out[i].Warning = warning
		t.settled[i] = true
	}
}

// bodyReader remembers a read error, to tell a failing source from a failing
// connection.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// classify is the package classify with secrets scrubbed.
func (c *Client) classify(op string, err error) *Error {
	return c.secrets.scrubError(classify(op, err))
}

// lose marks the connection unusable after e, closes it, and gives e (as a
// temporary error) to every recipient without a final outcome: a nil Err
// before the final reply only means "accepted at RCPT", and a recipient
// waiting for a later transaction has had no real answer. Outcomes of
// transactions already ended stay. It returns e.
func (c *Client) lose(t *txn, e *Error) *Error {
	if !e.Temporary {
		t := *e
		t.Temporary = true
		e = &t
	}
	for i := range t.out {
		if !t.settled[i] {
			t.out[i].Err = e
		}
	}
	c.broken = e
	c.tr.note("connection unusable", slog.String("error", e.Error()))
	if c.wc != nil {
		c.wc.Close()
	}
	return e
}

// fill gives e to every recipient without an outcome.
func fill(out []Outcome, e *Error) []Outcome {
	for i := range out {
		if out[i].Err == nil {
			out[i].Err = e
		}
	}
	return out
}

// Quit ends the session politely (RFC 5321 §4.1.1.10) and closes the
// connection, whatever the reply. On a connection already unusable it only
// closes.
func (c *Client) Quit() error {
	if c.broken != nil {
		c.Close()
		return nil
	}
	unbind := c.wc.bind(context.Background())
	defer unbind()
	err := c.sc.Quit()
	c.Close()
	if err != nil {
		return c.classify("quit", err)
	}
	return nil
}

// Close drops the connection without QUIT. Safe to call more than once.
func (c *Client) Close() error {
	if c.broken == nil {
		c.broken = &Error{Op: "quit", Message: "connection closed", Temporary: true, Local: true}
	}
	if c.wc == nil {
		return nil
	}
	if err := c.wc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// parseEHLO extracts the extensions from the last reply in b, which holds
// the server's side of greeting and EHLO (and HELO after a fallback, whose
// single-line reply yields none). RFC 5321 §4.1.1.1: each line after the
// first is a keyword and optional parameters.
func parseEHLO(b []byte) map[string]string {
	var reply []string
	var current []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) < 4 {
			continue
		}
		current = append(current, line)
		if line[3] == ' ' {
			reply, current = current, nil
		}
	}
	ext := make(map[string]string)
	if len(reply) == 0 || !strings.HasPrefix(reply[0], "250") {
		return ext
	}
	for _, line := range reply[1:] {
		kw, param, _ := strings.Cut(strings.TrimSpace(line[4:]), " ")
		if kw == "" {
			continue
		}
		ext[strings.ToUpper(kw)] = strings.TrimSpace(param)
	}
	return ext
}

// splitAddr splits host:port and strips address-literal brackets. The port
// is required: its default belongs to the configuration.
func splitAddr(addr string) (host, port string, err error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", "", errors.New("no server address")
	}
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("invalid server address %q (want host:port): %w", addr, err)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	// RFC 5321 §4.1.3 IPv6 literal: [IPv6:2001:db8::1].
	if len(host) > 5 && strings.EqualFold(host[:5], "IPv6:") {
		host = host[5:]
	}
	if host == "" || strings.ContainsAny(host, " \t\r\n/[]") {
		return "", "", fmt.Errorf("invalid server address %q", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", "", fmt.Errorf("invalid port in server address %q", addr)
	}
	return host, port, nil
}

func localName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || strings.ContainsAny(h, " \t\r\n") {
		return "localhost"
	}
	return h
}

// checkAddress refuses what could break the command line (mailaddr's
// WireSafe rule); the empty reverse-path is the null sender. Deeper syntax
// is left to the server: a sender taken from received mail is relayed as
// the ISP recorded it.
func checkAddress(a string, sender bool) error {
	if a == "" && sender {
		return nil
	}
	return mailaddr.WireSafe(a)
}

// NeedsSMTPUTF8 reports whether an envelope needs the SMTPUTF8 extension
// (RFC 6531): a sender or recipient address that is not ASCII.
func NeedsSMTPUTF8(from string, to []string) bool {
	return !isASCII(from) || !allASCII(to)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}
