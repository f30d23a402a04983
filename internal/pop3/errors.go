package pop3

import (
	"errors"
	"strings"

	"github.com/popconnector/popconnector/internal/oauth/oauthsasl"
)

var (
	// ErrPlaintextRefused is returned by Auth when the connection is not
	// encrypted and Options.AllowPlaintextAuth is false. Nothing is sent.
	ErrPlaintextRefused = errors.New("pop3: refusing to send credentials over an unencrypted connection")

	// ErrNoUIDL is wrapped by UIDL and ListAll when the server answers the
	// UIDL command with -ERR (RFC 1939 §7 makes UIDL optional).
	ErrNoUIDL = errors.New("pop3: server does not support UIDL")

	// ErrAuth matches (via errors.Is) a *Error from USER, PASS or AUTH that
	// rejects the credentials, as opposed to a lock or system condition
	// ([IN-USE], [LOGIN-DELAY], [SYS/TEMP], [SYS/PERM]).
	ErrAuth = errors.New("pop3: authentication failed")

	// ErrNoSTLS is returned by Dial in "starttls" mode when the server does
	// not advertise STLS in its CAPA response. The client never falls back
	// to plaintext.
	ErrNoSTLS = errors.New("pop3: server does not offer STLS")

	// ErrProtocol is wrapped by every error caused by a response that does
	// not follow RFC 1939 (no +OK/-ERR, malformed listing, over-long line,
	// data injected after the STLS response). The connection is closed.
	ErrProtocol = errors.New("pop3: protocol violation")

	// ErrMechanismNotOffered is wrapped by Login when the server does not
	// announce the requested mechanism. Nothing is sent; the client never
	// falls back to another mechanism.
	ErrMechanismNotOffered = errors.New("pop3: server does not offer the configured sign-in mechanism")

	// ErrClosed is returned for calls after Close or Quit.
	ErrClosed = errors.New("pop3: client closed")

	// ErrBodyOpen is returned when a command is issued while the reader
	// returned by Retr has not been read to the end or closed.
	ErrBodyOpen = errors.New("pop3: previous RETR body still open")

	// ErrQueueActive is returned by every command (and RetrPipelined) while
	// a RetrQueue owns the connection: until its last response has been
	// read, or its Close returned. Nothing is sent.
	ErrQueueActive = errors.New("pop3: pipelined RETR queue still active")

	// ErrQueueClosed is returned by RetrQueue.Next after RetrQueue.Close.
	ErrQueueClosed = errors.New("pop3: pipelined RETR queue closed")
)

// Error is a -ERR response from the server. The session is still usable
// after an *Error (unlike network and protocol errors, which close it).
type Error struct {
	// Command is the command that failed, with any secret replaced:
	// "PASS ***", "AUTH PLAIN ***". "greeting" for a -ERR greeting.
	Command string
	// Response is the server's status line without CRLF, starting "-ERR".
	// If it echoed the password, the password is replaced by "***".
	Response string
	// Code is the RFC 2449 §8 extended response code in upper case
	// without brackets ("IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM",
	// "AUTH" from RFC 3206), or "" when the server sent none.
	Code string
	// Challenge is the error report an XOAUTH2 or OAUTHBEARER server sent
	// as a challenge before its -ERR (RFC 7628 §3.2.2); nil when there was
	// none.
	Challenge *oauthsasl.Challenge
}

func (e *Error) Error() string {
	if e.Challenge != nil {
		return "pop3: " + e.Command + ": " + e.Response + " (token refused: " + e.Challenge.String() + ")"
	}
	return "pop3: " + e.Command + ": " + e.Response
}

// Temporary reports whether retrying later may succeed. [IN-USE],
// [LOGIN-DELAY] and [SYS/TEMP] are temporary; [AUTH], [SYS/PERM] and
// credential rejections without a code are not. Any other -ERR counts as
// temporary, because an unknown failure must not make the caller give up
// on mail.
func (e *Error) Temporary() bool {
	switch {
	case e.codeIs("IN-USE"), e.codeIs("LOGIN-DELAY"), e.codeIs("SYS/TEMP"):
		return true
	case e.codeIs("AUTH"), e.codeIs("SYS/PERM"):
		return false
	}
	return !e.isAuthFailure()
}

// TokenRejected reports whether e is a rejection of an OAuth access token
// that a renewed token may overcome: a credentials failure whose error
// challenge, if any, does not blame scope or permissions.
func (e *Error) TokenRejected() bool {
	return e.isAuthFailure() && (e.Challenge == nil || e.Challenge.TokenRejected())
}

// Is makes errors.Is(err, ErrAuth) true for credential rejections.
func (e *Error) Is(target error) bool {
	return target == ErrAuth && e.isAuthFailure()
}

// isAuthFailure: a -ERR to an authentication command that is not explained
// by a lock or system condition (RFC 2449 §8.1, RFC 3206 §4, §5).
func (e *Error) isAuthFailure() bool {
	verb, _, _ := strings.Cut(e.Command, " ")
	switch strings.ToUpper(verb) {
	case "USER", "PASS", "AUTH", "APOP":
	default:
		return false
	}
	switch {
	case e.codeIs("IN-USE"), e.codeIs("LOGIN-DELAY"), e.codeIs("SYS/TEMP"), e.codeIs("SYS/PERM"):
		return false
	}
	return true
}

// codeIs matches a hierarchical response code and its sub-codes
// (RFC 2449 §8: "SYS/TEMP" matches "SYS/TEMP" and "SYS/TEMP/DISK").
func (e *Error) codeIs(code string) bool {
	return e.Code == code || strings.HasPrefix(e.Code, code+"/")
}

// parseCode extracts the response code from "-ERR [CODE] text" (RFC 2449 §8).
func parseCode(statusLine string) string {
	_, rest, ok := strings.Cut(statusLine, " ")
	if !ok || !strings.HasPrefix(rest, "[") {
		return ""
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return ""
	}
	return strings.ToUpper(rest[1:end])
}
