package pop3

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/popconnector/popconnector/internal/oauth/oauthsasl"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

const (
	// maxLineLength bounds every status line and every line of a LIST,
	// UIDL or CAPA listing, CRLF included. RFC 2449 §4 limits responses to
	// 512 octets; 4096 leaves room for verbose servers while keeping memory
	// bounded against a hostile one.
	maxLineLength = 4096
	// maxListEntries bounds the LIST/UIDL/CAPA entries kept in memory.
	maxListEntries = 1 << 20
	// maxCommandLength is RFC 2449 §4 / RFC 5034 §4: a command line,
	// CRLF included, is at most 255 octets.
	maxCommandLength = 255
	// pipelineWindow is how many commands are sent before their responses
	// are read when the server advertises PIPELINING. A bounded window
	// avoids the deadlock RFC 2449 §6.6 warns about (both sides blocked
	// writing into full buffers).
	pipelineWindow = 64
	// deleWindow is pipelineWindow for DELE: its commands and replies are
	// a few dozen octets each, so 512 of them stay far below any socket
	// buffer, and a poll of a few hundred messages deletes in one round
	// trip.
	deleWindow = 512
	// readBufferSize is the bufio buffer; Retr's memory use is this buffer
	// plus the caller's.
	readBufferSize = 64 << 10
)

// Options configures Dial.
type Options struct {
	// Addr is host:port.
	Addr string
	// TLS is the encryption mode: tlsmode.Implicit (TLS from the first
	// byte, port 995), tlsmode.StartTLS (STLS, RFC 2595 §4; Dial fails if
	// the server does not offer it and never continues in plaintext) or
	// tlsmode.None (Auth still refuses to send credentials unless
	// AllowPlaintextAuth is set). Required: Dial refuses any other value,
	// "" and tlsmode.Opportunistic included.
	TLS tlsmode.Mode
	// TLSConfig is an optional base configuration (RootCAs, ServerName,
	// client certificates). It is cloned. Certificates are verified unless
	// the caller set InsecureSkipVerify. MinVersion defaults to TLS 1.2.
	TLSConfig *tls.Config
	// ServerName overrides the name the certificate is verified against;
	// otherwise TLSConfig.ServerName, otherwise the host of Addr.
	ServerName string
	// AllowPlaintextAuth lets Auth send credentials over an unencrypted
	// connection. Without it Auth returns ErrPlaintextRefused.
	AllowPlaintextAuth bool
	// Timeout bounds the TCP dial and every network read or write. It is
	// an inactivity timeout: a transfer that keeps making progress is not
	// cut off. Required (the configuration's default is
	// config.DefaultTimeout); Dial refuses zero.
	Timeout time.Duration
	// Logger, if set, receives the protocol transcript at debug level.
	// Passwords and SASL payloads are replaced by "***"; message bodies
	// and listings are summarised, not logged.
	Logger *slog.Logger
}

// MessageInfo describes one message of the maildrop (RFC 1939 §5, §7).
type MessageInfo struct {
	Num  int    // message number, 1-based, valid for this session only
	Size int64  // size in octets as reported by LIST (0 from UIDL alone)
	UID  string // unique-id from UIDL ("" from LIST alone)
}

// Client is one POP3 session. It is not safe for concurrent use, except
// that Close may be called from another goroutine to abort it. While a
// RetrQueue (RetrPipelined) owns the connection, commands return
// ErrQueueActive.
//
// Errors come in two kinds. A *Error is a -ERR response; the session stays
// usable. Any other error (network failure, timeout, cancelled context,
// protocol violation) closes the connection, and every later call returns
// an error wrapping the first one: the client never continues on a stream
// whose position it no longer knows.
type Client struct {
	opts Options
	dc   *deadlineConn // TCP with per-operation deadlines
	conn net.Conn      // dc, or a *tls.Conn over dc
	br   *bufio.Reader
	bw   *bufio.Writer
	log  *slog.Logger

	tlsState  *tls.ConnectionState
	greeting  string
	timestamp string
	caps      map[string][]string

	// State of the running command (see begin/end).
	cmdCtx   context.Context
	stopFunc func() bool
	bodyOpen bool
	secret   string     // password during Auth, redacted from the transcript
	rq       *RetrQueue // the pipelined RETR queue that owns the stream, if any

	mu     sync.Mutex
	broken error // first fatal error, or ErrClosed
	once   sync.Once
}

// Dial connects to opts.Addr, negotiates TLS as opts.TLS asks, reads the
// greeting (RFC 1939 §4) and the capabilities (RFC 2449 §5; a -ERR to CAPA
// is tolerated and leaves the capability set empty). In "starttls" mode it
// requires STLS in CAPA, upgrades, and reads CAPA again (RFC 2595 §4
// requires discarding what was learned before TLS). ctx bounds the whole
// dial; it is not retained.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		return nil, fmt.Errorf("pop3: Options.Timeout must be positive, got %v", opts.Timeout)
	}
	if err := tlsmode.POP3.Check(opts.TLS); err != nil {
		return nil, fmt.Errorf("pop3: Options.TLS: %w", err)
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("pop3: address %q: %w", opts.Addr, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pop3: dial %s: %w", opts.Addr, context.Cause(ctx))
	}
	d := net.Dialer{Timeout: opts.Timeout}
	raw, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("pop3: dial %s: %w", opts.Addr, err)
	}
	dc := &deadlineConn{Conn: raw, timeout: opts.Timeout}
	c := &Client{
		opts: opts,
		dc:   dc,
		conn: dc,
		br:   bufio.NewReaderSize(dc, readBufferSize),
		bw:   bufio.NewWriter(dc),
		log:  opts.Logger,
		caps: map[string][]string{},
	}
	if err := c.open(ctx, host); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) open(ctx context.Context, host string) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	if c.opts.TLS == tlsmode.Implicit {
		if err := c.handshakeTLS(ctx, host); err != nil {
			return err
		}
	}
	ok, line, err := c.readStatus("greeting")
	if err != nil {
		return err
	}
	if !ok {
		return &Error{Command: "greeting", Response: line, Code: parseCode(line)}
	}
	c.greeting = line
	c.timestamp = apopTimestamp(line)
	if err := c.capa(); err != nil {
		return err
	}
	if c.opts.TLS != tlsmode.StartTLS {
		return nil
	}
	if _, ok := c.caps["STLS"]; !ok {
		return fmt.Errorf("%w (CAPA did not list it); refusing to continue without TLS", ErrNoSTLS)
	}
	if err := c.send("STLS", "STLS"); err != nil {
		return err
	}
	ok, line, err = c.readStatus("STLS")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %w", ErrNoSTLS, &Error{Command: "STLS", Response: line, Code: parseCode(line)})
	}
	// Anything the server sent after +OK arrived in plaintext and could be
	// injected by an attacker to be read as a response under TLS.
	if n := c.br.Buffered(); n > 0 {
		return c.fail("STLS", fmt.Errorf("%w: %d bytes of plaintext after +OK", ErrProtocol, n))
	}
	if err := c.handshakeTLS(ctx, host); err != nil {
		return err
	}
	c.caps = map[string][]string{}
	return c.capa()
}

func (c *Client) handshakeTLS(ctx context.Context, host string) error {
	var cfg *tls.Config
	if c.opts.TLSConfig != nil {
		cfg = c.opts.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if c.opts.ServerName != "" {
		cfg.ServerName = c.opts.ServerName
	} else if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	tc := tls.Client(c.dc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail("TLS handshake", err)
	}
	st := tc.ConnectionState()
	c.tlsState = &st
	c.conn = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.debug("TLS established", slog.String("version", tls.VersionName(st.Version)), slog.String("server_name", cfg.ServerName))
	return nil
}

// capa issues CAPA (RFC 2449 §5) and stores the result.
func (c *Client) capa() error {
	if err := c.send("CAPA", "CAPA"); err != nil {
		return err
	}
	ok, line, err := c.readStatus("CAPA")
	if err != nil {
		return err
	}
	if !ok {
		c.debug("CAPA not supported", slog.String("response", line))
		return nil
	}
	return c.readListing("CAPA", func(line string) error {
		f := strings.Fields(line)
		if len(f) == 0 {
			return nil
		}
		c.caps[strings.ToUpper(f[0])] = append([]string{}, f[1:]...)
		c.debug("S: " + line)
		return nil
	})
}

// Capabilities returns a copy of the CAPA response: upper-case tag to its
// arguments, e.g. "SASL": {"PLAIN", "LOGIN"}, "PIPELINING": {}. Empty if
// the server does not support CAPA.
func (c *Client) Capabilities() map[string][]string {
	m := make(map[string][]string, len(c.caps))
	for k, v := range c.caps {
		m[k] = append([]string{}, v...)
	}
	return m
}

// Greeting returns the server's greeting line (after "+OK ").
func (c *Client) Greeting() string { return c.greeting }

// APOPTimestamp returns the "<...>" timestamp of the greeting (RFC 1939 §7,
// APOP), or "" if the greeting had none.
func (c *Client) APOPTimestamp() string { return c.timestamp }

// TLSConnectionState reports the TLS state, if the connection is encrypted.
func (c *Client) TLSConnectionState() (tls.ConnectionState, bool) {
	if c.tlsState == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tlsState, true
}

func (c *Client) hasCapa(tag, arg string) bool {
	args, ok := c.caps[tag]
	if !ok || arg == "" {
		return ok
	}
	for _, a := range args {
		if strings.EqualFold(a, arg) {
			return true
		}
	}
	return false
}

// Mechanism selects how Login authenticates.
type Mechanism string

const (
	// MechAuto is AUTH PLAIN when CAPA lists "SASL ... PLAIN", else
	// USER/PASS: what Auth does.
	MechAuto Mechanism = ""
	// MechUser is USER/PASS (RFC 1939 §7).
	MechUser Mechanism = "USER"
	// MechPlain is AUTH PLAIN (RFC 5034, RFC 4616).
	MechPlain Mechanism = "PLAIN"
	// MechAPOP is APOP (RFC 1939 §7): an MD5 digest of the greeting's
	// timestamp and the shared secret instead of the password.
	MechAPOP Mechanism = "APOP"
	// MechXOAUTH2 is AUTH XOAUTH2 with an OAuth 2.0 access token.
	MechXOAUTH2 Mechanism = "XOAUTH2"
	// MechOAuthBearer is AUTH OAUTHBEARER (RFC 7628) with an OAuth 2.0
	// access token.
	MechOAuthBearer Mechanism = "OAUTHBEARER"
)

// Auth logs in (RFC 1939 §7 USER/PASS, or RFC 5034 AUTH with the RFC 4616
// PLAIN mechanism when CAPA lists "SASL ... PLAIN"). It is Login with
// MechAuto.
func (c *Client) Auth(ctx context.Context, user, pass string) error {
	return c.Login(ctx, MechAuto, user, pass)
}

// Login authenticates with mech. secret is the password for USER, PLAIN and
// APOP, and the access token for XOAUTH2 and OAUTHBEARER. It refuses with
// ErrPlaintextRefused on an unencrypted connection unless
// Options.AllowPlaintextAuth (for every mechanism: an APOP digest can be
// cracked offline and a bearer token is as good as a password). If the
// server does not offer mech (CAPA SASL for the SASL mechanisms, CAPA USER
// when the server answered CAPA, a greeting timestamp for APOP) it sends
// nothing and returns an error wrapping ErrMechanismNotOffered; it never
// falls back to another mechanism. A rejection is a *Error matching
// ErrAuth; neither it nor the transcript contains the secret.
func (c *Client) Login(ctx context.Context, mech Mechanism, user, secret string) error {
	if c.tlsState == nil && !c.opts.AllowPlaintextAuth {
		return ErrPlaintextRefused
	}
	if strings.ContainsAny(user, "\r\n\x00") || strings.ContainsAny(secret, "\r\n\x00") {
		return errors.New("pop3: user name or password contains CR, LF or NUL")
	}
	if mech == MechAuto {
		mech = MechUser
		if c.hasCapa("SASL", "PLAIN") {
			mech = MechPlain
		}
	} else if err := c.checkOffered(mech); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	// The server could echo the secret; keep it out of the transcript.
	c.secret = secret
	defer func() { c.secret = "" }()
	var err error
	switch mech {
	case MechUser:
		err = c.userPass(user, secret)
	case MechPlain:
		err = c.authSASL("PLAIN", []byte("\x00"+user+"\x00"+secret), nil)
	case MechAPOP:
		err = c.apop(user, secret)
	case MechXOAUTH2, MechOAuthBearer:
		host, port := c.hostPort()
		var ir []byte
		if ir, err = oauthsasl.InitialResponse(string(mech), user, host, port, secret); err == nil {
			err = c.authSASL(string(mech), ir, oauthsasl.ErrorReply(string(mech)))
		}
	}
	if err == nil || secret == "" {
		return err
	}
	// A server could echo the secret back in its response text.
	var e *Error
	if errors.As(err, &e) {
		e.Response = strings.ReplaceAll(e.Response, secret, "***")
	}
	if strings.Contains(err.Error(), secret) {
		return &redactedError{err: err, secret: secret}
	}
	return err
}

// checkOffered returns an error wrapping ErrMechanismNotOffered when the
// server did not announce mech.
func (c *Client) checkOffered(mech Mechanism) error {
	switch mech {
	case MechUser:
		// RFC 2449 §6.7: a server answering CAPA lists USER if it takes it.
		if len(c.caps) == 0 || c.hasCapa("USER", "") {
			return nil
		}
		return fmt.Errorf("%w: USER/PASS (CAPA does not list USER)", ErrMechanismNotOffered)
	case MechAPOP:
		if c.timestamp != "" {
			return nil
		}
		return fmt.Errorf("%w: APOP (the greeting carries no <timestamp>)", ErrMechanismNotOffered)
	case MechPlain, MechXOAUTH2, MechOAuthBearer:
		if c.hasCapa("SASL", string(mech)) {
			return nil
		}
		return fmt.Errorf("%w: AUTH %s (CAPA SASL lists %q)", ErrMechanismNotOffered, mech, strings.Join(c.caps["SASL"], " "))
	}
	return fmt.Errorf("pop3: unknown mechanism %q (want USER, PLAIN, APOP, XOAUTH2 or OAUTHBEARER)", string(mech))
}

// hostPort is the server name and port OAUTHBEARER reports (RFC 7628 §3.1).
func (c *Client) hostPort() (string, int) {
	host, p, _ := net.SplitHostPort(c.opts.Addr)
	if c.opts.ServerName != "" {
		host = c.opts.ServerName
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

// redactedError hides a secret in the text of an error it wraps.
type redactedError struct {
	err    error
	secret string
}

func (r *redactedError) Error() string { return strings.ReplaceAll(r.err.Error(), r.secret, "***") }
func (r *redactedError) Unwrap() error { return r.err }

func (c *Client) userPass(user, pass string) error {
	userCmd := "USER " + user
	if err := c.simple(userCmd, userCmd, userCmd); err != nil {
		return err
	}
	return c.simple("PASS ***", "PASS "+pass, "PASS ***")
}

// apop implements RFC 1939 §7: "APOP name digest", digest the lower-case
// hex MD5 of the greeting's timestamp (brackets included) followed by the
// shared secret.
func (c *Client) apop(user, secret string) error {
	sum := md5.Sum([]byte(c.timestamp + secret))
	name := "APOP " + user + " ***"
	return c.simple(name, "APOP "+user+" "+hex.EncodeToString(sum[:]), name)
}

// authSASL runs one RFC 5034 §4 exchange for a single-step mechanism: the
// initial response goes with AUTH when the line fits in 255 octets, else
// after the server's empty "+ " challenge. A further challenge is the
// server refusing: with errReply nil (PLAIN) the exchange is cancelled with
// "*"; otherwise (XOAUTH2, OAUTHBEARER, RFC 7628 §3.2.3) the challenge is
// an error report, errReply is sent and the server's -ERR follows. Either
// way the result is a *Error, carrying the decoded challenge if any.
func (c *Client) authSASL(mech string, ir, errReply []byte) error {
	name := "AUTH " + mech + " ***"
	payload := base64.StdEncoding.EncodeToString(ir)
	if len("AUTH "+mech+" ")+len(payload)+2 <= maxCommandLength {
		if err := c.sendLogged(name, "AUTH "+mech+" "+payload, name); err != nil {
			return err
		}
	} else {
		// Too long for an initial response: wait for the empty challenge.
		if err := c.send(name, "AUTH "+mech); err != nil {
			return err
		}
		line, err := c.readLine(name)
		if err != nil {
			return err
		}
		c.debug("S: " + line)
		if !isContinuation(line) {
			if ok, errResp := parseStatus(line); ok || errResp {
				return c.statusResult(name, ok, line)
			}
			return c.fail(name, fmt.Errorf("%w: unexpected response %q", ErrProtocol, truncate(line)))
		}
		if err := c.sendLogged(name, payload, "***"); err != nil {
			return err
		}
	}
	line, err := c.readLine(name)
	if err != nil {
		return err
	}
	c.debug("S: " + line)
	if isContinuation(line) {
		var challenge *oauthsasl.Challenge
		if errReply == nil {
			// PLAIN has a single step: cancel (RFC 5034 §4).
			if err := c.send(name, "*"); err != nil {
				return err
			}
		} else {
			raw, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(line, "+")))
			if ch, ok := oauthsasl.ParseChallenge(raw); derr == nil && ok {
				challenge = &ch
			}
			if err := c.sendLogged(name, base64.StdEncoding.EncodeToString(errReply), "(reply to error challenge)"); err != nil {
				return err
			}
		}
		ok, line, err := c.readStatus(name)
		if err != nil {
			return err
		}
		if ok {
			return c.fail(name, fmt.Errorf("%w: +OK after a refused AUTH", ErrProtocol))
		}
		return &Error{Command: name, Response: line, Code: parseCode(line), Challenge: challenge}
	}
	ok, isErr := parseStatus(line)
	if !ok && !isErr {
		return c.fail(name, fmt.Errorf("%w: unexpected response %q", ErrProtocol, truncate(line)))
	}
	return c.statusResult(name, ok, line)
}

func isContinuation(line string) bool {
	return line == "+" || strings.HasPrefix(line, "+ ")
}

// Stat issues STAT (RFC 1939 §5): message count and total size.
func (c *Client) Stat(ctx context.Context) (count int, size int64, err error) {
	if err := c.begin(ctx); err != nil {
		return 0, 0, err
	}
	defer c.end()
	line, err := c.simpleResp("STAT", "STAT")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(line)
	if len(f) >= 2 {
		count, err1 := strconv.Atoi(f[0])
		size, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil && count >= 0 && size >= 0 {
			return count, size, nil
		}
	}
	return 0, 0, c.fail("STAT", fmt.Errorf("%w: malformed STAT response %q", ErrProtocol, truncate(line)))
}

// List issues LIST (RFC 1939 §5): number and size of every message not
// marked as deleted.
func (c *Client) List(ctx context.Context) ([]MessageInfo, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.end()
	if err := c.send("LIST", "LIST"); err != nil {
		return nil, err
	}
	return c.readList()
}

// UIDL issues UIDL (RFC 1939 §7): number and unique-id of every message.
// A -ERR (server without UIDL) returns an error wrapping both ErrNoUIDL
// and the *Error.
func (c *Client) UIDL(ctx context.Context) ([]MessageInfo, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.end()
	if err := c.send("UIDL", "UIDL"); err != nil {
		return nil, err
	}
	return c.readUIDL()
}

// ListAll returns LIST merged with UIDL, ordered by message number. With
// PIPELINING (RFC 2449 §6.6) both commands go out in one write. If the
// server lacks UIDL it returns the LIST result (UID empty) together with an
// error wrapping ErrNoUIDL. A message present in one listing but not the
// other is a protocol error.
func (c *Client) ListAll(ctx context.Context) ([]MessageInfo, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.end()
	var (
		list, uidl []MessageInfo
		lerr, uerr error
	)
	if c.hasCapa("PIPELINING", "") {
		if err := c.queue("LIST", "LIST"); err != nil {
			return nil, err
		}
		if err := c.send("UIDL", "UIDL"); err != nil {
			return nil, err
		}
		list, lerr = c.readList()
		if c.isBroken() {
			return nil, lerr
		}
		uidl, uerr = c.readUIDL()
	} else {
		if err := c.send("LIST", "LIST"); err != nil {
			return nil, err
		}
		if list, lerr = c.readList(); lerr != nil {
			return nil, lerr
		}
		if err := c.send("UIDL", "UIDL"); err != nil {
			return nil, err
		}
		uidl, uerr = c.readUIDL()
	}
	if lerr != nil {
		return nil, lerr
	}
	if uerr != nil {
		if errors.Is(uerr, ErrNoUIDL) {
			return list, uerr
		}
		return nil, uerr
	}
	if len(list) != len(uidl) {
		return nil, fmt.Errorf("pop3: LIST/UIDL: %w: LIST has %d messages, UIDL %d", ErrProtocol, len(list), len(uidl))
	}
	uids := make(map[int]string, len(uidl))
	for _, u := range uidl {
		uids[u.Num] = u.UID
	}
	for i := range list {
		uid, ok := uids[list[i].Num]
		if !ok {
			return nil, fmt.Errorf("pop3: LIST/UIDL: %w: message %d missing from UIDL", ErrProtocol, list[i].Num)
		}
		list[i].UID = uid
	}
	return list, nil
}

func (c *Client) readList() ([]MessageInfo, error) {
	ok, line, err := c.readStatus("LIST")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &Error{Command: "LIST", Response: line, Code: parseCode(line)}
	}
	var out []MessageInfo
	err = c.readListing("LIST", func(line string) error {
		f := strings.Fields(line)
		if len(f) >= 2 {
			num, err1 := strconv.Atoi(f[0])
			size, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 == nil && err2 == nil && num > 0 && size >= 0 {
				out = append(out, MessageInfo{Num: num, Size: size})
				return nil
			}
		}
		return fmt.Errorf("%w: malformed LIST line %q", ErrProtocol, truncate(line))
	})
	if err != nil {
		return nil, err
	}
	c.debug("S: LIST listing", slog.Int("messages", len(out)))
	return out, nil
}

func (c *Client) readUIDL() ([]MessageInfo, error) {
	ok, line, err := c.readStatus("UIDL")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %w", ErrNoUIDL, &Error{Command: "UIDL", Response: line, Code: parseCode(line)})
	}
	var out []MessageInfo
	err = c.readListing("UIDL", func(line string) error {
		f := strings.Fields(line)
		if len(f) >= 2 {
			num, err := strconv.Atoi(f[0])
			if err == nil && num > 0 && validUID(f[1]) {
				out = append(out, MessageInfo{Num: num, UID: f[1]})
				return nil
			}
		}
		return fmt.Errorf("%w: malformed UIDL line %q", ErrProtocol, truncate(line))
	})
	if err != nil {
		return nil, err
	}
	c.debug("S: UIDL listing", slog.Int("messages", len(out)))
	return out, nil
}

// validUID checks RFC 1939 §7: 1 to 70 characters in 0x21..0x7E. Length is
// accepted up to 255 because some servers exceed 70; the character range is
// enforced because UIDs become ledger keys and file names.
func validUID(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Retr issues RETR (RFC 1939 §5) and returns the message as a stream: dot
// stuffing removed, all other bytes (CRLF, bare CR or LF, 8-bit data)
// exactly as the server sent them, read straight from the connection with
// constant memory. Read returns io.EOF after the terminating ".\r\n" and an
// error wrapping io.ErrUnexpectedEOF if the connection ends before it.
//
// ctx and Options.Timeout apply to every read of the body, not to the
// transfer as a whole: a stalled server times out, a slow one that keeps
// sending does not. Until the reader is read to EOF or closed, other
// commands fail with ErrBodyOpen. Close reads and discards the rest of the
// message so the session can continue; it returns nil only if the session
// is still usable.
func (c *Client) Retr(ctx context.Context, num int) (io.ReadCloser, error) {
	if num < 1 {
		return nil, fmt.Errorf("pop3: RETR %d: invalid message number", num)
	}
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	name := "RETR " + strconv.Itoa(num)
	if err := c.send(name, name); err != nil {
		c.end()
		return nil, err
	}
	ok, line, err := c.readStatus(name)
	if err != nil || !ok {
		c.end()
		if err != nil {
			return nil, err
		}
		return nil, &Error{Command: name, Response: line, Code: parseCode(line)}
	}
	c.bodyOpen = true
	return &bodyReader{c: c, name: name, dr: newDotReader(c.br)}, nil
}

// bodyReader is the io.ReadCloser returned by Retr.
type bodyReader struct {
	c      *Client
	name   string
	dr     *dotReader
	n      int64
	done   bool
	closed bool
	err    error      // sticky fatal error
	q      *RetrQueue // the queue this body belongs to, or nil for Retr
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.closed && !b.done && b.err == nil {
		return 0, fmt.Errorf("pop3: %s: read after Close", b.name)
	}
	return b.read(p)
}

func (b *bodyReader) read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.done {
		return 0, io.EOF
	}
	if err := b.c.checkBroken(); err != nil {
		// Closed from another goroutine, for instance.
		b.err = err
		b.c.bodyOpen = false
		b.c.end()
		b.q.bodyDone(err)
		return 0, err
	}
	n, err := b.dr.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.done = true
		b.c.bodyOpen = false
		b.c.debug("S: message body", slog.String("command", b.name), slog.Int64("bytes", b.n))
		b.c.end()
		b.q.bodyDone(nil)
		return n, io.EOF
	case err != nil:
		b.err = b.c.fail(b.name, err)
		b.c.bodyOpen = false
		b.c.end()
		b.q.bodyDone(b.err)
		return n, b.err
	}
	return n, nil
}

// Close discards the unread rest of the message. It returns nil if the
// session can continue; otherwise the error that closed the client.
func (b *bodyReader) Close() error {
	if b.closed {
		return b.err
	}
	b.closed = true
	if b.err != nil || b.done {
		return b.err
	}
	buf := make([]byte, 32<<10)
	for {
		_, err := b.read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Dele marks messages as deleted (RFC 1939 §5). The server removes them
// only when QUIT answers +OK (§6, UPDATE state); Close without QUIT keeps
// them. With PIPELINING the commands are sent in batches of up to 512
// before their responses are read. The first -ERR is returned as a *Error
// naming that message ("DELE 7"); no further batches are sent, but other
// commands of the same batch may already have taken effect.
func (c *Client) Dele(ctx context.Context, nums ...int) error {
	if err := checkNums(nums); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	_, err := c.deleBatches(nums, false)
	return err
}

// DeleQuit is Dele followed by Quit, with QUIT sent in the same write as
// the last batch of DELEs when the server offers PIPELINING: deleting
// costs one round trip less. deleErr is what Dele would return; err is
// what Quit would: only a nil err means the server entered the UPDATE
// state and removed the messages whose DELE it accepted. QUIT is sent
// whatever the DELEs' replies, as Dele then Quit would.
func (c *Client) DeleQuit(ctx context.Context, nums ...int) (deleErr, err error) {
	if err := checkNums(nums); err != nil {
		return err, c.Quit(ctx)
	}
	if err := c.begin(ctx); err != nil {
		return err, err
	}
	quitSent, deleErr := c.deleBatches(nums, true)
	if !quitSent {
		c.end()
		return deleErr, c.Quit(ctx)
	}
	defer c.end()
	return deleErr, c.readQuit()
}

func checkNums(nums []int) error {
	for _, n := range nums {
		if n < 1 {
			return fmt.Errorf("pop3: DELE %d: invalid message number", n)
		}
	}
	return nil
}

// deleBatches sends the DELEs in batches (of deleWindow with
// PIPELINING, else one at a time) and reads each batch's replies, up to
// the batch with the first -ERR. With quit and PIPELINING, QUIT goes in
// the last batch's write (quitSent); its reply is left to readQuit.
func (c *Client) deleBatches(nums []int, quit bool) (quitSent bool, err error) {
	window := 1
	pipelined := c.hasCapa("PIPELINING", "")
	if pipelined {
		window = deleWindow
	}
	for len(nums) > 0 {
		batch := nums[:min(window, len(nums))]
		nums = nums[len(batch):]
		withQuit := quit && pipelined && len(nums) == 0
		for i, n := range batch {
			name := "DELE " + strconv.Itoa(n)
			if err := c.write(name, name, name, i == len(batch)-1 && !withQuit); err != nil {
				return quitSent, err
			}
		}
		if withQuit {
			if err := c.send("QUIT", "QUIT"); err != nil {
				return quitSent, err
			}
			quitSent = true
		}
		var first error
		for _, n := range batch {
			name := "DELE " + strconv.Itoa(n)
			ok, line, err := c.readStatus(name)
			if err != nil {
				return quitSent, err
			}
			if !ok && first == nil {
				first = &Error{Command: name, Response: line, Code: parseCode(line)}
			}
		}
		if first != nil {
			return quitSent, first
		}
	}
	return quitSent, nil
}

// Noop issues NOOP (RFC 1939 §5).
func (c *Client) Noop(ctx context.Context) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	return c.simple("NOOP", "NOOP", "NOOP")
}

// Rset issues RSET (RFC 1939 §5): unmark all messages marked as deleted.
func (c *Client) Rset(ctx context.Context) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	return c.simple("RSET", "RSET", "RSET")
}

// Quit issues QUIT and closes the connection. Only a nil return means the
// server entered the UPDATE state and removed the messages marked by Dele
// (RFC 1939 §6); a -ERR (*Error) or any network error means the caller
// must assume nothing was deleted.
func (c *Client) Quit(ctx context.Context) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.end()
	if err := c.send("QUIT", "QUIT"); err != nil {
		return err
	}
	return c.readQuit()
}

// readQuit reads the reply to a QUIT sent and closes the connection.
func (c *Client) readQuit() error {
	ok, line, err := c.readStatus("QUIT")
	if err != nil {
		return err
	}
	c.Close()
	if !ok {
		return &Error{Command: "QUIT", Response: line, Code: parseCode(line)}
	}
	return nil
}

// Close drops the connection without QUIT: the server stays out of the
// UPDATE state, so messages marked by Dele are kept (RFC 1939 §6). It may
// be called concurrently with another method to abort it.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = ErrClosed
	}
	c.mu.Unlock()
	var err error
	c.once.Do(func() {
		// Close the TCP connection directly: a TLS close_notify could block
		// on a peer that is not reading, and tells the server nothing it
		// needs.
		err = c.dc.Conn.Close()
	})
	return err
}

// --- command plumbing ---

// begin starts a command: it checks the session is usable, applies ctx's
// deadline to every read and write, and arms ctx cancellation to abort I/O.
func (c *Client) begin(ctx context.Context) error {
	if err := c.checkBroken(); err != nil {
		return err
	}
	if c.bodyOpen {
		return ErrBodyOpen
	}
	if c.rq != nil {
		return ErrQueueActive
	}
	return c.arm(ctx)
}

// arm is begin without the checks of who owns the stream; RetrQueue uses it
// for its own steps.
func (c *Client) arm(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("pop3: %w", context.Cause(ctx))
	}
	dl, _ := ctx.Deadline()
	c.dc.setContextDeadline(dl)
	c.cmdCtx = ctx
	c.stopFunc = context.AfterFunc(ctx, c.dc.abort)
	return nil
}

// end finishes a command. If ctx fired meanwhile the connection has been
// aborted, so the client is marked broken even if the command completed.
func (c *Client) end() {
	ctx := c.cmdCtx
	if c.stopFunc != nil && !c.stopFunc() {
		c.poison(fmt.Errorf("pop3: %w", context.Cause(ctx)))
	}
	c.stopFunc = nil
	c.cmdCtx = nil
	c.dc.setContextDeadline(time.Time{})
}

func (c *Client) checkBroken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.broken == nil:
		return nil
	case c.broken == ErrClosed:
		return ErrClosed
	}
	return fmt.Errorf("pop3: connection unusable after earlier error: %w", c.broken)
}

func (c *Client) isBroken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken != nil
}

// fail records a fatal error of command name and closes the connection.
func (c *Client) fail(name string, err error) error {
	if ctx := c.cmdCtx; ctx != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
	} else if dl, ok := ctxDeadline(ctx); ok && !time.Now().Before(dl) {
		// The I/O deadline taken from ctx fired before ctx's own timer.
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	} else {
		c.mu.Lock()
		closed := c.broken == ErrClosed
		c.mu.Unlock()
		if closed {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
	}
	err = fmt.Errorf("pop3: %s: %w", name, err)
	c.poison(err)
	return err
}

func ctxDeadline(ctx context.Context) (time.Time, bool) {
	if ctx == nil {
		return time.Time{}, false
	}
	return ctx.Deadline()
}

func (c *Client) poison(err error) {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.mu.Unlock()
	c.once.Do(func() { c.dc.Conn.Close() })
}

// queue buffers a command line without flushing (pipelining).
func (c *Client) queue(name, line string) error {
	return c.write(name, line, name, false)
}

// send writes a command line and flushes. logLine is what the transcript
// shows; for secrets the caller passes a redacted form as name.
func (c *Client) send(name, line string) error {
	return c.write(name, line, name, true)
}

func (c *Client) sendLogged(name, line, logLine string) error {
	return c.write(name, line, logLine, true)
}

func (c *Client) write(name, line, logLine string, flush bool) error {
	c.debug("C: " + logLine)
	if _, err := c.bw.WriteString(line); err != nil {
		return c.fail(name, err)
	}
	if _, err := c.bw.WriteString("\r\n"); err != nil {
		return c.fail(name, err)
	}
	if flush {
		if err := c.bw.Flush(); err != nil {
			return c.fail(name, err)
		}
	}
	return nil
}

// simple sends a command whose response is a status line; -ERR is a *Error.
func (c *Client) simple(name, line, logLine string) error {
	if err := c.write(name, line, logLine, true); err != nil {
		return err
	}
	ok, resp, err := c.readStatus(name)
	if err != nil {
		return err
	}
	return c.statusResult(name, ok, resp)
}

// simpleResp is simple for commands whose +OK line carries data.
func (c *Client) simpleResp(name, line string) (string, error) {
	if err := c.send(name, line); err != nil {
		return "", err
	}
	ok, resp, err := c.readStatus(name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", &Error{Command: name, Response: resp, Code: parseCode(resp)}
	}
	return strings.TrimSpace(strings.TrimPrefix(resp[3:], " ")), nil
}

func (c *Client) statusResult(name string, ok bool, line string) error {
	if ok {
		return nil
	}
	return &Error{Command: name, Response: line, Code: parseCode(line)}
}

// readLine reads one line of at most maxLineLength bytes and returns it
// without its line ending (CRLF, or a bare LF from a lax server).
func (c *Client) readLine(name string) (string, error) {
	b, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(b) > maxLineLength {
		return "", c.fail(name, fmt.Errorf("%w: response line longer than %d bytes", ErrProtocol, maxLineLength))
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", c.fail(name, err)
	}
	b = b[:len(b)-1]
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return string(b), nil
}

// readStatus reads a status line (RFC 1939 §3): ok is true for +OK, false
// for -ERR; anything else is a protocol error.
func (c *Client) readStatus(name string) (ok bool, line string, err error) {
	line, err = c.readLine(name)
	if err != nil {
		return false, "", err
	}
	c.debug("S: " + line)
	ok, isErr := parseStatus(line)
	if !ok && !isErr {
		return false, "", c.fail(name, fmt.Errorf("%w: expected +OK or -ERR, got %q", ErrProtocol, truncate(line)))
	}
	return ok, line, nil
}

// parseStatus classifies a status line. The indicators are matched
// case-insensitively and must be followed by a space or end of line.
func parseStatus(line string) (ok, isErr bool) {
	has := func(ind string) bool {
		return len(line) >= len(ind) && strings.EqualFold(line[:len(ind)], ind) &&
			(len(line) == len(ind) || line[len(ind)] == ' ')
	}
	return has("+OK"), has("-ERR")
}

// readListing reads the lines of a multi-line response up to ".",
// removing dot-stuffing, and passes each to fn. An error from fn is a
// protocol error and closes the connection.
func (c *Client) readListing(name string, fn func(line string) error) error {
	for n := 0; ; n++ {
		line, err := c.readLine(name)
		if err != nil {
			return err
		}
		if line == "." {
			return nil
		}
		if n >= maxListEntries {
			return c.fail(name, fmt.Errorf("%w: more than %d lines", ErrProtocol, maxListEntries))
		}
		line = strings.TrimPrefix(line, ".")
		if err := fn(line); err != nil {
			return c.fail(name, err)
		}
	}
}

func (c *Client) debug(msg string, attrs ...slog.Attr) {
	if c.log == nil {
		return
	}
	if c.secret != "" {
		msg = strings.ReplaceAll(msg, c.secret, "***")
	}
	c.log.LogAttrs(context.Background(), slog.LevelDebug, msg, append(attrs, slog.String("server", c.opts.Addr))...)
}

// apopTimestamp returns the "<...>" part of a greeting (RFC 1939 §7).
func apopTimestamp(greeting string) string {
	i := strings.IndexByte(greeting, '<')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(greeting[i:], '>')
	if j < 0 {
		return ""
	}
	return greeting[i : i+j+1]
}

// truncate shortens server text quoted in errors.
func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
