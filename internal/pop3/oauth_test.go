package pop3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// TestDovecotSignIn logs in to a real Dovecot with every mechanism Login
// offers: XOAUTH2 and OAUTHBEARER against Dovecot's oauth2 passdb, which
// checks the token at a local token/introspection endpoint, and APOP and
// PLAIN against its passwd-file.
func TestDovecotSignIn(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartOAuthServer(t, testenv.OAuthServerOptions{
		Clients:       map[string]string{"app": "app-Secret-1", "public-app": ""},
		ClientUsers:   map[string]string{"app": "alice"},
		RefreshTokens: map[string]string{"rt-bob": "bob"},
	})
	d := testenv.StartDovecot(t, testenv.DovecotOptions{
		Users:     map[string]string{"alice": "alice-Secret-pw", "bob": "bob-Secret-pw", "carol": "carol-Secret-pw"},
		APOP:      true,
		OAuth2:    srv,
		ExtraConf: "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n",
	})
	msg := []byte("Subject: oauth\r\n\r\nsigned in with a token\r\n")
	d.Deliver(t, "alice", msg)
	d.Deliver(t, "bob", msg)

	cc, err := oauth.New(oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.ClientCredentials, ClientID: "app",
		ClientSecret: fixed("app-Secret-1"), TLSConfig: &tls.Config{RootCAs: srv.CA.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := oauth.New(oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.RefreshToken, ClientID: "public-app",
		RefreshToken: fixed("rt-bob"), TLSConfig: &tls.Config{RootCAs: srv.CA.Pool}})
	if err != nil {
		t.Fatal(err)
	}

	dial := func(t *testing.T, log *slog.Logger) *Client {
		t.Helper()
		c, err := Dial(ctx, Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: &tls.Config{RootCAs: d.CA.Pool}, Timeout: 10 * time.Second, Logger: log})
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	fetchOne := func(t *testing.T, c *Client) {
		t.Helper()
		list, err := c.ListAll(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("ListAll = %v, %v; want one message", list, err)
		}
		r, err := c.Retr(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("RETR = %q, %v; want %q", got, err, msg)
		}
	}

	for _, tc := range []struct {
		name string
		mech Mechanism
		src  *oauth.Source
		user string
	}{
		{"xoauth2 client credentials", MechXOAUTH2, cc, "alice"},
		{"oauthbearer client credentials", MechOAuthBearer, cc, "alice"},
		{"xoauth2 refresh token", MechXOAUTH2, rt, "bob"},
		{"oauthbearer refresh token", MechOAuthBearer, rt, "bob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			c := dial(t, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
			tok, err := tc.src.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Login(ctx, tc.mech, tc.user, tok.AccessToken); err != nil {
				t.Fatalf("Login %s: %v\n%s", tc.mech, err, d.LogTail(20))
			}
			fetchOne(t, c)
			if strings.Contains(logBuf.String(), tok.AccessToken) {
				t.Error("the access token appears in the transcript")
			}
		})
	}
	// Two grants in all, one per source: the other logins used the cache.
	if g := srv.Grants("client_credentials") + srv.Grants("refresh_token"); g != 2 {
		t.Errorf("grants = %d, want 2 (tokens are cached)", g)
	}

	t.Run("expired token is renewed once", func(t *testing.T) {
		for _, how := range []func(){srv.ExpireAll, srv.RevokeAll} {
			how()
			before := srv.Grants("client_credentials")
			c := dial(t, nil)
			logins := 0
			var first error
			err := cc.Authenticate(ctx, func(ctx context.Context, token string) error {
				logins++
				err := c.Login(ctx, MechXOAUTH2, "alice", token)
				if logins == 1 {
					first = err
				}
				return err
			}, func(err error) bool { return errors.Is(err, ErrAuth) })
			if err != nil {
				t.Fatalf("Authenticate: %v\n%s", err, d.LogTail(20))
			}
			var pe *Error
			if logins != 2 || !errors.As(first, &pe) || !errors.Is(first, ErrAuth) {
				t.Fatalf("logins = %d, first error %v; want a rejected login then a successful one", logins, first)
			}
			if !strings.Contains(first.Error(), "status") {
				t.Errorf("first rejection %q does not carry the server's error challenge", first)
			}
			t.Logf("first login refused: %v", first)
			if g := srv.Grants("client_credentials"); g != before+1 {
				t.Errorf("grants went %d -> %d, want exactly one more", before, g)
			}
			fetchOne(t, c)
		}
	})

	t.Run("token for another user", func(t *testing.T) {
		c := dial(t, nil)
		tok, err := cc.Token(ctx) // alice's
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(ctx, MechOAuthBearer, "carol", tok.AccessToken)
		if !errors.Is(err, ErrAuth) || strings.Contains(err.Error(), tok.AccessToken) {
			t.Fatalf("Login as carol with alice's token = %v, want ErrAuth without the token", err)
		}
	})

	t.Run("apop", func(t *testing.T) {
		var logBuf bytes.Buffer
		c := dial(t, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
		if c.APOPTimestamp() == "" {
			t.Fatalf("greeting %q has no APOP timestamp", c.Greeting())
		}
		if err := c.Login(ctx, MechAPOP, "alice", "wrong-Secret"); !errors.Is(err, ErrAuth) {
			t.Fatalf("APOP with a wrong secret = %v, want ErrAuth", err)
		}
		if err := c.Login(ctx, MechAPOP, "alice", "alice-Secret-pw"); err != nil {
			t.Fatalf("APOP: %v\n%s", err, d.LogTail(20))
		}
		fetchOne(t, c)
		sum := md5.Sum([]byte(c.APOPTimestamp() + "alice-Secret-pw"))
		if strings.Contains(logBuf.String(), "alice-Secret-pw") || strings.Contains(logBuf.String(), hex.EncodeToString(sum[:])) {
			t.Error("the secret or the APOP digest appears in the transcript")
		}
	})

	t.Run("plain and user still work", func(t *testing.T) {
		for _, m := range []Mechanism{MechPlain, MechUser} {
			c := dial(t, nil)
			if err := c.Login(ctx, m, "carol", "carol-Secret-pw"); err != nil {
				t.Fatalf("Login %s: %v", m, err)
			}
		}
	})
}

// TestDovecotMechanismNotOffered: a mechanism the server does not announce
// fails before anything is sent, and never falls back to another.
func TestDovecotMechanismNotOffered(t *testing.T) {
	ctx := context.Background()
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"alice": "alice-Secret-pw"}})
	for _, m := range []Mechanism{MechXOAUTH2, MechOAuthBearer, MechAPOP} {
		var logBuf bytes.Buffer
		c, err := Dial(ctx, Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: &tls.Config{RootCAs: d.CA.Pool}, Timeout: 10 * time.Second,
			Logger: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(ctx, m, "alice", "some-Secret-token")
		if !errors.Is(err, ErrMechanismNotOffered) || !strings.Contains(err.Error(), string(m)) {
			t.Errorf("Login %s = %v, want ErrMechanismNotOffered naming it", m, err)
		}
		if strings.Contains(logBuf.String(), "C: AUTH") || strings.Contains(logBuf.String(), "C: APOP") || strings.Contains(logBuf.String(), "C: USER") {
			t.Errorf("Login %s sent a command:\n%s", m, logBuf.String())
		}
		// The session is still usable for a mechanism the server offers.
		if err := c.Login(ctx, MechPlain, "alice", "alice-Secret-pw"); err != nil {
			t.Errorf("PLAIN after refused %s: %v", m, err)
		}
		c.Close()
	}
}

func fixed(s string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return s, nil }
}
