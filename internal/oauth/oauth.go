// Package oauth obtains OAuth 2.0 access tokens for POP3 and SMTP sign-in
// (SASL XOAUTH2 and OAUTHBEARER, RFC 7628) from a token endpoint, with the
// client-credentials grant (RFC 6749 §4.4) or the refresh-token grant
// (RFC 6749 §6).
//
// It is a small net/http client rather than golang.org/x/oauth2 because the
// connector needs three things that library does not give: every request
// bounded by the caller's context (x/oauth2 binds one context when the
// TokenSource is made), dropping a cached token that the mail server has
// just rejected although its expiry has not passed, and errors whose text
// is known never to contain a secret (x/oauth2 quotes the response body).
//
// Guarantees:
//
//   - The token URL must be https; the certificate is verified against
//     Config.TLSConfig's roots (the system roots if nil), TLS 1.2 minimum.
//     Redirects are not followed, so the client secret goes only to the
//     configured URL. The client authenticates with client_id and
//     client_secret in the request body (RFC 6749 §2.3.1), the form both
//     Microsoft's identity platform and Google document.
//   - A token is cached until its expiry minus Config.Skew (default 60s,
//     at most half of the token's lifetime). A token without expires_in is
//     kept until the mail server rejects it.
//   - Authenticate retries a login at most once, and only when the
//     rejected token came from the cache: a token issued moments ago that
//     is rejected points at the user name, scope or permissions, which a
//     new token would not change.
//   - Concurrent callers share one cached token and one request in flight;
//     waiting for another caller's request honours the context.
//   - No error, String or LogValue contains an access token, refresh token
//     or client secret; error descriptions sent by the token endpoint are
//     scrubbed of them before they are quoted.
//
// What it cannot do: refresh tokens are kept in memory only. When the
// token endpoint rotates the refresh token (returns a new one with the
// access token), the new one is used for the rest of the process's life,
// but it is not written back to the configured secret: a restart, or a
// new Lambda instance, starts again from the configured refresh token.
// Where the provider revokes a refresh token once its successor is used,
// the configured one then no longer works and must be replaced by the
// administrator. Authorization-code and device-code sign-in (getting the
// first refresh token) are out of scope; so are private-key-JWT client
// authentication (RFC 7523) and token revocation.
package oauth

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/oauth/oauthsasl"
)

// Grant is an OAuth 2.0 grant type.
type Grant string

const (
	// ClientCredentials is RFC 6749 §4.4: the application signs in as
	// itself (Microsoft 365 app-only access to a mailbox).
	ClientCredentials Grant = "client_credentials"
	// RefreshToken is RFC 6749 §6: a refresh token obtained once by
	// interactive sign-in is exchanged for access tokens.
	RefreshToken Grant = "refresh_token"
)

// Default values of Config.
const (
	DefaultTimeout = 30 * time.Second
	DefaultSkew    = 60 * time.Second
)

// maxResponse bounds a token endpoint response; a token response is a few
// kilobytes.
const maxResponse = 1 << 20

// Config describes one OAuth client at one token endpoint.
type Config struct {
	// TokenURL is the token endpoint, https only.
	TokenURL string
	// Grant is ClientCredentials or RefreshToken.
	Grant Grant
	// ClientID is the application (client) id. Required.
	ClientID string
	// ClientSecret returns the client secret. Required for
	// ClientCredentials; nil for a public client with RefreshToken.
	ClientSecret func(context.Context) (string, error)
	// RefreshToken returns the configured refresh token (RefreshToken
	// grant only). It is called until the endpoint hands out a new one.
	RefreshToken func(context.Context) (string, error)
	// Scopes are sent space-separated as the scope parameter, if any.
	Scopes []string
	// TLSConfig supplies the roots that verify the endpoint (cloned);
	// nil means the system roots.
	TLSConfig *tls.Config
	// Timeout bounds one token request (DefaultTimeout if zero); the
	// context's deadline applies as well.
	Timeout time.Duration
	// Skew renews a cached token this long before it expires (DefaultSkew
	// if zero).
	Skew time.Duration
}

// Token is an access token.
type Token struct {
	AccessToken string
	// Expiry is when the endpoint said the token expires; zero if it did
	// not say.
	Expiry time.Time
	// Fresh is true when the token was obtained from the endpoint by this
	// call rather than taken from the cache.
	Fresh bool
}

// String never shows the token.
func (t Token) String() string {
	if t.Expiry.IsZero() {
		return "oauth.Token([redacted])"
	}
	return "oauth.Token([redacted], expires " + t.Expiry.UTC().Format(time.RFC3339) + ")"
}

// GoString keeps %#v from printing the token.
func (t Token) GoString() string { return t.String() }

// LogValue implements slog.LogValuer without the token.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// Error is a failed token request.
type Error struct {
	// URL is the token endpoint without query.
	URL string
	// Status is the HTTP status, 0 when no response arrived.
	Status int
	// Code is the OAuth error code of RFC 6749 §5.2 ("invalid_client",
	// "invalid_grant", ...), "" if none.
	Code string
	// Description is the endpoint's error_description, scrubbed of
	// secrets and shortened.
	Description string
	// Temporary reports whether asking again later may succeed: network
	// failures, timeouts, HTTP 5xx and 429, and anything unrecognised.
	// A rejected client or grant (HTTP 400/401 with an error code) is not.
	Temporary bool
	// Err is the underlying error, if any (never carrying a secret).
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("oauth: token endpoint ")
	b.WriteString(e.URL)
	b.WriteString(": ")
	switch {
	case e.Status != 0:
		b.WriteString("HTTP " + strconv.Itoa(e.Status))
		if e.Code != "" {
			b.WriteString(": " + e.Code)
		}
		if e.Description != "" {
			b.WriteString(": " + e.Description)
		}
		if hint := codeHint(e.Code); hint != "" {
			b.WriteString(" (" + hint + ")")
		}
		if e.Err != nil {
			b.WriteString(": " + e.Err.Error())
		}
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("failed")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// codeHint says in an administrator's words what an RFC 6749 §5.2 error
// code usually means.
func codeHint(code string) string {
	switch code {
	case "invalid_client":
		return "check client_id and client_secret"
	case "invalid_grant":
		return "the refresh token is expired, revoked or belongs to another client; sign in again and update refresh_token"
	case "unauthorized_client":
		return "the application is not allowed to use this grant"
	case "invalid_scope":
		return "check scopes"
	}
	return ""
}

// Source hands out access tokens of one Config. It is safe for concurrent
// use.
type Source struct {
	cfg    Config
	url    string // for errors: TokenURL without query
	client *http.Client

	sem chan struct{} // one token request at a time; guards the fields below

	cached  Token
	validTo time.Time // when the cached token stops being handed out
	refresh string    // a rotated refresh token, in memory only
}

// New checks cfg and returns a Source. It makes no request.
func New(cfg Config) (*Source, error) {
	u, err := url.Parse(cfg.TokenURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("oauth: token URL %q is not an absolute URL", cfg.TokenURL)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("oauth: token URL %q must use https", cfg.TokenURL)
	}
	if u.User != nil {
		return nil, errors.New("oauth: token URL must not contain a user name or password")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("oauth: client id is required")
	}
	switch cfg.Grant {
	case ClientCredentials:
		if cfg.ClientSecret == nil {
			return nil, errors.New("oauth: the client_credentials grant needs a client secret")
		}
	case RefreshToken:
		if cfg.RefreshToken == nil {
			return nil, errors.New("oauth: the refresh_token grant needs a refresh token")
		}
	default:
		return nil, fmt.Errorf("oauth: unknown grant %q (want client_credentials or refresh_token)", cfg.Grant)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Skew <= 0 {
		cfg.Skew = DefaultSkew
	}
	var tc *tls.Config
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	u.RawQuery, u.Fragment = "", ""
	return &Source{
		cfg: cfg,
		url: u.String(),
		client: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// The body carries the client secret: never resend it elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		sem: make(chan struct{}, 1),
	}, nil
}

func (s *Source) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("oauth: waiting for a token request in progress: %w", context.Cause(ctx))
	}
}

func (s *Source) unlock() { <-s.sem }

// Token returns the cached access token while it is valid, otherwise a new
// one from the token endpoint. Errors are *Error or wrap the secret
// resolver's or the context's error.
func (s *Source) Token(ctx context.Context) (Token, error) {
	if err := s.lock(ctx); err != nil {
		return Token{}, err
	}
	defer s.unlock()
	if s.cached.AccessToken != "" && time.Now().Before(s.validTo) {
		t := s.cached
		t.Fresh = false
		return t, nil
	}
	return s.fetch(ctx)
}

// Renew drops rejected from the cache (if it is still the cached token)
// and returns a token that is not rejected: one another caller obtained
// meanwhile, or a new one from the endpoint.
func (s *Source) Renew(ctx context.Context, rejected string) (Token, error) {
	if err := s.lock(ctx); err != nil {
		return Token{}, err
	}
	defer s.unlock()
	if s.cached.AccessToken == rejected {
		s.cached, s.validTo = Token{}, time.Time{}
	}
	if s.cached.AccessToken != "" && time.Now().Before(s.validTo) {
		t := s.cached
		t.Fresh = false
		return t, nil
	}
	return s.fetch(ctx)
}

// Authenticate calls login with an access token. If login fails with an
// error for which rejected reports true (the server refused the token) and
// that token came from the cache, the token is renewed and login is called
// once more. login may be called on the same connection twice.
func (s *Source) Authenticate(ctx context.Context, login func(ctx context.Context, accessToken string) error, rejected func(error) bool) error {
	tok, err := s.Token(ctx)
	if err != nil {
		return err
	}
	err = login(ctx, tok.AccessToken)
	if err == nil || tok.Fresh || !rejected(err) {
		return err
	}
	next, rerr := s.Renew(ctx, tok.AccessToken)
	if rerr != nil {
		return fmt.Errorf("%w; renewing the rejected access token failed: %w", err, rerr)
	}
	return login(ctx, next.AccessToken)
}

// tokenResponse is RFC 6749 §5.1 and §5.2 in one.
type tokenResponse struct {
	AccessToken  string          `json:"access_token"`
	TokenType    string          `json:"token_type"`
	ExpiresIn    json.RawMessage `json:"expires_in"` // a number; some servers send a string
	RefreshToken string          `json:"refresh_token"`

	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// fetch performs one grant; the caller holds the lock.
func (s *Source) fetch(ctx context.Context) (Token, error) {
	form := url.Values{}
	form.Set("grant_type", string(s.cfg.Grant))
	form.Set("client_id", s.cfg.ClientID)
	var secrets []string
	if s.cfg.ClientSecret != nil {
		secret, err := s.cfg.ClientSecret(ctx)
		if err != nil {
			return Token{}, fmt.Errorf("oauth: client secret: %w", err)
		}
		form.Set("client_secret", secret)
		secrets = append(secrets, secret)
	}
	if s.cfg.Grant == RefreshToken {
		rt := s.refresh
		if rt == "" {
			var err error
			if rt, err = s.cfg.RefreshToken(ctx); err != nil {
				return Token{}, fmt.Errorf("oauth: refresh token: %w", err)
			}
		}
		form.Set("refresh_token", rt)
		secrets = append(secrets, rt)
	}
	if len(s.cfg.Scopes) > 0 {
		form.Set("scope", strings.Join(s.cfg.Scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, &Error{URL: s.url, Err: errors.New("cannot build the request")}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return Token{}, &Error{URL: s.url, Temporary: true, Err: requestError(ctx, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return Token{}, &Error{URL: s.url, Status: resp.StatusCode, Temporary: true, Err: requestError(ctx, err)}
	}
	if len(body) > maxResponse {
		return Token{}, &Error{URL: s.url, Status: resp.StatusCode, Temporary: true, Err: errors.New("response larger than 1 MiB")}
	}
	var tr tokenResponse
	jsonErr := json.Unmarshal(body, &tr)
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); jsonErr == nil && mt != "" && mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		jsonErr = fmt.Errorf("content type %s", mt)
	}
	if resp.StatusCode != http.StatusOK || tr.Error != "" {
		e := &Error{URL: s.url, Status: resp.StatusCode, Temporary: true}
		if jsonErr == nil && validCode(tr.Error) {
			e.Code = tr.Error
			e.Description = scrub(tr.ErrorDescription, secrets)
			// RFC 6749 §5.2: the request was understood and refused.
			e.Temporary = resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || tr.Error == "temporarily_unavailable"
		}
		return Token{}, e
	}
	if jsonErr != nil {
		return Token{}, &Error{URL: s.url, Status: resp.StatusCode, Temporary: true, Err: errors.New("response is not a JSON token response")}
	}
	if tr.AccessToken == "" {
		return Token{}, &Error{URL: s.url, Status: resp.StatusCode, Temporary: true, Err: errors.New("response has no access_token")}
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return Token{}, &Error{URL: s.url, Status: resp.StatusCode, Err: fmt.Errorf("token_type %q is not Bearer", truncate(tr.TokenType))}
	}
	tok := Token{AccessToken: tr.AccessToken, Fresh: true}
	validTo := time.Now().Add(100 * 365 * 24 * time.Hour) // no expires_in: until rejected
	if lifetime, ok := parseExpiresIn(tr.ExpiresIn); ok {
		tok.Expiry = start.Add(lifetime)
		skew := min(s.cfg.Skew, lifetime/2)
		validTo = tok.Expiry.Add(-skew)
	}
	if tr.RefreshToken != "" {
		s.refresh = tr.RefreshToken // rotated (RFC 6749 §6); memory only
	}
	s.cached, s.validTo = tok, validTo
	return tok, nil
}

// parseExpiresIn reads expires_in in seconds (RFC 6749 §5.1), as a number
// or, as some servers send it, a string of digits.
func parseExpiresIn(raw json.RawMessage) (time.Duration, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false
	}
	s := strings.Trim(string(raw), `"`)
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n <= 0 || n > 10*365*24*3600 {
		return 0, false
	}
	return time.Duration(n * float64(time.Second)), true
}

// validCode accepts an RFC 6749 §5.2 error code: printable ASCII without
// '"' and '\'.
func validCode(c string) bool {
	if c == "" || len(c) > 64 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] > 0x7e || c[i] == '"' || c[i] == '\\' {
			return false
		}
	}
	return true
}

// requestError describes a transport failure; url.Error quotes only the
// token URL, which carries no secret.
func requestError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return err
}

func scrub(s string, secrets []string) string {
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return truncate(s)
}

func truncate(s string) string { return oauthsasl.Printable(s, 200) }
