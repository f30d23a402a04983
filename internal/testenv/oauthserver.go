package testenv

import (
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// OAuthServerOptions configures StartOAuthServer.
type OAuthServerOptions struct {
	// CA signs the server certificate (localhost, 127.0.0.1); nil makes a
	// new one (available as OAuthServer.CA either way).
	CA *CA
	// Clients maps client id to client secret. A client with an empty
	// secret is public: it may use the refresh-token grant without one.
	Clients map[string]string
	// ClientUsers maps a client id to the mailbox user its
	// client-credentials tokens act for (Microsoft 365 app-only access).
	// A client without an entry may not use that grant.
	ClientUsers map[string]string
	// RefreshTokens maps a refresh token to the user it signs in.
	RefreshTokens map[string]string
	// RotateRefreshTokens makes every refresh-token grant return a new
	// refresh token and retire the one used (strict rotation).
	RotateRefreshTokens bool
	// TokenLifetime is the expires_in of access tokens (default 1h).
	TokenLifetime time.Duration
}

// OAuthServer is a running OAuth 2.0 token endpoint with RFC 7662
// introspection, for tests of OAuth sign-in. It serves HTTPS on
// 127.0.0.1 with a certificate from CA:
//
//   - POST TokenURL: client_credentials and refresh_token grants (RFC 6749
//     §4.4, §6), client authentication in the body or with HTTP Basic,
//     RFC 6749 §5.2 errors.
//   - POST IntrospectURL: token=... (RFC 7662) answers {"active":true,
//     "username":...} or {"active":false}.
//   - GET TokenInfoURL + token: 200 with the introspection fields, or 401
//     for an unknown, expired or revoked token (what Dovecot's tokeninfo
//     lookup turns into a credentials failure).
//
// Access tokens are random; each records its user, client and expiry.
type OAuthServer struct {
	URL           string // https://127.0.0.1:port
	TokenURL      string
	IntrospectURL string
	TokenInfoURL  string // ends in "access_token="
	CA            *CA

	opts OAuthServerOptions
	srv  *http.Server

	mu       sync.Mutex
	tokens   map[string]*issuedToken
	refresh  map[string]string
	grants   map[string]int
	lookups  int
	bodySeen []string // every request body and Authorization header, for secret checks
}

type issuedToken struct {
	user, client string
	expiry       time.Time
	revoked      bool
}

// StartOAuthServer starts the endpoint; t.Cleanup stops it.
func StartOAuthServer(t T, opts OAuthServerOptions) *OAuthServer {
	t.Helper()
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	ca := opts.CA
	if ca == nil {
		ca = NewCA(t)
	}
	_, _, cert := ca.Issue(t, "localhost", "127.0.0.1")
	s := &OAuthServer{CA: ca, opts: opts, tokens: map[string]*issuedToken{}, refresh: map[string]string{}, grants: map[string]int{}}
	for rt, u := range opts.RefreshTokens {
		s.refresh[rt] = u
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.handleToken)
	mux.HandleFunc("POST /introspect", s.handleIntrospect)
	mux.HandleFunc("GET /tokeninfo", s.handleTokenInfo)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: OAuth server listen: %v", err)
	}
	s.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	s.URL = "https://" + ln.Addr().String()
	s.TokenURL = s.URL + "/token"
	s.IntrospectURL = s.URL + "/introspect"
	s.TokenInfoURL = s.URL + "/tokeninfo?access_token="
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		_ = s.srv.Close()
		<-done
	})
	return s
}

// Grants returns how many tokens the endpoint issued for grant
// ("client_credentials" or "refresh_token").
func (s *OAuthServer) Grants(grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[grant]
}

// Lookups returns how many introspection and tokeninfo requests were served.
func (s *OAuthServer) Lookups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups
}

// ExpireAll makes every access token issued so far expired, as if its
// lifetime had passed; clients that cached one do not know.
func (s *OAuthServer) ExpireAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := time.Now().Add(-time.Second)
	for _, tok := range s.tokens {
		tok.expiry = past
	}
}

// RevokeAll revokes every access token issued so far.
func (s *OAuthServer) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tok := range s.tokens {
		tok.revoked = true
	}
}

// RefreshTokenFor returns a refresh token currently valid for user, or "".
func (s *OAuthServer) RefreshTokenFor(user string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for rt, u := range s.refresh {
		if u == user {
			return rt
		}
	}
	return ""
}

// SawInRequest reports whether any request to the endpoint carried text,
// in its body or Authorization header.
func (s *OAuthServer) SawInRequest(text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.bodySeen {
		if strings.Contains(b, text) {
			return true
		}
	}
	return false
}

// Active returns the user of token if it is active.
func (s *OAuthServer) Active(token string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.activeLocked(token)
}

func (s *OAuthServer) activeLocked(token string) (string, bool) {
	tok := s.tokens[token]
	if tok == nil || tok.revoked || !time.Now().Before(tok.expiry) {
		return "", false
	}
	return tok.user, true
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (s *OAuthServer) handleToken(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodySeen = append(s.bodySeen, string(body), r.Header.Get("Authorization"))

	// RFC 6749 §2.3.1: Basic or the body, not both.
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	want, known := s.opts.Clients[id]
	if !known || (want != "" || secret != "") && subtle.ConstantTimeCompare([]byte(want), []byte(secret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	grant := form.Get("grant_type")
	var user, newRefresh string
	switch grant {
	case "client_credentials":
		if want == "" {
			oauthError(w, http.StatusBadRequest, "unauthorized_client", "a public client cannot use client_credentials")
			return
		}
		u, ok := s.opts.ClientUsers[id]
		if !ok {
			oauthError(w, http.StatusBadRequest, "unauthorized_client", "this client has no mailbox access")
			return
		}
		user = u
	case "refresh_token":
		rt := form.Get("refresh_token")
		u, ok := s.refresh[rt]
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "refresh token is invalid, expired or revoked")
			return
		}
		user = u
		if s.opts.RotateRefreshTokens {
			delete(s.refresh, rt)
			newRefresh = randomToken()
			s.refresh[newRefresh] = u
		}
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type "+grant+" is not supported")
		return
	}
	access := randomToken()
	s.tokens[access] = &issuedToken{user: user, client: id, expiry: time.Now().Add(s.opts.TokenLifetime)}
	s.grants[grant]++
	resp := map[string]any{
		"access_token": access,
		"token_type":   "Bearer",
		"expires_in":   int(s.opts.TokenLifetime / time.Second),
	}
	if newRefresh != "" {
		resp["refresh_token"] = newRefresh
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

// introspection is the RFC 7662 §2.2 answer for token.
func (s *OAuthServer) introspection(token string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	user, ok := s.activeLocked(token)
	if !ok {
		return map[string]any{"active": false}, false
	}
	tok := s.tokens[token]
	return map[string]any{
		"active":     true,
		"username":   user,
		"client_id":  tok.client,
		"token_type": "Bearer",
		"exp":        tok.expiry.Unix(),
	}, true
}

func (s *OAuthServer) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed form", http.StatusBadRequest)
		return
	}
	resp, _ := s.introspection(r.PostForm.Get("token"))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *OAuthServer) handleTokenInfo(w http.ResponseWriter, r *http.Request) {
	resp, ok := s.introspection(r.URL.Query().Get("access_token"))
	if !ok {
		oauthError(w, http.StatusUnauthorized, "invalid_token", "token is unknown, expired or revoked")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// Introspect asks the endpoint over HTTPS, as a resource server would
// (RFC 7662 §2.1), whether token is active and for which user.
func (s *OAuthServer) Introspect(token string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: s.CA.ClientConfig("127.0.0.1")}}
	defer c.CloseIdleConnections()
	resp, err := c.PostForm(s.IntrospectURL, url.Values{"token": {token}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		Active   bool   `json:"active"`
		Username string `json:"username"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	if !v.Active {
		return "", errors.New("token is not active")
	}
	return v.Username, nil
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
