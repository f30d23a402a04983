package oauthsasl

import (
	"strings"
	"testing"
)

// FuzzMessages checks the two directions that meet untrusted bytes: a
// client message built from any user name and token without control
// characters parses back to exactly them (so no value can smuggle in
// another key), and any server challenge parses without panicking into
// fields that are printable and short enough to quote in an error.
func FuzzMessages(f *testing.F) {
	f.Add("alice@corp.example", "ya29.a0Af", "pop.example.net", 995, []byte(`{"status":"invalid_token","scope":"mail"}`))
	f.Add("a,b=c", "tok en", "", 0, []byte(`{"status":"401","schemes":"bearer"}`))
	f.Add("", "t", "h=x,", 1, []byte("not json"))
	f.Add("user=x", "auth=Bearer y", "[::1]", 143, []byte(`{"status":"\u0001\r\nX: y"}`))
	f.Fuzz(func(t *testing.T, user, token, host string, port int, challenge []byte) {
		if token != "" && !hasCtl(user) && !hasCtl(token) && !hasCtl(host) {
			for _, mech := range []string{XOAUTH2, OAuthBearer} {
				msg, err := InitialResponse(mech, user, host, port, token)
				if err != nil {
					t.Fatalf("%s: %v", mech, err)
				}
				gotUser, gotToken, err := ParseInitialResponse(mech, msg)
				if err != nil {
					t.Fatalf("%s: %q does not parse back: %v", mech, msg, err)
				}
				if gotToken != token || gotUser != user {
					t.Fatalf("%s: %q parsed as user %q token %q, want %q %q", mech, msg, gotUser, gotToken, user, token)
				}
			}
		}
		c, ok := ParseChallenge(challenge)
		if !ok {
			return
		}
		for _, field := range []string{c.Status, c.Schemes, c.Scope, c.String()} {
			if strings.ContainsAny(field, "\r\n\x00\x01") {
				t.Fatalf("challenge field %q keeps a control character", field)
			}
		}
		if len(c.Status) > 103 || len(c.Scope) > 103 {
			t.Fatalf("challenge fields not shortened: %q %q", c.Status, c.Scope)
		}
	})
}
