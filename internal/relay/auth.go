package relay

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
)

// AuthConfig holds SMTP AUTH credentials (RFC 4954).
type AuthConfig struct {
	// Mechanism is "plain" (RFC 4616, the default when empty) or "login".
	Mechanism string
	Username  string
	Password  string
}

// saslClient returns the SASL client for a.
func (a *AuthConfig) saslClient() (mech string, client sasl.Client, err error) {
	switch strings.ToUpper(strings.TrimSpace(a.Mechanism)) {
	case "", sasl.Plain:
		return sasl.Plain, sasl.NewPlainClient("", a.Username, a.Password), nil
	case sasl.Login:
		return sasl.Login, &loginClient{username: a.Username, password: a.Password}, nil
	default:
		return "", nil, fmt.Errorf("unsupported AUTH mechanism %q (want plain or login)", a.Mechanism)
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

// scrub replaces every secret in text.
func (s secrets) scrub(text string) string {
	for _, v := range s {
		if v != "" && strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, "[redacted]")
		}
	}
	return text
}
