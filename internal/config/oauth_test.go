package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const oauthBase = `postmaster: postmaster@corp.example
delivery:
  host: exchange.corp.example
  auth:
    mechanism: xoauth2
    username: relay@corp.example
    oauth:
      token_url: https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token
      client_id: 11111111-2222-3333-4444-555555555555
      client_secret: env:RELAY_CLIENT_SECRET
      scopes: [https://outlook.office365.com/.default]
mailboxes:
  - id: sales
    server: outlook.office365.com
    username: sales@contoso.example
    auth_mechanism: %MECH%
    deliver_to: [sales@corp.example]
%MAILBOX%`

func oauthYAML(mech, mailbox string) []byte {
	return []byte(strings.NewReplacer("%MECH%", mech, "%MAILBOX%", mailbox).Replace(oauthBase))
}

func TestParseOAuth(t *testing.T) {
	c, err := Parse(oauthYAML("oauthbearer", `    oauth:
      token_url: https://oauth2.googleapis.com/token
      client_id: popconn.apps.googleusercontent.com
      client_secret: file:/etc/popconn/google-client-secret
      refresh_token: ssm:/popconn/sales-refresh
      scopes: [https://mail.google.com/]
      ca_file: testdata/ca.pem
`))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Mailboxes[0]
	want := &OAuth{
		TokenURL: "https://oauth2.googleapis.com/token", Grant: OAuthRefreshToken, ClientID: "popconn.apps.googleusercontent.com",
		ClientSecret: SecretRef("file:/etc/popconn/google-client-secret"), RefreshToken: SecretRef("ssm:/popconn/sales-refresh"),
		Scopes: []string{"https://mail.google.com/"}, CAFile: "testdata/ca.pem",
	}
	if m.AuthMechanism != MailboxAuthOAuthBearer || !reflect.DeepEqual(m.OAuth, want) {
		t.Errorf("mailbox = %s %+v, want oauthbearer %+v", m.AuthMechanism, m.OAuth, want)
	}
	a := c.Delivery.Auth
	if a.Mechanism != AuthXOAUTH2 || a.OAuth == nil || a.OAuth.Grant != OAuthClientCredentials || a.OAuth.ClientSecret.Ref() != "env:RELAY_CLIENT_SECRET" {
		t.Errorf("delivery.auth = %+v / %+v, want xoauth2 with client_credentials (the default without refresh_token)", a, a.OAuth)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q", w)
	}
}

func TestParseOAuthErrors(t *testing.T) {
	tests := []struct {
		name, mech, mailbox string
		want                []string // path: message fragment
	}{
		{"oauth mechanism without block", "xoauth2", "", []string{"mailboxes[0].oauth: required with auth_mechanism: xoauth2"}},
		{"password mechanism without password", "apop", "", []string{"mailboxes[0].password: required"}},
		{"block with a password mechanism", "plain", "    password: env:P\n    oauth: {token_url: https://t.example/token, client_id: c, client_secret: env:S}\n",
			[]string{"mailboxes[0].oauth: applies only with auth_mechanism: xoauth2 or oauthbearer"}},
		{"unknown mechanism", "cram-md5", "    password: env:P\n", []string{"mailboxes[0].auth_mechanism: must be one of auto, user, plain, apop, xoauth2, oauthbearer"}},
		{"http and missing id", "xoauth2", "    oauth: {token_url: http://login.example/token, client_secret: env:S}\n",
			[]string{"mailboxes[0].oauth.token_url: must use https", "mailboxes[0].oauth.client_id: required"}},
		{"credentials in URL", "xoauth2", "    oauth: {token_url: 'https://id:pw@login.example/token', client_id: c, client_secret: env:S}\n",
			[]string{"mailboxes[0].oauth.token_url: must not contain a user name or password"}},
		{"inline client secret", "xoauth2", "    oauth: {token_url: https://login.example/token, client_id: c, client_secret: Sup3r-Secret-Value}\n",
			[]string{"mailboxes[0].oauth.client_secret: must be a secret reference"}},
		{"client credentials without secret", "xoauth2", "    oauth: {token_url: https://login.example/token, client_id: c, grant: client_credentials}\n",
			[]string{"mailboxes[0].oauth.client_secret: required"}},
		{"refresh grant without token", "xoauth2", "    oauth: {token_url: https://login.example/token, client_id: c, grant: refresh_token}\n",
			[]string{"mailboxes[0].oauth.refresh_token: required"}},
		{"unknown grant and bad scope", "xoauth2", "    oauth: {token_url: https://login.example/token, client_id: c, client_secret: env:S, grant: password, scopes: ['a b']}\n",
			[]string{"mailboxes[0].oauth.grant: must be client_credentials or refresh_token", "mailboxes[0].oauth.scopes[0]: must be one scope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(oauthYAML(tt.mech, tt.mailbox))
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v, want *Errors", err)
			}
			if len(*errs) != len(tt.want) {
				t.Fatalf("problems:\n%v\nwant %d: %q", err, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				path, msg, _ := strings.Cut(w, ": ")
				if g := (*errs)[i]; g.Path != path || !strings.Contains(g.Msg, msg) {
					t.Errorf("problem %d = %v, want %s: ...%s...", i, g, path, msg)
				}
			}
			if strings.Contains(err.Error(), "Sup3r-Secret-Value") {
				t.Errorf("the error repeats the inline secret: %v", err)
			}
		})
	}
}

func TestOAuthPasswordIsWarned(t *testing.T) {
	c, err := Parse(oauthYAML("xoauth2", "    password: env:P\n    oauth: {token_url: https://login.example/token, client_id: c, client_secret: env:S}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "mailboxes[0].password: is not used") {
		t.Errorf("Warnings() = %q, want one saying the password is not used", w)
	}
}
