package testenv

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/oauth/oauthsasl"
)

// ErrDropConnection, returned from an SMTPScript hook, makes the scripted
// server close the connection without any reply: for example from OnData to
// stage a crash between the final "." and the 250 (the client cannot know
// whether the message was accepted). That transaction is not recorded.
var ErrDropConnection = errors.New("testenv: drop connection without reply")

// SMTPScript scripts an in-process SMTP server (emersion/go-smtp) for faults
// a real server cannot stage. A nil hook accepts. Hooks run on the server's
// connection goroutines, concurrently when clients connect in parallel; a
// hook may block (e.g. until a channel closes) to stage a slow server.
type SMTPScript struct {
	// OnMail is called for MAIL FROM; a non-nil error is the reply (use
	// *smtp.SMTPError for exact codes, e.g. &smtp.SMTPError{Code: 451,
	// EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}).
	OnMail func(from string) error
	// OnRcpt is called for each RCPT TO; a rejected recipient is not added.
	OnRcpt func(to string) error
	// OnData is called after the whole message was read; data is exactly as
	// received (CRLF kept, dot-unstuffed, without the final ".\r\n").
	OnData func(from string, to []string, data []byte) error

	// TLS offers STARTTLS with a certificate from this CA (localhost,
	// 127.0.0.1).
	TLS *CA
	// AuthUsers (user -> password) enables AUTH PLAIN (RFC 4954) and then
	// requires it: MAIL before a successful AUTH gets 530 5.7.0. With TLS
	// set, AUTH is only offered after STARTTLS unless InsecureAuth is true.
	AuthUsers    map[string]string
	InsecureAuth bool
	// AuthBearer, if set, offers AUTH XOAUTH2 and OAUTHBEARER (RFC 7628)
	// and requires AUTH as AuthUsers does. It receives the user name and
	// the access token (e.g. OAuthServer.Introspect, then a comparison of
	// users); an error refuses the token with an RFC 7628 error challenge
	// ({"status":"invalid_token"}) and then 535 5.7.8.
	AuthBearer func(user, token string) error
	// MaxMessageBytes limits DATA; beyond it the reply is 552 5.3.4.
	MaxMessageBytes int64
	// MaxLineLength limits a line of DATA (go-smtp's default 2000 when 0;
	// RFC 5321 §4.5.3.1.6 asks only for 1000). Raise it to check that
	// long lines arrive byte for byte.
	MaxLineLength int
}

// ScriptedSMTP is a running scripted SMTP server on 127.0.0.1.
type ScriptedSMTP struct {
	Addr string

	server   *smtp.Server
	sessions atomic.Int64

	mu   sync.Mutex
	msgs []Transaction
}

// Transaction is an accepted message with facts about its session.
type Transaction struct {
	Received
	AuthUser string // user of a successful AUTH in that session, or ""
	TLS      bool   // the session ran over TLS (STARTTLS)
}

// StartScriptedSMTP starts the server on a random 127.0.0.1 port;
// t.Cleanup closes it and its connections.
func StartScriptedSMTP(t T, script SMTPScript) *ScriptedSMTP {
	t.Helper()
	s := &ScriptedSMTP{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &scriptedSession{srv: s, script: &script, conn: c}, nil
	}))
	srv.Domain = "scripted.test"
	srv.MaxMessageBytes = script.MaxMessageBytes
	if script.MaxLineLength > 0 {
		srv.MaxLineLength = script.MaxLineLength
	}
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.AllowInsecureAuth = script.TLS == nil || script.InsecureAuth
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if script.TLS != nil {
		_, _, cert := script.TLS.Issue(t, "localhost", "127.0.0.1")
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.server = srv

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: scripted SMTP listen: %v", err)
	}
	s.Addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(&countingListener{Listener: ln, n: &s.sessions})
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return s
}

// Messages returns the transactions whose DATA was accepted, in order.
func (s *ScriptedSMTP) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Received, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = m.Received
	}
	return out
}

// Transactions is Messages with session facts (AUTH user, TLS).
func (s *ScriptedSMTP) Transactions() []Transaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Transaction(nil), s.msgs...)
}

// Sessions returns how many client connections the server accepted.
func (s *ScriptedSMTP) Sessions() int { return int(s.sessions.Load()) }

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// scriptedSession implements smtp.Session and smtp.AuthSession.
type scriptedSession struct {
	srv    *ScriptedSMTP
	script *SMTPScript
	conn   *smtp.Conn

	authUser string
	from     string
	to       []string
}

var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

// hook runs a script hook, turning ErrDropConnection into a hang-up.
func (s *scriptedSession) hook(err error) error {
	if errors.Is(err, ErrDropConnection) {
		s.conn.Close()
	}
	return err
}

func (s *scriptedSession) Reset() {
	s.from, s.to = "", nil
}

func (s *scriptedSession) Logout() error { return nil }

func (s *scriptedSession) Mail(from string, _ *smtp.MailOptions) error {
	if (len(s.script.AuthUsers) > 0 || s.script.AuthBearer != nil) && s.authUser == "" {
		return errAuthRequired
	}
	if s.script.OnMail != nil {
		if err := s.hook(s.script.OnMail(from)); err != nil {
			return err
		}
	}
	s.from = from
	return nil
}

func (s *scriptedSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.script.OnRcpt != nil {
		if err := s.hook(s.script.OnRcpt(to)); err != nil {
			return err
		}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *scriptedSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err // ErrDataTooLarge gives 552 5.3.4
	}
	to := append([]string(nil), s.to...)
	if s.script.OnData != nil {
		if err := s.hook(s.script.OnData(s.from, to, data)); err != nil {
			return err
		}
	}
	s.srv.mu.Lock()
	_, isTLS := s.conn.TLSConnectionState()
	s.srv.msgs = append(s.srv.msgs, Transaction{
		Received: Received{From: s.from, To: to, Data: data},
		AuthUser: s.authUser,
		TLS:      isTLS,
	})
	s.srv.mu.Unlock()
	return nil
}

func (s *scriptedSession) AuthMechanisms() []string {
	var mechs []string
	if len(s.script.AuthUsers) > 0 {
		mechs = append(mechs, sasl.Plain)
	}
	if s.script.AuthBearer != nil {
		mechs = append(mechs, oauthsasl.XOAUTH2, oauthsasl.OAuthBearer)
	}
	return mechs
}

func (s *scriptedSession) Auth(mech string) (sasl.Server, error) {
	if s.script.AuthBearer != nil && (mech == oauthsasl.XOAUTH2 || mech == oauthsasl.OAuthBearer) {
		return &bearerServer{mech: mech, check: s.script.AuthBearer, ok: func(user string) { s.authUser = user }}, nil
	}
	if len(s.script.AuthUsers) == 0 || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		want, ok := s.script.AuthUsers[username]
		if !ok || want != password || (identity != "" && identity != username) {
			return smtp.ErrAuthFailed
		}
		s.authUser = username
		return nil
	}), nil
}

// bearerServer is the server side of XOAUTH2 and OAUTHBEARER: it asks for
// the client response if none came with AUTH, checks the token, and on
// refusal sends the RFC 7628 §3.2.2 error challenge, waits for the
// client's dummy reply and fails with 535.
type bearerServer struct {
	mech    string
	check   func(user, token string) error
	ok      func(user string)
	refused bool
}

func (b *bearerServer) Next(response []byte) ([]byte, bool, error) {
	if b.refused {
		return nil, true, smtp.ErrAuthFailed
	}
	if response == nil {
		return []byte{}, false, nil
	}
	user, token, err := oauthsasl.ParseInitialResponse(b.mech, response)
	if err != nil {
		return nil, true, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "malformed " + b.mech + " response"}
	}
	if err := b.check(user, token); err != nil {
		b.refused = true
		return oauthsasl.Challenge{Status: "invalid_token", Schemes: "bearer"}.Encode(), false, nil
	}
	b.ok(user)
	return nil, true, nil
}
