// Package config reads popconn's YAML configuration: the model, its
// defaults, validation, and references to secrets.
//
// Guarantees:
//   - A *Config returned by Parse or Load is valid: Validate returns nil for
//     it, every default is filled in, and Mailbox.Server always carries a
//     port.
//   - Parsing is strict: an unknown or repeated key, a wrong type, a
//     malformed duration or size is an error, never silently ignored.
//   - Every problem is reported at once, as *Errors: one FieldError per
//     problem with its path ("mailboxes[2].server") and, from Parse, the
//     line it is on. Parse orders them by line; Validate by model order.
//   - Secrets are never held in a Config, only references to them (Secret);
//     an inline password is a validation error. No error, warning or
//     String/LogValue output contains a secret value, and an input that looks
//     like a literal password is not repeated either. Values are fetched only
//     through Secrets, at the moment they are needed.
//
// Defaults follow the vendor manuals the connector replaces: SMTP timeout
// 60s, retry failed deliveries every 10 minutes, give up (and tell the
// postmaster) after 5 days like Exchange's message expiration.
//
// What it cannot do: Validate checks syntax and local files (ca_file), not
// reachability; it does not resolve DNS, contact a server, or read secret
// values. Relative paths are relative to the working directory of the
// process, not to the configuration file.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/popconnector/popconnector/internal/route"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// Config is the whole configuration. Field comments give the YAML key.
type Config struct {
	// Postmaster receives notices and is the envelope sender of last
	// resort. Key: postmaster. Required.
	Postmaster string
	// PollInterval is the pause between rounds of `popconn run`. Key:
	// poll_interval. Default 5m.
	PollInterval time.Duration
	// ParallelMailboxes bounds how many mailboxes are polled at once. Key:
	// parallel_mailboxes. Default 4, 1..64.
	ParallelMailboxes int
	// DeliveriesInFlight is how many messages of one mailbox's poll are
	// delivered at once, each over an SMTP connection of its own (within
	// the route's max_connections, shared by every mailbox). Key:
	// deliveries_in_flight. Default defaultDeliveriesInFlight, 1..16
	// (1: one at a time, in server order).
	DeliveriesInFlight int
	// ReplyWindow is the declared reply window of the process: at most
	// this many messages, over every mailbox, are between their final "."
	// (or BDAT LAST) and the durable record of the SMTP server's reply.
	// A crash relays at most this many messages a second time; 1 is the
	// strictest. Key: reply_window. Default DefaultReplyWindow, 1..64.
	ReplyWindow int
	// POP3PipelineDepth is how many RETRs a poll sends ahead of the
	// message it reads when the server offers PIPELINING (RFC 2449); the
	// messages wait in the socket, not in memory. Key:
	// pop3_pipeline_depth. Default DefaultPOP3PipelineDepth, 1 (one at a
	// time) to 64.
	POP3PipelineDepth int
	Retry             Retry
	// Delivery is the single smart host of the `delivery:` shorthand, or
	// the first of Routes when `routes:` is used.
	Delivery Delivery
	// Routes are the SMTP endpoints mail is relayed to, each with its
	// address spaces and cost (like Exchange SMTP connectors). `delivery:`
	// is the shorthand for one route named "delivery" serving "*". Key:
	// routes.
	Routes []Route
	// Notify selects the notices sent to the postmaster. Key: notify.
	Notify Notify
	// LoopLimit is how many of popconn's own Received fields a message may
	// carry before it is treated as a mail loop and moved to badmail. Key:
	// loop_limit. Default 3.
	LoopLimit int
	// DuplicateWindow: a recipient that accepted a message with the same
	// Message-ID (from any mailbox) this recently is not sent another
	// copy; 0 turns duplicate suppression off. Key: duplicate_window.
	// Default 7d (168h), at most 365d.
	DuplicateWindow time.Duration
	Archive         Archive
	Ledger          Ledger
	Log             Log
	Mailboxes       []Mailbox

	// deliveryShorthand reports Routes built from `delivery:`, so that
	// problems are reported under delivery.*; bothDeliveryAndRoutes that
	// the file gave both.
	deliveryShorthand     bool
	bothDeliveryAndRoutes bool
}

// Retry is the schedule for failed deliveries. Key: retry.
type Retry struct {
	// Interval is the first delay after a failed delivery; each further
	// failure doubles it. Key: interval. Default 10m.
	Interval time.Duration
	// MaxInterval caps the doubling. Key: max_interval. Default 2h.
	MaxInterval time.Duration
	// GiveUpAfter is how long after a message was first seen the connector
	// stops retrying it; the message stays on the POP3 server and in the
	// archive, listed by `popconn status`. Key: give_up_after. Default 5d.
	GiveUpAfter time.Duration
}

// Delivery is the Exchange receive connector messages are relayed to. Key:
// delivery.
type Delivery struct {
	// Host is an FQDN, "localhost", an IP address, or a bracketed address
	// literal ("[192.0.2.10]", "[IPv6:2001:db8::1]"). Key: host. Required.
	Host string
	// Port defaults to 25. Key: port.
	Port int
	// TLS defaults to starttls; any of tlsmode's modes. Key: tls.
	TLS tlsmode.Mode
	// VerifyCertificate defaults to true. Key: verify_certificate.
	VerifyCertificate bool
	// CAFile is an extra PEM bundle trusted besides the system roots.
	// Key: ca_file.
	CAFile string
	// ServerName overrides the name checked in the certificate. Key:
	// server_name.
	ServerName string
	// HELODomain is sent in EHLO; empty means this machine's host name.
	// Key: helo_domain.
	HELODomain string
	// Timeout bounds each SMTP command. Key: timeout. Default 60s.
	Timeout time.Duration
	// MaxConnections bounds the SMTP connections open to this endpoint at
	// once, over every mailbox the process polls. Exchange limits
	// connections per source (the receive connector's
	// MaxInboundConnectionPerSource, 20 by default); the default stays
	// under it with room for test-relay and a second process. Key:
	// max_connections. Default DefaultMaxConnections, 1..100.
	MaxConnections int
	// Auth is nil when the receive connector needs no authentication.
	Auth *Auth
}

// Route is one SMTP endpoint with the recipient domains it serves. Key:
// routes[i]; it takes every key of delivery plus these.
type Route struct {
	// Name identifies the route in logs and test-relay output; unique.
	// Key: name. Required.
	Name string
	Delivery
	// AddressSpaces are the recipient domains served: "*", "*.net",
	// "contoso.com", "*.contoso.com". Key: address_spaces. Default ["*"].
	AddressSpaces []string
	// Cost orders routes whose address spaces match equally well, lowest
	// first; a route that cannot be reached passes its mail to the next.
	// Key: cost. Default 1, 1..100.
	Cost int
}

// DefaultRouteName names the route the `delivery:` shorthand defines.
const DefaultRouteName = "delivery"

// Notify switches the notices sent to the postmaster. Key: notify.
type Notify struct {
	// To receives the notices. Key: to. Default: postmaster.
	To string
	// Spam: Exchange rejected a message as spam. Key: spam. Default false.
	Spam bool
	// UnknownRecipient: Exchange does not know a recipient. Key:
	// unknown_recipient. Default false.
	UnknownRecipient bool
	// Badmail: a message was moved to badmail. Key: badmail. Default true.
	Badmail bool
	// RelayDenied: Exchange refused the connector itself (relay or
	// receive-connector permissions). Key: relay_denied. Default true.
	RelayDenied bool
	// TooLarge: Exchange (or the relay's check of its advertised SIZE)
	// refused a message as larger than it accepts. Key: too_large. Default
	// true: like badmail and relay_denied, the message cannot go until
	// someone raises a limit or fetches it from the archive, and no retry
	// will change that.
	TooLarge bool
}

// MailboxType says whose mail a POP3 mailbox holds.
type MailboxType string

const (
	// MailboxIndividual: one person's (or team's) mail, relayed to
	// deliver_to.
	MailboxIndividual MailboxType = "individual"
	// MailboxGlobal: a catch-all maildrop for a whole domain; recipients
	// come from each message's header (Global).
	MailboxGlobal MailboxType = "global"
)

// Global configures a global mailbox. Key: mailboxes[i].global.
type Global struct {
	// LocalDomains are Exchange's accepted domains. Key: local_domains.
	// Required.
	LocalDomains []string
	// HeaderOrder lists the envelope headers consulted, first match wins.
	// Key: header_order. Default Delivered-To, X-Original-To,
	// X-Envelope-To, Envelope-To, Received.
	HeaderOrder []string
	// UseTo falls back to Resent-To/Cc, then To/Cc. Key: use_to. Default
	// false.
	UseTo bool
	// Rewrite maps addresses ("alias@isp" -> "user@corp", "*@isp" ->
	// "*@corp"). Key: rewrite.
	Rewrite map[string]string
	// Fallback receives a message without a local recipient. Key:
	// fallback. Default: postmaster.
	Fallback string
}

// UndeliverableAction is what happens to a message Exchange rejects.
type UndeliverableAction string

const (
	UndeliverableLeave   UndeliverableAction = "leave"
	UndeliverableDelete  UndeliverableAction = "delete"
	UndeliverableBadmail UndeliverableAction = "badmail"
)

// DefaultDeleteOnCodes are the reply codes the Exchange connector manual
// names for "delete the message permanently".
var DefaultDeleteOnCodes = []string{"550 5.7.1", "554 5.7.1", "554 5.1.0"}

// Undeliverable is a mailbox's undeliverable option. Key:
// mailboxes[i].undeliverable.
type Undeliverable struct {
	// Action is leave (default), delete or badmail. Key: action.
	Action UndeliverableAction
	// DeleteOnCodes lists the replies that allow deleting, only with
	// delete. Key: delete_on_codes. Default DefaultDeleteOnCodes.
	DeleteOnCodes []string
}

// Addr returns Host and Port in the form net.Dial takes, with any address
// literal brackets and "IPv6:" tag removed.
func (d Delivery) Addr() string {
	h := d.Host
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
		if len(h) >= 5 && strings.EqualFold(h[:5], "IPv6:") {
			h = h[5:]
		}
	}
	return net.JoinHostPort(h, strconv.Itoa(d.Port))
}

// AuthMechanism is a SASL mechanism for SMTP AUTH.
type AuthMechanism string

const (
	AuthPlain       AuthMechanism = "plain"
	AuthLogin       AuthMechanism = "login"
	AuthXOAUTH2     AuthMechanism = "xoauth2"
	AuthOAuthBearer AuthMechanism = "oauthbearer"
)

// Auth is SMTP AUTH for delivery. Key: delivery.auth.
type Auth struct {
	// Mechanism defaults to plain. Key: mechanism.
	Mechanism AuthMechanism
	Username  string
	// Password is used by plain and login. Key: password.
	Password Secret
	// OAuth is set exactly when Mechanism is xoauth2 or oauthbearer. Key:
	// oauth.
	OAuth *OAuth
}

// MailboxAuth is how popconn signs in to a POP3 mailbox.
type MailboxAuth string

const (
	// MailboxAuthAuto: AUTH PLAIN when the server offers it, else
	// USER/PASS.
	MailboxAuthAuto        MailboxAuth = "auto"
	MailboxAuthUser        MailboxAuth = "user"
	MailboxAuthPlain       MailboxAuth = "plain"
	MailboxAuthAPOP        MailboxAuth = "apop"
	MailboxAuthXOAUTH2     MailboxAuth = "xoauth2"
	MailboxAuthOAuthBearer MailboxAuth = "oauthbearer"
)

// IsOAuth reports whether the mechanism signs in with an OAuth token.
func (a MailboxAuth) IsOAuth() bool { return a == MailboxAuthXOAUTH2 || a == MailboxAuthOAuthBearer }

// IsOAuth reports whether the mechanism signs in with an OAuth token.
func (a AuthMechanism) IsOAuth() bool { return a == AuthXOAUTH2 || a == AuthOAuthBearer }

// OAuthGrant is how popconn obtains access tokens.
type OAuthGrant string

const (
	// OAuthClientCredentials: the application signs in as itself with its
	// client secret (RFC 6749 §4.4).
	OAuthClientCredentials OAuthGrant = "client_credentials"
	// OAuthRefreshToken: a refresh token from a one-time interactive
	// sign-in is exchanged for access tokens (RFC 6749 §6).
	OAuthRefreshToken OAuthGrant = "refresh_token"
)

// OAuth is where and how access tokens for XOAUTH2 and OAUTHBEARER are
// obtained. Key: mailboxes[i].oauth, delivery.auth.oauth.
type OAuth struct {
	// TokenURL is the token endpoint, https only. Key: token_url.
	TokenURL string
	// Grant defaults to refresh_token when RefreshToken is set, else
	// client_credentials. Key: grant.
	Grant OAuthGrant
	// ClientID is the application (client) id. Key: client_id.
	ClientID string
	// ClientSecret is required for client_credentials, optional for a
	// refresh token of a public client. Key: client_secret.
	ClientSecret Secret
	// RefreshToken is required for refresh_token. Key: refresh_token.
	RefreshToken Secret
	// Scopes are requested with each token. Key: scopes.
	Scopes []string
	// CAFile is an extra PEM bundle trusted for the token endpoint
	// besides the system roots. Key: ca_file.
	CAFile string
}

// Archive is where raw messages are kept. Key: archive.
type Archive struct {
	// Dir defaults to ./popconn-data/archive. Key: dir.
	Dir string
}

// Ledger is the per-message state store. Key: ledger.
type Ledger struct {
	// Path defaults to ./popconn-data/ledger.db. Key: path.
	Path string
}

// Log configures logging. Key: log.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string
	// Format is auto (default: text on a terminal, JSON otherwise), text
	// or json.
	Format string
}

// AfterDelivery says what happens to a message on the POP3 server once
// every recipient accepted it.
type AfterDelivery string

const (
	// AfterDeliveryDelete deletes it (DELE) after the delivery is recorded.
	AfterDeliveryDelete AfterDelivery = "delete"
	// AfterDeliveryKeep leaves it on the server.
	AfterDeliveryKeep AfterDelivery = "keep"
	// AfterDeliveryKeepDays deletes it KeepDays days after delivery.
	AfterDeliveryKeepDays AfterDelivery = "keep_days"
)

// Mailbox is one POP3 maildrop and where its mail goes. Key: mailboxes[i].
type Mailbox struct {
	// ID names the mailbox in archive paths, the ledger and metrics:
	// [a-z0-9][a-z0-9._-]{0,63}, unique. Key: id.
	ID string
	// Server is host:port. A port omitted in the file is filled in: 995
	// for implicit TLS, 110 otherwise. Key: server.
	Server string
	// TLS defaults to implicit; starttls and none are the alternatives
	// (opportunistic is for delivery only). Key: tls.
	TLS tlsmode.Mode
	// AllowPlaintextAuth must be true when TLS is none, acknowledging the
	// password crosses the network unencrypted; pop3.Options and
	// relay.Options use the same name. Key: allow_plaintext_login (the
	// YAML keeps its spelling).
	AllowPlaintextAuth bool
	// VerifyCertificate defaults to true. Key: verify_certificate.
	VerifyCertificate bool
	CAFile            string
	ServerName        string
	Username          string
	// AuthMechanism is how popconn signs in: auto (default), user, plain,
	// apop, xoauth2 or oauthbearer. Key: auth_mechanism.
	AuthMechanism MailboxAuth
	// Password is the password (auto, user, plain) or APOP secret; not used
	// with xoauth2 and oauthbearer. Key: password.
	Password Secret
	// OAuth is set exactly when AuthMechanism is xoauth2 or oauthbearer.
	// Key: oauth.
	OAuth *OAuth
	// DeliverTo lists the Exchange addresses every message is relayed to
	// (individual-mailbox mapping). Key: deliver_to.
	DeliverTo []string
	// AfterDelivery defaults to delete. Key: after_delivery.
	AfterDelivery AfterDelivery
	// KeepDays is set exactly when AfterDelivery is keep_days. Key: keep_days.
	KeepDays int
	// MaxMessagesPerPoll limits messages fetched per poll; 0 means no
	// limit. Default 500. Key: max_messages_per_poll.
	MaxMessagesPerPoll int
	// MaxBytesPerPoll limits bytes fetched per poll; 0 means no limit.
	// Default 1GiB. Key: max_bytes_per_poll.
	MaxBytesPerPoll Size
	// PollTimeout bounds a whole poll of this mailbox. Default 10m. Key:
	// poll_timeout.
	PollTimeout time.Duration
	// Timeout bounds each POP3 command. Default 60s. Key: timeout.
	Timeout time.Duration
	// Sender overrides the envelope sender; empty means the message's
	// Return-Path, else Config.Postmaster. Key: sender.
	Sender string
	// Enabled defaults to true; a disabled mailbox is validated but not
	// polled. Key: enabled.
	Enabled bool
	// Type is individual (default) or global. Key: type.
	Type MailboxType
	// Global is set exactly when Type is global. Key: global.
	Global *Global
	// Undeliverable defaults to action leave. Key: undeliverable.
	Undeliverable Undeliverable
	// DuplicateWindow overrides the global duplicate_window for copies
	// fetched from this mailbox (0 = off here). Key: duplicate_window.
	// Default: the global value.
	DuplicateWindow time.Duration
}

// Defaults, documented on each field and shown in testdata/example.yaml.
// They are written here only; the exported ones are those other packages
// (the connector, the command line) refer to instead of repeating them.
const (
	// DefaultTimeout bounds each POP3 and each SMTP command (timeout).
	DefaultTimeout = 60 * time.Second
	// DefaultRetryInterval is the first delay after a failed delivery
	// (retry.interval).
	DefaultRetryInterval = 10 * time.Minute
	// DefaultRetryMaxInterval caps the doubling (retry.max_interval).
	DefaultRetryMaxInterval = 2 * time.Hour
	// DefaultGiveUpAfter ends automatic retries (retry.give_up_after).
	DefaultGiveUpAfter = 5 * 24 * time.Hour
	// DefaultReplyWindow is reply_window: how many messages of the
	// process may be committed and not yet recorded (the duplicates a
	// crash can cause).
	DefaultReplyWindow = 16
	// DefaultMaxConnections is max_connections of delivery and each
	// route.
	DefaultMaxConnections = 16
	// DefaultPOP3PipelineDepth is how many RETRs a poll keeps ahead
	// (pop3_pipeline_depth) when the server offers PIPELINING.
	DefaultPOP3PipelineDepth = 8
	// DefaultPollTimeout bounds a whole poll of a mailbox (poll_timeout).
	DefaultPollTimeout = 10 * time.Minute
	// DefaultLoopLimit is how many own Received fields mark a mail loop
	// (loop_limit).
	DefaultLoopLimit = 3
	// DefaultDeliveryPort is the SMTP port of delivery and routes (port):
	// package route's, whose zero Port means it.
	DefaultDeliveryPort = route.DefaultPort
	// DefaultPOP3Port and DefaultPOP3SPort complete a mailbox server
	// without a port: 995 for tls: implicit, 110 otherwise.
	DefaultPOP3Port  = 110
	DefaultPOP3SPort = 995

	defaultPollInterval       = 5 * time.Minute
	defaultParallelMailboxes  = 4
	defaultDeliveriesInFlight = 16
	defaultArchiveDir         = "./popconn-data/archive"
	defaultLedgerPath         = "./popconn-data/ledger.db"
	defaultMaxMessagesPerPoll = 500
	defaultMaxBytesPerPoll    = Size(1 << 30)
	defaultDuplicateWindow    = 7 * 24 * time.Hour
)

// AnyAddressSpace is the address space of a route that lists none, and of
// the `delivery:` shorthand: every domain.
const AnyAddressSpace = "*"

// DeliveryRoute is the one route the `delivery:` shorthand stands for:
// named DefaultRouteName, serving every domain at the default cost.
func DeliveryRoute(d Delivery) Route {
	return Route{Name: DefaultRouteName, Delivery: d, AddressSpaces: []string{AnyAddressSpace}, Cost: route.DefaultCost}
}

// maxConfigSize bounds Load; a configuration is a few kilobytes.
const maxConfigSize = 4 << 20

// Load reads the file at path and parses it with Parse. A problem with the
// content is returned as *Errors wrapped with the file name.
func Load(path string) (*Config, error) { return load(path, nil) }

// LoadChecked is Load for check-config: it also resolves every secret
// reference with secrets (see Check).
func LoadChecked(ctx context.Context, path string, secrets *Secrets) (*Config, error) {
	return load(path, func(data []byte) (*Config, error) { return Check(ctx, data, secrets) })
}

func load(path string, parse func([]byte) (*Config, error)) (*Config, error) {
	if parse == nil {
		parse = Parse
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", path, maxConfigSize)
	}
	c, err := parse(data)
	if err != nil {
		var errs *Errors
		if errors.As(err, &errs) && len(*errs) > 1 {
			return nil, fmt.Errorf("config %s: %d problems:\n%w", path, len(*errs), err)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes one YAML document strictly, applies defaults and validates.
// On any problem it returns nil and *Errors listing all of them.
func Parse(data []byte) (*Config, error) { return parse(data, nil) }

// Check is Parse that also resolves every well-formed secret reference
// with secrets (values are never kept or shown) and reports each one that
// cannot be resolved (an unset environment variable, a missing file) in
// the same list as the other problems, with its line: check-config shows
// every problem at once. Resolving reads the environment and the files
// named, and asks AWS only for the schemes registered in secrets.
func Check(ctx context.Context, data []byte, secrets *Secrets) (*Config, error) {
	return parse(data, func(c *Config) Errors {
		var errs Errors
		for _, ref := range c.check().refs {
			if _, err := secrets.Resolve(ctx, ref.secret); err != nil {
				errs = append(errs, FieldError{Path: ref.path, Msg: strings.TrimPrefix(err.Error(), "secret ")})
			}
		}
		return errs
	})
}

// parse is Parse with extra checks run on the decoded Config, even when
// it has other problems (so they are all reported together).
func parse(data []byte, extra func(*Config) Errors) (*Config, error) {
	root, errs := parseNode(data)
	if errs != nil {
		return nil, errs
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f fileConfig
	var decodeErrs Errors
	var suppress []string
	if err := dec.Decode(&f); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			// parseNode accepted the syntax, so this is unexpected; report
			// it rather than guess.
			return nil, &Errors{{Msg: "YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
		}
		decodeErrs, suppress = translateTypeErrors(te.Errors, root)
	}
	c := f.toConfig()
	var all Errors
	all = append(all, decodeErrs...)
	var found Errors
	if err := c.Validate(); err != nil {
		found = *err.(*Errors)
	}
	if extra != nil {
		found = append(found, extra(c)...)
	}
	for _, fe := range found {
		if !underAny(fe.Path, suppress) {
			all = append(all, fe)
		}
	}
	if len(all) == 0 {
		return c, nil
	}
	all.annotateLines(root)
	all.sortByLine()
	return nil, &all
}

// parseNode parses data into a node tree (for line numbers) and rejects
// syntax errors, empty input and extra documents.
func parseNode(data []byte) (*yaml.Node, *Errors) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Errors{{Msg: "the configuration is empty"}}
		}
		return nil, &Errors{syntaxError(err)}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, &Errors{syntaxError(err)}
	default:
		return nil, &Errors{{Line: extra.Line, Msg: "only one YAML document is allowed; remove the second \"---\""}}
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null" {
		return nil, &Errors{{Msg: "the configuration is empty"}}
	}
	return &doc, nil
}

// fileConfig and its parts mirror the YAML. Pointers distinguish a key
// that is absent (take the default) from an explicit zero (validate it).
type fileConfig struct {
	Postmaster         string        `yaml:"postmaster"`
	PollInterval       *Duration     `yaml:"poll_interval"`
	ParallelMailboxes  *intValue     `yaml:"parallel_mailboxes"`
	DeliveriesInFlight *intValue     `yaml:"deliveries_in_flight"`
	ReplyWindow        *intValue     `yaml:"reply_window"`
	POP3PipelineDepth  *intValue     `yaml:"pop3_pipeline_depth"`
	Retry              fileRetry     `yaml:"retry"`
	Delivery           *fileDelivery `yaml:"delivery"`
	Routes             []fileRoute   `yaml:"routes"`
	Notify             fileNotify    `yaml:"notify"`
	LoopLimit          *intValue     `yaml:"loop_limit"`
	DuplicateWindow    *Duration     `yaml:"duplicate_window"`
	Archive            fileArchive   `yaml:"archive"`
	Ledger             fileLedger    `yaml:"ledger"`
	Log                fileLog       `yaml:"log"`
	Mailboxes          []fileMailbox `yaml:"mailboxes"`
}

type fileRetry struct {
	Interval    *Duration `yaml:"interval"`
	MaxInterval *Duration `yaml:"max_interval"`
	GiveUpAfter *Duration `yaml:"give_up_after"`
}

type fileDelivery struct {
	Host              string    `yaml:"host"`
	Port              *intValue `yaml:"port"`
	TLS               string    `yaml:"tls"`
	VerifyCertificate *bool     `yaml:"verify_certificate"`
	CAFile            string    `yaml:"ca_file"`
	ServerName        string    `yaml:"server_name"`
	HELODomain        string    `yaml:"helo_domain"`
	Timeout           *Duration `yaml:"timeout"`
	MaxConnections    *intValue `yaml:"max_connections"`
	Auth              *fileAuth `yaml:"auth"`
}

type fileRoute struct {
	Name          string `yaml:"name"`
	fileDelivery  `yaml:",inline"`
	AddressSpaces []string  `yaml:"address_spaces"`
	Cost          *intValue `yaml:"cost"`
}

type fileNotify struct {
	To               string `yaml:"to"`
	Spam             *bool  `yaml:"spam"`
	UnknownRecipient *bool  `yaml:"unknown_recipient"`
	Badmail          *bool  `yaml:"badmail"`
	RelayDenied      *bool  `yaml:"relay_denied"`
	TooLarge         *bool  `yaml:"too_large"`
}

type fileGlobal struct {
	LocalDomains []string          `yaml:"local_domains"`
	HeaderOrder  []string          `yaml:"header_order"`
	UseTo        bool              `yaml:"use_to"`
	Rewrite      map[string]string `yaml:"rewrite"`
	Fallback     string            `yaml:"fallback"`
}

type fileUndeliverable struct {
	Action        string   `yaml:"action"`
	DeleteOnCodes []string `yaml:"delete_on_codes"`
}

type fileAuth struct {
	Mechanism string     `yaml:"mechanism"`
	Username  string     `yaml:"username"`
	Password  Secret     `yaml:"password"`
	OAuth     *fileOAuth `yaml:"oauth"`
}

type fileOAuth struct {
	TokenURL     string   `yaml:"token_url"`
	Grant        string   `yaml:"grant"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret Secret   `yaml:"client_secret"`
	RefreshToken Secret   `yaml:"refresh_token"`
	Scopes       []string `yaml:"scopes"`
	CAFile       string   `yaml:"ca_file"`
}

func (o *fileOAuth) toOAuth() *OAuth {
	if o == nil {
		return nil
	}
	grant := OAuthClientCredentials
	if !o.RefreshToken.IsZero() {
		grant = OAuthRefreshToken
	}
	return &OAuth{
		TokenURL: o.TokenURL, Grant: OAuthGrant(orStr(o.Grant, string(grant))), ClientID: o.ClientID,
		ClientSecret: o.ClientSecret, RefreshToken: o.RefreshToken, Scopes: o.Scopes, CAFile: o.CAFile,
	}
}

type fileArchive struct {
	Dir string `yaml:"dir"`
}

type fileLedger struct {
	Path string `yaml:"path"`
}

type fileLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type fileMailbox struct {
	ID                 string            `yaml:"id"`
	Server             string            `yaml:"server"`
	TLS                string            `yaml:"tls"`
	AllowPlaintextAuth bool              `yaml:"allow_plaintext_login"`
	VerifyCertificate  *bool             `yaml:"verify_certificate"`
	CAFile             string            `yaml:"ca_file"`
	ServerName         string            `yaml:"server_name"`
	Username           string            `yaml:"username"`
	AuthMechanism      string            `yaml:"auth_mechanism"`
	Password           Secret            `yaml:"password"`
	OAuth              *fileOAuth        `yaml:"oauth"`
	DeliverTo          addrList          `yaml:"deliver_to"`
	AfterDelivery      string            `yaml:"after_delivery"`
	KeepDays           intValue          `yaml:"keep_days"`
	MaxMessagesPerPoll *intValue         `yaml:"max_messages_per_poll"`
	MaxBytesPerPoll    *Size             `yaml:"max_bytes_per_poll"`
	PollTimeout        *Duration         `yaml:"poll_timeout"`
	Timeout            *Duration         `yaml:"timeout"`
	Sender             string            `yaml:"sender"`
	Enabled            *bool             `yaml:"enabled"`
	Type               string            `yaml:"type"`
	Global             *fileGlobal       `yaml:"global"`
	Undeliverable      fileUndeliverable `yaml:"undeliverable"`
	DuplicateWindow    *Duration         `yaml:"duplicate_window"`
}

func orDur(p *Duration, def time.Duration) time.Duration {
	if p == nil {
		return def
	}
	return time.Duration(*p)
}

func orInt(p *intValue, def int) int {
	if p == nil {
		return def
	}
	return int(*p)
}

func orBool(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// toConfig applies the defaults.
func (f *fileConfig) toConfig() *Config {
	c := &Config{
		Postmaster:         f.Postmaster,
		PollInterval:       orDur(f.PollInterval, defaultPollInterval),
		ParallelMailboxes:  orInt(f.ParallelMailboxes, defaultParallelMailboxes),
		DeliveriesInFlight: orInt(f.DeliveriesInFlight, defaultDeliveriesInFlight),
		ReplyWindow:        orInt(f.ReplyWindow, DefaultReplyWindow),
		POP3PipelineDepth:  orInt(f.POP3PipelineDepth, DefaultPOP3PipelineDepth),
		Retry: Retry{
			Interval:    orDur(f.Retry.Interval, DefaultRetryInterval),
			MaxInterval: orDur(f.Retry.MaxInterval, DefaultRetryMaxInterval),
			GiveUpAfter: orDur(f.Retry.GiveUpAfter, DefaultGiveUpAfter),
		},
		Notify: Notify{
			To:               orStr(f.Notify.To, f.Postmaster),
			Spam:             orBool(f.Notify.Spam, false),
			UnknownRecipient: orBool(f.Notify.UnknownRecipient, false),
			Badmail:          orBool(f.Notify.Badmail, true),
			RelayDenied:      orBool(f.Notify.RelayDenied, true),
			TooLarge:         orBool(f.Notify.TooLarge, true),
		},
		LoopLimit:       orInt(f.LoopLimit, DefaultLoopLimit),
		DuplicateWindow: orDur(f.DuplicateWindow, defaultDuplicateWindow),
		Archive:         Archive{Dir: orStr(f.Archive.Dir, defaultArchiveDir)},
		Ledger:          Ledger{Path: orStr(f.Ledger.Path, defaultLedgerPath)},
		Log: Log{
			Level:  orStr(f.Log.Level, "info"),
			Format: orStr(f.Log.Format, "auto"),
		},
	}
	if f.Delivery != nil || len(f.Routes) == 0 {
		var d fileDelivery
		if f.Delivery != nil {
			d = *f.Delivery
		}
		c.Delivery = d.toDelivery()
		c.Routes = append(c.Routes, DeliveryRoute(c.Delivery))
		c.deliveryShorthand = true
	}
	if len(f.Routes) > 0 {
		if f.Delivery != nil {
			c.bothDeliveryAndRoutes = true
			c.Routes = nil
		}
		for _, r := range f.Routes {
			spaces := r.AddressSpaces
			if len(spaces) == 0 {
				spaces = []string{AnyAddressSpace}
			}
			c.Routes = append(c.Routes, Route{Name: r.Name, Delivery: r.fileDelivery.toDelivery(), AddressSpaces: spaces, Cost: orInt(r.Cost, route.DefaultCost)})
		}
		if f.Delivery == nil {
			c.Delivery = c.Routes[0].Delivery
			c.deliveryShorthand = false
		}
	}
	for _, m := range f.Mailboxes {
		tls := tlsmode.Mode(orStr(m.TLS, string(tlsmode.Implicit)))
		c.Mailboxes = append(c.Mailboxes, Mailbox{
			ID:                 m.ID,
			Server:             withDefaultPort(m.Server, tls),
			TLS:                tls,
			AllowPlaintextAuth: m.AllowPlaintextAuth,
			VerifyCertificate:  orBool(m.VerifyCertificate, true),
			CAFile:             m.CAFile,
			ServerName:         m.ServerName,
			Username:           m.Username,
			AuthMechanism:      MailboxAuth(orStr(m.AuthMechanism, string(MailboxAuthAuto))),
			Password:           m.Password,
			OAuth:              m.OAuth.toOAuth(),
			DeliverTo:          []string(m.DeliverTo),
			AfterDelivery:      AfterDelivery(orStr(m.AfterDelivery, string(AfterDeliveryDelete))),
			KeepDays:           int(m.KeepDays),
			MaxMessagesPerPoll: orInt(m.MaxMessagesPerPoll, defaultMaxMessagesPerPoll),
			MaxBytesPerPoll:    orSize(m.MaxBytesPerPoll, defaultMaxBytesPerPoll),
			PollTimeout:        orDur(m.PollTimeout, DefaultPollTimeout),
			Timeout:            orDur(m.Timeout, DefaultTimeout),
			Sender:             m.Sender,
			Enabled:            orBool(m.Enabled, true),
			Type:               MailboxType(orStr(m.Type, string(MailboxIndividual))),
			Global:             m.Global.toGlobal(f.Postmaster),
			Undeliverable:      m.Undeliverable.toUndeliverable(),
			DuplicateWindow:    orDur(m.DuplicateWindow, c.DuplicateWindow),
		})
	}
	return c
}

func (d fileDelivery) toDelivery() Delivery {
	out := Delivery{
		Host:              d.Host,
		Port:              orInt(d.Port, DefaultDeliveryPort),
		TLS:               tlsmode.Mode(orStr(d.TLS, string(tlsmode.StartTLS))),
		VerifyCertificate: orBool(d.VerifyCertificate, true),
		CAFile:            d.CAFile,
		ServerName:        d.ServerName,
		HELODomain:        d.HELODomain,
		Timeout:           orDur(d.Timeout, DefaultTimeout),
		MaxConnections:    orInt(d.MaxConnections, DefaultMaxConnections),
	}
	if a := d.Auth; a != nil {
		out.Auth = &Auth{
			Mechanism: AuthMechanism(orStr(a.Mechanism, string(AuthPlain))),
			Username:  a.Username,
			Password:  a.Password,
			OAuth:     a.OAuth.toOAuth(),
		}
	}
	return out
}

func (g *fileGlobal) toGlobal(postmaster string) *Global {
	if g == nil {
		return nil
	}
	return &Global{
		LocalDomains: g.LocalDomains,
		HeaderOrder:  g.HeaderOrder,
		UseTo:        g.UseTo,
		Rewrite:      g.Rewrite,
		Fallback:     orStr(g.Fallback, postmaster),
	}
}

func (u fileUndeliverable) toUndeliverable() Undeliverable {
	out := Undeliverable{Action: UndeliverableAction(orStr(u.Action, string(UndeliverableLeave))), DeleteOnCodes: u.DeleteOnCodes}
	if out.Action == UndeliverableDelete && u.DeleteOnCodes == nil {
		out.DeleteOnCodes = append([]string(nil), DefaultDeleteOnCodes...)
	}
	return out
}

func orSize(p *Size, def Size) Size {
	if p == nil {
		return def
	}
	return *p
}

// withDefaultPort appends the POP3 port for tls when server has none:
// "pop.isp.example" and "[2001:db8::1]" gain one, anything else is left for
// Validate to judge.
func withDefaultPort(server string, tls tlsmode.Mode) string {
	s := strings.TrimSpace(server)
	if s == "" {
		return server
	}
	port := strconv.Itoa(DefaultPOP3Port)
	if tls == tlsmode.Implicit {
		port = strconv.Itoa(DefaultPOP3SPort)
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") && strings.Count(s, "[") == 1 {
		return net.JoinHostPort(s[1:len(s)-1], port)
	}
	if !strings.ContainsAny(s, ":[]") {
		return net.JoinHostPort(s, port)
	}
	return server
}
