package oauth_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/testenv"
)

func fixed(s string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return s, nil }
}

func newSource(t *testing.T, cfg oauth.Config) *oauth.Source {
	t.Helper()
	s, err := oauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGrants(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartOAuthServer(t, testenv.OAuthServerOptions{
		Clients:             map[string]string{"app": "App-Secret-1", "public": ""},
		ClientUsers:         map[string]string{"app": "alice"},
		RefreshTokens:       map[string]string{"Refresh-Token-bob": "bob"},
		RotateRefreshTokens: true,
		TokenLifetime:       2 * time.Second, // skew becomes 1s
	})
	roots := &tls.Config{RootCAs: srv.CA.Pool}

	t.Run("client credentials cached until expiry minus skew", func(t *testing.T) {
		s := newSource(t, oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.ClientCredentials, ClientID: "app", ClientSecret: fixed("App-Secret-1"), TLSConfig: roots})
		a, err := s.Token(ctx)
		if err != nil || !a.Fresh {
			t.Fatalf("first Token = %v, %v; want a fresh token", a, err)
		}
		if user, ok := srv.Active(a.AccessToken); !ok || user != "alice" {
			t.Fatalf("issued token is for %q (active %v), want alice", user, ok)
		}
		b, err := s.Token(ctx)
		if err != nil || b.Fresh || b.AccessToken != a.AccessToken {
			t.Fatalf("second Token = %v, %v; want the cached one", b, err)
		}
		time.Sleep(1100 * time.Millisecond) // past expiry minus skew
		c, err := s.Token(ctx)
		if err != nil || !c.Fresh || c.AccessToken == a.AccessToken {
			t.Fatalf("Token after expiry-skew = %v, %v; want a new one", c, err)
		}
		if fmt.Sprint(c) == c.AccessToken || strings.Contains(fmt.Sprintf("%v %+v %#v", c, c, c), c.AccessToken) {
			t.Error("formatting a Token shows the access token")
		}
	})

	t.Run("rotated refresh token is kept in memory", func(t *testing.T) {
		s := newSource(t, oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.RefreshToken, ClientID: "public", RefreshToken: fixed("Refresh-Token-bob"), TLSConfig: roots})
		first, err := s.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Strict rotation retired the configured token: only the rotated
		// one, held by s, still works.
		second, err := s.Renew(ctx, first.AccessToken)
		if err != nil || second.AccessToken == first.AccessToken {
			t.Fatalf("Renew = %v, %v; want a new token from the rotated refresh token", second, err)
		}
		again := newSource(t, oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.RefreshToken, ClientID: "public", RefreshToken: fixed("Refresh-Token-bob"), TLSConfig: roots})
		_, err = again.Token(ctx)
		var e *oauth.Error
		if !errors.As(err, &e) || e.Code != "invalid_grant" || e.Temporary || !strings.Contains(err.Error(), "update refresh_token") {
			t.Fatalf("a new Source with the retired refresh token: %v; want a permanent invalid_grant with a hint", err)
		}
		if strings.Contains(err.Error(), "Refresh-Token-bob") {
			t.Errorf("the error contains the refresh token: %v", err)
		}
	})

	t.Run("wrong client secret", func(t *testing.T) {
		s := newSource(t, oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.ClientCredentials, ClientID: "app", ClientSecret: fixed("Wrong-Secret-x"), TLSConfig: roots})
		_, err := s.Token(ctx)
		var e *oauth.Error
		if !errors.As(err, &e) || e.Status != 401 || e.Code != "invalid_client" || e.Temporary {
			t.Fatalf("err = %v, want a permanent HTTP 401 invalid_client", err)
		}
		if strings.Contains(err.Error(), "Wrong-Secret-x") {
			t.Errorf("the error contains the secret: %v", err)
		}
	})

	t.Run("a fresh token that is rejected is not renewed", func(t *testing.T) {
		s := newSource(t, oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.ClientCredentials, ClientID: "app", ClientSecret: fixed("App-Secret-1"), TLSConfig: roots})
		before := srv.Grants("client_credentials")
		rejected := errors.New("rejected")
		calls := 0
		err := s.Authenticate(ctx, func(context.Context, string) error { calls++; return rejected }, func(error) bool { return true })
		if !errors.Is(err, rejected) || calls != 1 || srv.Grants("client_credentials") != before+1 {
			t.Fatalf("err %v after %d logins and %d grants; want one login, one grant", err, calls, srv.Grants("client_credentials")-before)
		}
		// Now the token is cached: a rejection renews it once.
		calls = 0
		err = s.Authenticate(ctx, func(context.Context, string) error { calls++; return rejected }, func(error) bool { return true })
		if !errors.Is(err, rejected) || calls != 2 || srv.Grants("client_credentials") != before+2 {
			t.Fatalf("err %v after %d logins and %d grants; want two logins, two grants", err, calls, srv.Grants("client_credentials")-before)
		}
	})

	t.Run("certificate not trusted", func(t *testing.T) {
		s := newSource(t, oauth.Config{TokenURL: srv.TokenURL, Grant: oauth.ClientCredentials, ClientID: "app", ClientSecret: fixed("App-Secret-1")})
		_, err := s.Token(ctx)
		var e *oauth.Error
		if !errors.As(err, &e) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate verification failure", err)
		}
	})
}

// TestContextDeadline: a token endpoint that accepts the connection and
// never answers is abandoned when the context ends.
func TestContextDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s := newSource(t, oauth.Config{TokenURL: "https://" + ln.Addr().String() + "/token", Grant: oauth.ClientCredentials, ClientID: "app", ClientSecret: fixed("s")})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Token(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("err = %v after %v, want DeadlineExceeded soon after 200ms", err, time.Since(start))
	}
	var e *oauth.Error
	if !errors.As(err, &e) || !e.Temporary {
		t.Errorf("err = %v, want a temporary *oauth.Error", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  oauth.Config
		want string
	}{
		{"http", oauth.Config{TokenURL: "http://127.0.0.1/token", Grant: oauth.ClientCredentials, ClientID: "a", ClientSecret: fixed("s")}, "must use https"},
		{"userinfo", oauth.Config{TokenURL: "https://u:p@login.example/token", Grant: oauth.ClientCredentials, ClientID: "a", ClientSecret: fixed("s")}, "user name or password"},
		{"no secret", oauth.Config{TokenURL: "https://login.example/token", Grant: oauth.ClientCredentials, ClientID: "a"}, "needs a client secret"},
		{"no refresh token", oauth.Config{TokenURL: "https://login.example/token", Grant: oauth.RefreshToken, ClientID: "a"}, "needs a refresh token"},
		{"grant", oauth.Config{TokenURL: "https://login.example/token", Grant: "password", ClientID: "a"}, "unknown grant"},
	} {
		if _, err := oauth.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
