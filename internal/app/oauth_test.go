package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// TestOAuthEndToEnd runs configuration -> app -> poll with OAuth sign-in
// on both sides: a real Dovecot checks the POP3 XOAUTH2 token with its
// oauth2 passdb at the local token endpoint, and the scripted SMTP server
// checks the OAUTHBEARER token of the delivery at the same endpoint. Every
// secret is a reference (env:, file:).
func TestOAuthEndToEnd(t *testing.T) {
	const (
		clientSecret = "E2e-Client-Secret-9f3"
		relaySecret  = "E2e-Relay-Secret-2b7"
		refreshTok   = "E2e-Refresh-Token-c41"
	)
	ca := testenv.NewCA(t)
	srv := testenv.StartOAuthServer(t, testenv.OAuthServerOptions{
		CA:            ca,
		Clients:       map[string]string{"pop-app": clientSecret, "relay-app": relaySecret, "public-app": ""},
		ClientUsers:   map[string]string{"pop-app": "sales", "relay-app": "relay@corp.example"},
		RefreshTokens: map[string]string{refreshTok: "info"},
		// Strict rotation: the second refresh must use the rotated token
		// kept in memory, or it fails.
		RotateRefreshTokens: true,
	})
	d := testenv.StartDovecot(t, testenv.DovecotOptions{
		Users:       map[string]string{"sales": "unused-Pw-1", "info": "unused-Pw-2"},
		MailboxCert: ca,
		OAuth2:      srv,
	})
	smtpSrv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		TLS: ca,
		AuthBearer: func(user, token string) error {
			got, err := srv.Introspect(token)
			if err == nil && got != user {
				err = fmt.Errorf("token of %s used by %s", got, user)
			}
			return err
		},
	})
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "refresh")
	if err := os.WriteFile(secretFile, []byte(refreshTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("E2E_POP_SECRET", clientSecret)
	t.Setenv("E2E_RELAY_SECRET", relaySecret)
	host, port, _ := strings.Cut(smtpSrv.Addr, ":")
	yaml := fmt.Sprintf(`postmaster: postmaster@corp.example
delivery:
  host: %s
  port: %s
  tls: starttls
  timeout: 10s
  ca_file: %[3]s
  auth:
    mechanism: oauthbearer
    username: relay@corp.example
    oauth:
      token_url: %[4]s
      client_id: relay-app
      client_secret: env:E2E_RELAY_SECRET
      ca_file: %[3]s
archive: {dir: %[5]s/archive}
ledger: {path: %[5]s/ledger.db}
mailboxes:
  - id: sales
    server: %[6]s
    ca_file: %[3]s
    username: sales
    auth_mechanism: xoauth2
    oauth:
      token_url: %[4]s
      client_id: pop-app
      client_secret: env:E2E_POP_SECRET
      scopes: [https://outlook.office.com/POP.AccessAsUser.All]
      ca_file: %[3]s
    deliver_to: [sales@corp.example]
  - id: info
    server: %[6]s
    ca_file: %[3]s
    username: info
    auth_mechanism: oauthbearer
    oauth:
      token_url: %[4]s
      client_id: public-app
      refresh_token: file:%[7]s
      ca_file: %[3]s
    deliver_to: [info@corp.example]
`, host, port, ca.CertFile, srv.TokenURL, dir, d.TLSAddr, secretFile)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Build(cfg, app.Stores{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var logBuf bytes.Buffer
	a.SetLogger(slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))

	poll := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, r := range a.Connector.PollAll(ctx, a.Mailboxes, 1) {
			if r.Err != nil || r.Delivered != 1 || r.Deleted != 1 {
				t.Fatalf("poll %s: %+v\n%s", r.Mailbox, r, d.LogTail(20))
			}
		}
	}
	d.Deliver(t, "sales", []byte("Subject: one\r\n\r\nfor sales\r\n"))
	d.Deliver(t, "info", []byte("Subject: one\r\n\r\nfor info\r\n"))
	poll(t)
	// Second round: every access token has expired at the endpoint although
	// the connector's cache still holds them; each side renews once.
	srv.ExpireAll()
	d.Deliver(t, "sales", []byte("Subject: two\r\n\r\nfor sales\r\n"))
	d.Deliver(t, "info", []byte("Subject: two\r\n\r\nfor info\r\n"))
	poll(t)

	if got := len(smtpSrv.Transactions()); got != 4 {
		t.Errorf("SMTP server accepted %d messages, want 4", got)
	}
	// Per round one grant per token source: pop-app and relay-app twice
	// (client_credentials), info twice (refresh_token, the second with the
	// rotated token).
	if cc, rt := srv.Grants("client_credentials"), srv.Grants("refresh_token"); cc != 4 || rt != 2 {
		t.Errorf("grants: client_credentials %d, refresh_token %d; want 4 and 2", cc, rt)
	}
	if srv.RefreshTokenFor("info") == refreshTok {
		t.Error("the refresh token was not rotated")
	}
	for _, s := range []string{clientSecret, relaySecret, refreshTok} {
		if strings.Contains(logBuf.String(), s) {
			t.Errorf("the log contains the secret %q", s)
		}
	}
}

// TestOAuthWrongClientSecret: a wrong client secret fails the poll with an
// error naming the token endpoint's refusal, never the secret, and leaves
// the mail on the server.
func TestOAuthWrongClientSecret(t *testing.T) {
	const wrong = "Wrong-Client-Secret-77a"
	ca := testenv.NewCA(t)
	srv := testenv.StartOAuthServer(t, testenv.OAuthServerOptions{
		CA: ca, Clients: map[string]string{"pop-app": "Right-Secret-1"}, ClientUsers: map[string]string{"pop-app": "sales"},
	})
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"sales": "unused-Pw-1"}, MailboxCert: ca, OAuth2: srv})
	d.Deliver(t, "sales", []byte("Subject: stays\r\n\r\nx\r\n"))
	t.Setenv("E2E_WRONG_SECRET", wrong)
	dial := func() error {
		tokens, err := app.TokenSource(config.OAuth{TokenURL: srv.TokenURL, Grant: config.OAuthClientCredentials, ClientID: "pop-app",
			ClientSecret: config.SecretRef("env:E2E_WRONG_SECRET"), CAFile: ca.CertFile}, config.NewSecrets())
		if err != nil {
			t.Fatal(err)
		}
		var logBuf bytes.Buffer
		src, err := app.DialPOP3OAuth(pop3.Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: ca.ClientConfig("127.0.0.1"), Timeout: 10 * time.Second,
			Logger: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))},
			pop3.MechXOAUTH2, "sales", tokens)(context.Background())
		if src != nil {
			src.Close()
		}
		if strings.Contains(logBuf.String(), wrong) {
			t.Errorf("the transcript contains the client secret")
		}
		return err
	}
	err := dial()
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != "invalid_client" || oe.Temporary || !strings.Contains(err.Error(), "check client_id and client_secret") {
		t.Fatalf("err = %v, want a permanent *oauth.Error invalid_client with a hint", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("the error contains the client secret: %v", err)
	}
	if !srv.SawInRequest(wrong) {
		t.Error("the test endpoint never saw the secret: the test does not test what it claims")
	}
	if n := d.Count(t, "sales"); n != 1 {
		t.Errorf("maildrop holds %d messages, want 1", n)
	}
}
