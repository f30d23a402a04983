package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// TestOAuthAuth signs in to go-smtp's server (in process, scripted) with
// XOAUTH2 and OAUTHBEARER; the server checks each token at the local OAuth
// endpoint's introspection URL (RFC 7662) over HTTPS.
func TestOAuthAuth(t *testing.T) {
	ca := testenv.NewCA(t)
	srv := testenv.StartOAuthServer(t, testenv.OAuthServerOptions{
		CA:          ca,
		Clients:     map[string]string{"relay-app": "relay-Secret-1"},
		ClientUsers: map[string]string{"relay-app": "connector@corp.example"},
	})
	smtpSrv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		TLS: ca,
		AuthBearer: func(user, token string) error {
			got, err := srv.Introspect(token)
			if err != nil {
				return err
			}
			if got != user {
				return fmt.Errorf("token is for %s, not %s", got, user)
			}
			return nil
		},
	})
	newSource := func(secret string) *oauth.Source {
		s, err := oauth.New(oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.ClientCredentials, ClientID: "relay-app",
			ClientSecret: func(context.Context) (string, error) { return secret, nil }, TLSConfig: &tls.Config{RootCAs: ca.Pool}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	src := newSource("relay-Secret-1")
	tlsConf := &tls.Config{RootCAs: ca.Pool}
	send := func(t *testing.T, mech, user string, ts relay.TokenSource) (*logBuffer, error) {
		t.Helper()
		log, lb := debugLogger()
		c, err := dial(t, smtpSrv.Addr, func(o *relay.Options) {
			withTLS(tlsmode.StartTLS, tlsConf)(o)
			o.Auth = &relay.AuthConfig{Mechanism: mech, Username: user, Token: ts}
			o.Logger = log
		})
		if err != nil {
			return lb, err
		}
		out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@corp.example"}}, strings.NewReader("Subject: oauth\r\n\r\nx\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		accepted(t, out, 1)
		return lb, nil
	}

	for _, mech := range []string{"xoauth2", "oauthbearer"} {
		t.Run(mech, func(t *testing.T) {
			before := len(smtpSrv.Transactions())
			if _, err := send(t, mech, "connector@corp.example", src); err != nil {
				t.Fatal(err)
			}
			tr := smtpSrv.Transactions()
			if len(tr) != before+1 || tr[len(tr)-1].AuthUser != "connector@corp.example" || !tr[len(tr)-1].TLS {
				t.Fatalf("transactions = %+v, want one more, authenticated as connector@corp.example over TLS", tr)
			}
		})
	}
	if g := srv.Grants("client_credentials"); g != 1 {
		t.Errorf("grants = %d, want 1 (the token is cached)", g)
	}

	t.Run("expired token renewed once after 535", func(t *testing.T) {
		for _, mech := range []string{"xoauth2", "oauthbearer"} {
			srv.ExpireAll()
			before := srv.Grants("client_credentials")
			lb, err := send(t, mech, "connector@corp.example", src)
			if err != nil {
				t.Fatalf("%s after expiry: %v", mech, err)
			}
			if g := srv.Grants("client_credentials"); g != before+1 {
				t.Errorf("%s: grants went %d -> %d, want one renewal", mech, before, g)
			}
			if tok, _ := src.Token(testContext(t)); strings.Contains(lb.String(), tok.AccessToken) {
				t.Errorf("%s: the access token appears in the transcript", mech)
			}
		}
	})

	t.Run("token for another user is not renewed in a loop", func(t *testing.T) {
		before := srv.Grants("client_credentials")
		_, err := send(t, "xoauth2", "someone-else@corp.example", src)
		e := asRelayError(t, err)
		if e.Op != "auth" || e.Code != 535 || !strings.Contains(e.Error(), "invalid_token") {
			t.Fatalf("err = %v, want a 535 at auth naming the token refusal", err)
		}
		// The cached token was refused, renewed once and refused again.
		if g := srv.Grants("client_credentials"); g != before+1 {
			t.Errorf("grants went %d -> %d, want exactly one renewal", before, g)
		}
	})

	t.Run("wrong client secret", func(t *testing.T) {
		const wrong = "wrong-Client-Secret-42"
		lb, err := send(t, "oauthbearer", "connector@corp.example", newSource(wrong))
		e := asRelayError(t, err)
		if e.Op != "auth" || !e.Temporary || !strings.Contains(e.Error(), "invalid_client") {
			t.Fatalf("err = %v, want a temporary auth error naming invalid_client", err)
		}
		if strings.Contains(e.Error(), wrong) || strings.Contains(lb.String(), wrong) {
			t.Errorf("the client secret appears in the error or the transcript: %v", e)
		}
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Temporary {
			t.Errorf("err = %v, want it to wrap a permanent *oauth.Error", err)
		}
	})

	t.Run("mechanism not offered", func(t *testing.T) {
		plainOnly := testenv.StartScriptedSMTP(t, testenv.SMTPScript{TLS: ca, AuthUsers: map[string]string{"u": "p"}})
		before := srv.Grants("client_credentials")
		_, err := dial(t, plainOnly.Addr, func(o *relay.Options) {
			withTLS(tlsmode.StartTLS, tlsConf)(o)
			o.Auth = &relay.AuthConfig{Mechanism: "xoauth2", Username: "u", Token: src}
		})
		e := asRelayError(t, err)
		if e.Op != "auth" || !e.Local || !strings.Contains(e.Error(), "does not offer AUTH XOAUTH2") {
			t.Fatalf("err = %v, want a local error saying XOAUTH2 is not offered", err)
		}
		if srv.Grants("client_credentials") != before {
			t.Error("a token was requested although the server does not offer the mechanism")
		}
	})

	t.Run("no TLS", func(t *testing.T) {
		_, err := dial(t, smtpSrv.Addr, func(o *relay.Options) {
			o.Auth = &relay.AuthConfig{Mechanism: "oauthbearer", Username: "u", Token: src}
		})
		if e := asRelayError(t, err); e.Op != "auth" || !strings.Contains(e.Error(), "without TLS") {
			t.Fatalf("err = %v, want a refusal to authenticate without TLS", err)
		}
	})
}
