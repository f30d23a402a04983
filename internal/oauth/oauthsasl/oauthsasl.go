// Package oauthsasl encodes and parses the messages of the two SASL
// mechanisms that carry an OAuth 2.0 bearer token: OAUTHBEARER (RFC 7628)
// and XOAUTH2 (the older form Google and Microsoft document for IMAP, POP3
// and SMTP). It is protocol-neutral: the POP3 and SMTP clients put these
// bytes on the wire (base64-encoded, RFC 5034 §4 and RFC 4954 §4), and the
// test servers parse them.
//
// What it cannot do: the SASL exchange itself, GS2 channel binding (the
// client always sends "n", RFC 5801 §4), and the authorization-identity
// forms other than "the user name is the identity".
package oauthsasl

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Mechanism names, as they appear in CAPA SASL and EHLO AUTH.
const (
	XOAUTH2     = "XOAUTH2"
	OAuthBearer = "OAUTHBEARER"
)

// ErrMalformed is returned when a client response does not parse.
var ErrMalformed = errors.New("oauthsasl: malformed client response")

// InitialResponse returns the client's first message for mech. host and
// port are sent with OAUTHBEARER when known (RFC 7628 §3.1: "host" and
// "port" keys); XOAUTH2 carries only user and token. The user name and the
// token must not contain control characters.
func InitialResponse(mech, user, host string, port int, token string) ([]byte, error) {
	if hasCtl(user) || hasCtl(token) || hasCtl(host) {
		return nil, errors.New("oauthsasl: user name, host or token contains a control character")
	}
	switch strings.ToUpper(mech) {
	case XOAUTH2:
		return []byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"), nil
	case OAuthBearer:
		var b strings.Builder
		// gs2-header (RFC 5801 §4): no channel binding, authzid = user.
		b.WriteString("n,")
		if user != "" {
			b.WriteString("a=" + saslName(user))
		}
		b.WriteString(",\x01")
		if host != "" {
			b.WriteString("host=" + host + "\x01")
		}
		if port > 0 {
			b.WriteString("port=" + strconv.Itoa(port) + "\x01")
		}
		b.WriteString("auth=Bearer " + token + "\x01\x01")
		return []byte(b.String()), nil
	}
	return nil, fmt.Errorf("oauthsasl: unknown mechanism %q", mech)
}

// ErrorReply is what the client answers to an error challenge so that the
// server can finish with its failure reply: a single %x01 for OAUTHBEARER
// (RFC 7628 §3.2.3), an empty response for XOAUTH2.
func ErrorReply(mech string) []byte {
	if strings.EqualFold(mech, OAuthBearer) {
		return []byte{0x01}
	}
	return []byte{}
}

// Challenge is the JSON error a server sends as a challenge when it refuses
// the token (RFC 7628 §3.2.2; XOAUTH2 servers send the same fields).
type Challenge struct {
	Status  string `json:"status"`
	Schemes string `json:"schemes,omitempty"`
	Scope   string `json:"scope,omitempty"`
}

// ParseChallenge decodes an error challenge. ok is false when b is not a
// JSON object with a status.
func ParseChallenge(b []byte) (c Challenge, ok bool) {
	if err := json.Unmarshal(b, &c); err != nil || c.Status == "" {
		return Challenge{}, false
	}
	c.Status = clean(c.Status)
	c.Schemes = clean(c.Schemes)
	c.Scope = clean(c.Scope)
	return c, true
}

// TokenRejected reports whether the challenge says the token itself is bad
// (invalid or expired), so that a new token may succeed. A token lacking
// scope or permission ("insufficient_scope", HTTP status "403") would not
// be helped by renewal.
func (c Challenge) TokenRejected() bool {
	switch strings.ToLower(c.Status) {
	case "insufficient_scope", "403":
		return false
	}
	return true
}

// String renders the challenge for an error message.
func (c Challenge) String() string {
	s := "status " + c.Status
	if c.Scope != "" {
		s += ", scope " + c.Scope
	}
	return s
}

// Encode renders c as the JSON a server sends.
func (c Challenge) Encode() []byte {
	b, _ := json.Marshal(c)
	return b
}

// ParseInitialResponse is the server side of InitialResponse: it returns
// the user name and the bearer token.
func ParseInitialResponse(mech string, b []byte) (user, token string, err error) {
	s := string(b)
	var kvs string
	switch strings.ToUpper(mech) {
	case XOAUTH2:
		kvs = s
	case OAuthBearer:
		// n,a=user,<kvsep>key=value<kvsep>...<kvsep><kvsep>
		parts := strings.SplitN(s, ",", 3)
		if len(parts) != 3 || parts[0] != "n" || !strings.HasPrefix(parts[2], "\x01") {
			return "", "", ErrMalformed
		}
		if a, ok := strings.CutPrefix(parts[1], "a="); ok {
			user = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(a)
		} else if parts[1] != "" {
			return "", "", ErrMalformed
		}
		kvs = parts[2][1:]
	default:
		return "", "", fmt.Errorf("oauthsasl: unknown mechanism %q", mech)
	}
	if !strings.HasSuffix(kvs, "\x01\x01") {
		return "", "", ErrMalformed
	}
	for _, kv := range strings.Split(strings.TrimSuffix(kvs, "\x01\x01"), "\x01") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", "", ErrMalformed
		}
		switch k {
		case "user":
			user = v
		case "auth":
			scheme, tok, ok := strings.Cut(v, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
				return "", "", ErrMalformed
			}
			token = tok
		}
	}
	if token == "" {
		return "", "", ErrMalformed
	}
	return user, token, nil
}

// saslName escapes ',' and '=' (RFC 5801 §4).
func saslName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// clean keeps server text printable and short before it reaches an error.
func clean(s string) string { return Printable(s, 100) }

// Printable replaces control characters in server-supplied text by spaces
// and shortens it to max bytes (plus "..."), before it is quoted in an
// error message or a log line.
func Printable(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
