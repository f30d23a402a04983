package relay

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/popconnector/popconnector/internal/oauth/oauthsasl"
)

// AuthConfig holds SMTP AUTH credentials (RFC 4954).
type AuthConfig struct {
	// Mechanism is "plain" (RFC 4616, the default when empty), "login",
	// "xoauth2" or "oauthbearer" (RFC 7628).
	Mechanism string
	Username  string
	// Password is used by plain and login.
	Password string
	// Token supplies the access token for xoauth2 and oauthbearer.
	Token TokenSource
}

// TokenSource supplies OAuth 2.0 access tokens; *oauth.Source implements
// it. Authenticate calls login with a token and, when rejected reports
// that the server refused a token that came from a cache, at most once
// more with a renewed one.
type TokenSource interface {
	Authenticate(ctx context.Context, login func(ctx context.Context, accessToken string) error, rejected func(error) bool) error
}

// isBearer reports whether mech carries an OAuth token.
func isBearer(mech string) bool {
	return strings.EqualFold(mech, oauthsasl.XOAUTH2) || strings.EqualFold(mech, oauthsasl.OAuthBearer)
}

// bearerClient is a sasl.Client for XOAUTH2 and OAUTHBEARER. It answers
// the server's error challenge as RFC 7628 §3.2.3 asks (a %x01 for
// OAUTHBEARER, an empty line for XOAUTH2) so that the server finishes with
// its failure reply, and keeps the challenge for the error.
type bearerClient struct {
	mech      string
	ir        []byte
	challenge *oauthsasl.Challenge
}

func (b *bearerClient) Start() (string, []byte, error) { return b.mech, b.ir, nil }

func (b *bearerClient) Next(challenge []byte) ([]byte, error) {
	if b.challenge != nil {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	ch, ok := oauthsasl.ParseChallenge(challenge)
	if !ok {
		ch = oauthsasl.Challenge{Status: "unknown (challenge is not the RFC 7628 JSON)"}
	}
	b.challenge = &ch
	return oauthsasl.ErrorReply(b.mech), nil
}

// bearerRejected reports whether err is the server refusing the token
// itself (535, RFC 4954 §6), so that a renewed token may succeed.
func bearerRejected(err error, challenge *oauthsasl.Challenge) bool {
	var e *Error
	if !errors.As(err, &e) || e.Local || e.Code != 535 {
		return false
	}
	return challenge == nil || challenge.TokenRejected()
}

// saslClient returns the SASL client for a.
func (a *AuthConfig) saslClient() (mech string, client sasl.Client, err error) {
	switch strings.ToUpper(strings.TrimSpace(a.Mechanism)) {
	case "", sasl.Plain:
		return sasl.Plain, sasl.NewPlainClient("", a.Username, a.Password), nil
	case sasl.Login:
		return sasl.Login, &loginClient{username: a.Username, password: a.Password}, nil
	default:
		return "", nil, fmt.Errorf("unsupported AUTH mechanism %q (want plain, login, xoauth2 or oauthbearer)", a.Mechanism)
	}
}

// loginClient implements AUTH LOGIN without an initial response. Unlike
// go-sasl's, it answers whichever prompt the server sends ("Username:" or
// "Password:", any case), because servers differ in whether they prompt for
// the user name when none was sent up front.
type loginClient struct {
	username, password string
	step               int
}

func (l *loginClient) Start() (string, []byte, error) {
	return sasl.Login, nil, nil
}

func (l *loginClient) Next(challenge []byte) ([]byte, error) {
	l.step++
	prompt := strings.ToLower(strings.TrimSpace(string(challenge)))
	switch {
	case strings.HasPrefix(prompt, "user"):
		return []byte(l.username), nil
	case strings.HasPrefix(prompt, "pass"):
		return []byte(l.password), nil
	case l.step == 1:
		return []byte(l.username), nil
	case l.step == 2:
		return []byte(l.password), nil
	}
	return nil, sasl.ErrUnexpectedServerChallenge
}

// secrets are strings that must never appear in an error or a log line.
type secrets []string

func newSecrets(a *AuthConfig) secrets {
	if a == nil || a.Password == "" {
		return nil
	}
	enc := base64.StdEncoding.EncodeToString
	s := secrets{
		a.Password,
		enc([]byte(a.Password)),
		enc([]byte("\x00" + a.Username + "\x00" + a.Password)),
		enc([]byte(a.Username + "\x00" + a.Username + "\x00" + a.Password)),
	}
	// The unpadded forms, in case a server echoes a truncated token.
	for _, v := range s[1:] {
		if t := strings.TrimRight(v, "="); t != v && len(t) >= 4 {
			s = append(s, t)
		}
	}
	// Longest first, so that a token is replaced whole before a shorter
	// secret inside it could break it up.
	slices.SortFunc(s, func(x, y string) int { return len(y) - len(x) })
	return s
}

// with returns s with more secrets (an access token and its SASL forms).
func (s secrets) with(more ...string) secrets {
	out := append(slices.Clone(s), more...)
	slices.SortFunc(out, func(x, y string) int { return len(y) - len(x) })
	return out
}

// scrub replaces every secret in text.
func (s secrets) scrub(text string) string {
	for _, v := range s {
		if v != "" && strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, "[redacted]")
		}
	}
	return text
}
