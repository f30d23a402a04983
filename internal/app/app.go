// Package app turns a validated configuration into a running connector:
// it chooses the implementations (local archive folder and bbolt ledger
// here; S3 and DynamoDB on AWS), resolves secrets only when a connection
// needs them, and builds the TLS settings (verification on unless the
// configuration turns it off).
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/archive/fsarchive"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/boltledger"
	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/recipients"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
)

// App is a connector with its mailboxes, ready to poll.
type App struct {
	Config    *config.Config
	Connector *connector.Connector
	Mailboxes []connector.Mailbox
	Secrets   *config.Secrets
	Routing   *Routing
	closers   []func() error
	logs      logHolder
}

// Close releases the ledger and archive.
func (a *App) Close() error {
	var first error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Stores are the storage implementations to use; nil fields get the local
// defaults from the configuration.
type Stores struct {
	Archive archive.Archive
	Ledger  ledger.Ledger
}

// OpenLocalStores opens the archive folder and the ledger file the
// configuration names.
func OpenLocalStores(cfg *config.Config) (Stores, func() error, error) {
	arc, err := fsarchive.New(cfg.Archive.Dir)
	if err != nil {
		return Stores{}, nil, fmt.Errorf("archive %s: %w", cfg.Archive.Dir, err)
	}
	led, err := boltledger.Open(cfg.Ledger.Path, boltledger.Options{Timeout: 5 * time.Second})
	if err != nil {
		arc.Close()
		return Stores{}, nil, err
	}
	// The archive's Close removes the temporary files it made ahead.
	closeBoth := func() error { return errors.Join(led.Close(), arc.Close()) }
	return Stores{Archive: arc, Ledger: led}, closeBoth, nil
}

// Build wires cfg into an App. Secrets are resolved lazily, at each dial,
// so a wrong reference is reported for its mailbox and the others go on.
func Build(cfg *config.Config, stores Stores, secrets *config.Secrets) (*App, error) {
	if secrets == nil {
		secrets = config.NewSecrets()
	}
	a := &App{Config: cfg, Secrets: secrets}
	if stores.Archive == nil || stores.Ledger == nil {
		local, closeFn, err := OpenLocalStores(cfg)
		if err != nil {
			return nil, err
		}
		// A crash mid-Put leaves a temp file, never a partial object; a
		// process that will write clears those older than any Put in
		// flight could be (read-only commands such as status do not).
		if arc, ok := local.Archive.(*fsarchive.Archive); ok {
			if _, err := arc.Sweep(context.Background(), time.Hour); err != nil {
				closeFn()
				return nil, fmt.Errorf("archive %s: %w", cfg.Archive.Dir, err)
			}
		}
		a.closers = append(a.closers, closeFn)
		if stores.Archive == nil {
			stores.Archive = local.Archive
		}
		if stores.Ledger == nil {
			stores.Ledger = local.Ledger
		}
	}
	routing, err := NewRouting(cfg, secrets)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.Routing = routing
	host, _ := os.Hostname()
	helo := cfg.Delivery.HELODomain
	if helo == "" {
		helo = host
	}
	notifyTo := cfg.Notify.To
	if notifyTo == "" {
		notifyTo = cfg.Postmaster
	}
	a.Connector = &connector.Connector{
		Archive:   stores.Archive,
		Ledger:    stores.Ledger,
		Routes:    routing.Table,
		DialRoute: routing.Dialer(),
		Settings: connector.Settings{
			Postmaster:         cfg.Postmaster,
			Hostname:           helo,
			RetryInterval:      cfg.Retry.Interval,
			MaxRetryInterval:   cfg.Retry.MaxInterval,
			GiveUpAfter:        cfg.Retry.GiveUpAfter,
			DeliveryTimeout:    cfg.Delivery.Timeout,
			LeaseOwner:         host + "/" + strconv.Itoa(os.Getpid()),
			MaxTraceHops:       cfg.LoopLimit,
			DeliveriesInFlight: cfg.DeliveriesInFlight,
			ReplyWindow:        cfg.ReplyWindow,
			RetrPipelineDepth:  cfg.POP3PipelineDepth,
			Notify: connector.NotifySettings{
				To: notifyTo, Spam: cfg.Notify.Spam, UnknownRecipient: cfg.Notify.UnknownRecipient,
				Badmail: cfg.Notify.Badmail, RelayDenied: cfg.Notify.RelayDenied, TooLarge: cfg.Notify.TooLarge,
			},
		},
	}
	for _, m := range cfg.Mailboxes {
		if !m.Enabled {
			continue
		}
		mb, err := mailboxFor(m, secrets, &a.logs)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.Mailboxes = append(a.Mailboxes, mb)
	}
	return a, nil
}

func mailboxFor(m config.Mailbox, secrets *config.Secrets, logs *logHolder) (connector.Mailbox, error) {
	host, _, err := net.SplitHostPort(m.Server)
	if err != nil {
		return connector.Mailbox{}, fmt.Errorf("mailbox %s: server %q: %w", m.ID, m.Server, err)
	}
	opts, err := POP3Options(m)
	if err != nil {
		return connector.Mailbox{}, fmt.Errorf("mailbox %s: %w", m.ID, err)
	}
	dial, err := popDialer(m, opts, secrets, logs)
	if err != nil {
		return connector.Mailbox{}, fmt.Errorf("mailbox %s: %w", m.ID, err)
	}
	policy := connector.DeleteAfterDelivery
	switch m.AfterDelivery {
	case config.AfterDeliveryKeep:
		policy = connector.Keep
	case config.AfterDeliveryKeepDays:
		policy = connector.KeepDays
	}
	var global *recipients.Resolver
	if m.Type == config.MailboxGlobal && m.Global != nil {
		if global, err = recipients.NewResolver(m.Global.Options()); err != nil {
			return connector.Mailbox{}, fmt.Errorf("mailbox %s: %w", m.ID, err)
		}
	}
	und := connector.Undeliverable{Action: connector.UndeliverableAction(m.Undeliverable.Action)}
	if und.Action == connector.DeleteRejected {
		und.DeleteOnCodes = m.Undeliverable.DeleteCodes()
	}
	return connector.Mailbox{
		Global:        global,
		Undeliverable: und,
		ID:            m.ID,
		Server:        host,
		DeliverTo:     m.DeliverTo,
		Sender:        m.Sender,
		AfterDelivery: policy,
		KeepFor:       time.Duration(m.KeepDays) * 24 * time.Hour,
		MaxMessages:   m.MaxMessagesPerPoll,
		MaxBytes:      int64(m.MaxBytesPerPoll),
		PollTimeout:   m.PollTimeout,
		Dial:          dial,
		// Resolved by config: the mailbox's own value or the global one.
		DuplicateWindow: m.DuplicateWindow,
	}, nil
}

// POP3Options are the POP3 client settings of mailbox m.
func POP3Options(m config.Mailbox) (pop3.Options, error) {
	tlsConf, err := tlsConfig(m.VerifyCertificate, m.CAFile, m.ServerName)
	if err != nil {
		return pop3.Options{}, err
	}
	return pop3.Options{
		Addr:               m.Server,
		TLS:                m.TLS,
		TLSConfig:          tlsConf,
		ServerName:         m.ServerName,
		AllowPlaintextAuth: m.AllowPlaintextAuth,
		Timeout:            m.Timeout,
	}, nil
}

// popDialer signs in as the mailbox's auth_mechanism says. An OAuth
// mailbox gets one token source for the life of the App, so that the
// access token is reused across polls until it expires.
func popDialer(m config.Mailbox, opts pop3.Options, secrets *config.Secrets, logs *logHolder) (connector.SourceDialer, error) {
	mech := pop3.Mechanism(strings.ToUpper(string(m.AuthMechanism)))
	if m.AuthMechanism == config.MailboxAuthAuto {
		mech = pop3.MechAuto
	}
	if m.AuthMechanism.IsOAuth() {
		if m.OAuth == nil {
			return nil, fmt.Errorf("auth_mechanism %s needs an oauth block", m.AuthMechanism)
		}
		tokens, err := TokenSource(*m.OAuth, secrets)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) (connector.Source, error) {
			o := opts
			o.Logger = logs.get()
			return DialPOP3OAuth(o, mech, m.Username, tokens)(ctx)
		}, nil
	}
	sec := m.Password
	return func(ctx context.Context) (connector.Source, error) {
		o := opts
		o.Logger = logs.get()
		return DialPOP3Mechanism(o, mech, m.Username, func(ctx context.Context) (string, error) {
			return secrets.Resolve(ctx, sec)
		})(ctx)
	}, nil
}

// TokenSource makes the OAuth token source of an oauth block. Its secrets
// are resolved when a token is requested, not now.
func TokenSource(o config.OAuth, secrets *config.Secrets) (*oauth.Source, error) {
	tc, err := tlsConfig(true, o.CAFile, "")
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	cfg := oauth.Config{
		TokenURL:  o.TokenURL,
		Grant:     oauth.Grant(o.Grant),
		ClientID:  o.ClientID,
		Scopes:    o.Scopes,
		TLSConfig: tc,
	}
	if !o.ClientSecret.IsZero() {
		sec := o.ClientSecret
		cfg.ClientSecret = func(ctx context.Context) (string, error) { return secrets.Resolve(ctx, sec) }
	}
	if !o.RefreshToken.IsZero() {
		sec := o.RefreshToken
		cfg.RefreshToken = func(ctx context.Context) (string, error) { return secrets.Resolve(ctx, sec) }
	}
	return oauth.New(cfg)
}

// logHolder lets a logger chosen after Build reach the dialers built in it.
type logHolder struct{ p atomic.Pointer[slog.Logger] }

func (h *logHolder) get() *slog.Logger {
	if h == nil {
		return nil
	}
	return h.p.Load()
}

// SetLogger sends the pipeline's log, and the POP3 and SMTP transcripts
// (at debug level, never with a secret), to log.
func (a *App) SetLogger(log *slog.Logger) {
	a.logs.p.Store(log)
	a.Connector.Logger = log
	if a.Routing != nil {
		a.Routing.Logger = log
	}
}

// Routing is the configuration's delivery routes: the route table and the
// SMTP client options of each route.
type Routing struct {
	Table *route.Table
	// Logger receives the SMTP transcripts at debug level; nil discards.
	Logger *slog.Logger
	opts   map[string]relay.Options
	pass   map[string]func(context.Context) (string, error)
}

// ConfigRoutes returns the configured routes; a configuration built in code
// with only Delivery has that one route, serving "*".
func ConfigRoutes(cfg *config.Config) []config.Route {
	if len(cfg.Routes) > 0 {
		return cfg.Routes
	}
	return []config.Route{config.DeliveryRoute(cfg.Delivery)}
}

// NewRouting builds the routes of cfg. Passwords are resolved at each dial.
func NewRouting(cfg *config.Config, secrets *config.Secrets) (*Routing, error) {
	r := &Routing{opts: map[string]relay.Options{}, pass: map[string]func(context.Context) (string, error){}}
	var rs []route.Route
	for _, cr := range ConfigRoutes(cfg) {
		o, err := RelayOptions(cr.Delivery)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", cr.Name, err)
		}
		key := strings.ToLower(cr.Name)
		if cr.Auth != nil && cr.Auth.Mechanism.IsOAuth() && cr.Auth.OAuth != nil {
			// One token source per route for the life of the App.
			if o.Auth.Token, err = TokenSource(*cr.Auth.OAuth, secrets); err != nil {
				return nil, fmt.Errorf("route %s: %w", cr.Name, err)
			}
		}
		r.opts[key] = o
		if cr.Auth != nil && !cr.Auth.Mechanism.IsOAuth() {
			sec := cr.Auth.Password
			r.pass[key] = func(ctx context.Context) (string, error) { return secrets.Resolve(ctx, sec) }
		}
		rs = append(rs, route.Route{Name: cr.Name, Host: cr.Host, Port: cr.Port, AddressSpaces: cr.AddressSpaces, Cost: cr.Cost, MaxConnections: cr.MaxConnections})
	}
	t, err := route.New(rs)
	if err != nil {
		return nil, err
	}
	r.Table = t
	return r, nil
}

// Options returns the SMTP client options of the named route (without the
// password).
func (r *Routing) Options(name string) (relay.Options, bool) {
	o, ok := r.opts[strings.ToLower(name)]
	return o, ok
}

// Dial connects to rt, resolving its password first.
func (r *Routing) Dial(ctx context.Context, rt route.Route) (*relay.Client, error) {
	key := strings.ToLower(rt.Name)
	o, ok := r.opts[key]
	if !ok {
		return nil, fmt.Errorf("route %q is not configured", rt.Name)
	}
	o.Addr = rt.Addr()
	o.Logger = r.Logger
	if o.Auth != nil && r.pass[key] != nil {
		pass, err := r.pass[key](ctx)
		if err != nil {
			return nil, err
		}
		a := *o.Auth
		a.Password = pass
		o.Auth = &a
	}
	return relay.Dial(ctx, o)
}

// Dialer adapts Dial to the connector.
func (r *Routing) Dialer() connector.RouteDialer {
	return func(ctx context.Context, rt route.Route) (connector.Relay, error) {
		c, err := r.Dial(ctx, rt)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// RelayOptions builds the SMTP client options of the delivery endpoint.
func RelayOptions(d config.Delivery) (relay.Options, error) {
	tlsConf, err := tlsConfig(d.VerifyCertificate, d.CAFile, d.ServerName)
	if err != nil {
		return relay.Options{}, fmt.Errorf("delivery: %w", err)
	}
	o := relay.Options{
		Addr:       d.Addr(),
		TLS:        d.TLS,
		TLSConfig:  tlsConf,
		ServerName: d.ServerName,
		HeloDomain: d.HELODomain,
		Timeout:    d.Timeout,
	}
	if d.Auth != nil {
		o.Auth = &relay.AuthConfig{Mechanism: string(d.Auth.Mechanism), Username: d.Auth.Username}
	}
	return o, nil
}

// tlsConfig trusts the system roots plus caFile, and skips verification
// only when the configuration explicitly says so.
func tlsConfig(verify bool, caFile, serverName string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if !verify {
		c.InsecureSkipVerify = true
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate found", caFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}
