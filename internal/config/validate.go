package config

import (
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/mailaddr"
	"github.com/popconnector/popconnector/internal/notify"
	"github.com/popconnector/popconnector/internal/recipients"
	"github.com/popconnector/popconnector/internal/route"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// FieldError is one problem with the configuration.
type FieldError struct {
	// Path names the setting in YAML terms: "delivery.auth.password",
	// "mailboxes[2].server"; empty for a problem with the file as a whole.
	Path string
	// Msg says what is wrong and, where possible, how to fix it.
	Msg string
	// Line is the 1-based line in the YAML source, 0 when unknown (always
	// 0 from Validate, which has no source). For a missing key it is the
	// line of the enclosing section.
	Line int
}

// Error renders "path: msg", followed by " (line N)" when the line is known.
func (e FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Path != "":
		b.WriteString(e.Path)
		b.WriteString(": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Msg)
	if e.Path != "" && e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	return b.String()
}

// Errors lists every problem found; Parse and Validate return it as *Errors.
type Errors []FieldError

// Error renders one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Paths returns the Path of each problem, in order.
func (es Errors) Paths() []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Path
	}
	return out
}

func (es Errors) sortByLine() {
	slices.SortStableFunc(es, func(a, b FieldError) int {
		// Problems without a line (none today) go last.
		la, lb := a.Line, b.Line
		if la == 0 {
			la = math.MaxInt
		}
		if lb == 0 {
			lb = math.MaxInt
		}
		return cmp.Compare(la, lb)
	})
}

// Validation limits.
const (
	minTimeout          = time.Second
	maxTimeout          = 10 * time.Minute
	maxPollInterval     = 24 * time.Hour
	maxRetryInterval    = 24 * time.Hour
	maxRetryMaxInterval = 7 * 24 * time.Hour
	maxGiveUpAfter      = 90 * 24 * time.Hour
	maxPollTimeout      = 24 * time.Hour
	maxParallel         = 64
	// maxDeliveriesInFlight bounds the SMTP connections one poll opens
	// per route: Exchange limits connections per source
	// (MaxInboundConnectionPerSource, 20 by default) across every mailbox.
	maxDeliveriesInFlight = 16
	maxReplyWindow        = 64
	maxConnections        = 100
	maxPOP3PipelineDepth  = 64 // the POP3 client\'s own cap
	maxKeepDays           = 3650
	maxDuplicateWindow    = 365 * 24 * time.Hour
)

var mailboxIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

type validator struct {
	errs  Errors
	warns []string
	// refs are the well-formed secret references met, with their paths,
	// for Check to resolve.
	refs []secretAt
}

// secretAt is a secret reference and the setting that holds it.
type secretAt struct {
	path   string
	secret Secret
}

func (v *validator) fail(path, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) warn(path, format string, args ...any) {
	v.warns = append(v.warns, path+": "+fmt.Sprintf(format, args...))
}

// duration checks lo <= d <= hi and reports whether it holds.
func (v *validator) duration(path string, d, lo, hi time.Duration) bool {
	if d < lo || d > hi {
		v.fail(path, "must be between %s and %s, got %s", formatDuration(lo), formatDuration(hi), formatDuration(d))
		return false
	}
	return true
}

// Validate checks the whole configuration in one pass and returns *Errors
// listing every problem in model order, or nil. It does not apply defaults:
// a Config built in code must set every field. It reads ca_file files but
// no secret.
func (c *Config) Validate() error {
	v := c.check()
	if len(v.errs) == 0 {
		return nil
	}
	return &v.errs
}

// Warnings returns problems that are allowed but probably unintended, such
// as plaintext delivery on the SMTPS port or disabled certificate checks,
// each as "path: message".
func (c *Config) Warnings() []string { return c.check().warns }

func (c *Config) check() *validator {
	v := &validator{}
	v.address("postmaster", c.Postmaster, true)
	v.duration("poll_interval", c.PollInterval, minTimeout, maxPollInterval)
	if c.ParallelMailboxes < 1 || c.ParallelMailboxes > maxParallel {
		v.fail("parallel_mailboxes", "must be between 1 and %d, got %d", maxParallel, c.ParallelMailboxes)
	}
	if c.DeliveriesInFlight < 1 || c.DeliveriesInFlight > maxDeliveriesInFlight {
		v.fail("deliveries_in_flight", "must be between 1 and %d, got %d", maxDeliveriesInFlight, c.DeliveriesInFlight)
	}
	if c.ReplyWindow < 1 || c.ReplyWindow > maxReplyWindow {
		v.fail("reply_window", "must be between 1 and %d, got %d", maxReplyWindow, c.ReplyWindow)
	}
	if c.POP3PipelineDepth < 1 || c.POP3PipelineDepth > maxPOP3PipelineDepth {
		v.fail("pop3_pipeline_depth", "must be between 1 and %d, got %d", maxPOP3PipelineDepth, c.POP3PipelineDepth)
	}

	// Cross-field rules are checked only between values that are each in
	// range, so one bad value yields one message.
	r := c.Retry
	okI := v.duration("retry.interval", r.Interval, minTimeout, maxRetryInterval)
	okM := v.duration("retry.max_interval", r.MaxInterval, minTimeout, maxRetryMaxInterval)
	okG := v.duration("retry.give_up_after", r.GiveUpAfter, minTimeout, maxGiveUpAfter)
	if okI && okM && r.MaxInterval < r.Interval {
		v.fail("retry.max_interval", "must be at least retry.interval (%s), got %s",
			formatDuration(r.Interval), formatDuration(r.MaxInterval))
	}
	if okI && okG && r.GiveUpAfter < r.Interval {
		v.fail("retry.give_up_after", "must be at least retry.interval (%s), got %s",
			formatDuration(r.Interval), formatDuration(r.GiveUpAfter))
	}

	switch {
	case c.bothDeliveryAndRoutes:
		v.fail("routes", "give either delivery (one smart host for every recipient) or routes (several, by address space and cost), not both")
	case len(c.Routes) == 0 || c.deliveryShorthand:
		v.delivery("delivery", &c.Delivery)
	default:
		v.routes(c.Routes)
	}
	if c.Notify.To != "" && c.Notify.To != c.Postmaster {
		v.address("notify.to", c.Notify.To, false)
	}
	if c.LoopLimit < 0 || c.LoopLimit > 100 {
		v.fail("loop_limit", "must be between 1 and 100 (0 means the default, %d), got %d", DefaultLoopLimit, c.LoopLimit)
	}
	v.duration("duplicate_window", c.DuplicateWindow, 0, maxDuplicateWindow)

	if strings.TrimSpace(c.Archive.Dir) == "" {
		v.fail("archive.dir", "required")
	}
	if strings.TrimSpace(c.Ledger.Path) == "" {
		v.fail("ledger.path", "required")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "must be one of debug, info, warn, error; got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		v.fail("log.format", "must be one of auto, text, json; got %q", c.Log.Format)
	}

	if len(c.Mailboxes) == 0 {
		v.fail("mailboxes", "at least one mailbox is required")
	}
	seen := seenMailboxes{ids: map[string]int{}, drops: map[string]int{}}
	enabled := 0
	for i := range c.Mailboxes {
		v.mailbox(i, &c.Mailboxes[i], &seen)
		if c.Mailboxes[i].Enabled {
			enabled++
		}
	}
	if len(c.Mailboxes) > 0 && enabled == 0 {
		v.warn("mailboxes", "every mailbox is disabled; nothing will be polled")
	}
	return v
}

// routes checks a `routes:` list: each route's delivery settings, a
// unique name, and its address spaces and cost (package route's rules).
func (v *validator) routes(rs []Route) {
	names := map[string]int{}
	for i := range rs {
		r := &rs[i]
		p := fmt.Sprintf("routes[%d]", i)
		switch {
		case strings.TrimSpace(r.Name) == "":
			v.fail(p+".name", "required: a short name for this route, e.g. exchange-primary")
		default:
			key := strings.ToLower(r.Name)
			if j, dup := names[key]; dup {
				v.fail(p+".name", "%q is already used by routes[%d]; route names must be unique", r.Name, j)
			} else {
				names[key] = i
			}
		}
		v.delivery(p, &r.Delivery)
		if r.Cost < route.DefaultCost || r.Cost > route.MaxCost {
			v.fail(p+".cost", "must be between %d and %d, got %d", route.DefaultCost, route.MaxCost, r.Cost)
		}
		// The address spaces alone, through package route's own checks.
		if _, err := route.New([]route.Route{{Name: "x", Host: "localhost", AddressSpaces: r.AddressSpaces}}); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				v.fail(p+".address_spaces", "%s", strings.TrimPrefix(line, `route "x": `))
			}
		}
	}
}

func (v *validator) delivery(p string, d *Delivery) {
	if msg := checkDeliveryHost(p, d.Host); msg != "" {
		v.fail(p+".host", "%s", msg)
	}
	if d.Port < 1 || d.Port > 65535 {
		v.fail(p+".port", "must be between 1 and 65535, got %d", d.Port)
	}
	if err := tlsmode.SMTP.Check(d.TLS); err != nil {
		v.fail(p+".tls", "%v", err)
	}
	switch d.TLS {
	case tlsmode.StartTLS, tlsmode.Opportunistic:
		if d.Port == 465 {
			v.warn(p+".tls", "port 465 normally expects tls: implicit, not %s", d.TLS)
		}
	case tlsmode.Implicit:
		if d.Port == 25 || d.Port == 587 {
			v.warn(p+".tls", "tls: implicit on port %d is unusual; that port normally uses starttls", d.Port)
		}
	case tlsmode.None:
		if d.Port == 465 {
			v.warn(p+".tls", "port 465 normally expects tls: implicit; tls: none will not connect there")
		}
		v.warn(p+".tls", "mail is relayed to Exchange unencrypted")
	}
	v.tlsFiles(p, d.TLS, d.VerifyCertificate, d.CAFile, d.ServerName)
	if d.HELODomain != "" && !validHELO(d.HELODomain) {
		v.fail(p+".helo_domain", "must be a domain name or an address literal like [192.0.2.1], got %q", d.HELODomain)
	}
	v.duration(p+".timeout", d.Timeout, minTimeout, maxTimeout)
	if d.MaxConnections < 1 || d.MaxConnections > maxConnections {
		v.fail(p+".max_connections", "must be between 1 and %d, got %d", maxConnections, d.MaxConnections)
	}
	if a := d.Auth; a != nil {
		switch a.Mechanism {
		case AuthPlain, AuthLogin, AuthXOAUTH2, AuthOAuthBearer:
		default:
			v.fail(p+".auth.mechanism", "must be plain or login, or xoauth2 or oauthbearer with an oauth block; got %q", a.Mechanism)
		}
		if strings.TrimSpace(a.Username) == "" {
			v.fail(p+".auth.username", "required when %s.auth is present", p)
		}
		v.credentials(p+".auth", "mechanism", string(a.Mechanism), a.Mechanism.IsOAuth(), a.Password, a.OAuth)
		switch d.TLS {
		case tlsmode.None:
			v.warn(p+".auth", "tls: none sends the SMTP password unencrypted")
		case tlsmode.Opportunistic:
			v.warn(p+".auth", "tls: opportunistic sends the SMTP password unencrypted if the server does not offer STARTTLS; use starttls")
		}
	}
}

// seenMailboxes remembers earlier entries for the uniqueness rules.
type seenMailboxes struct {
	ids   map[string]int // id -> index
	drops map[string]int // maildropKey of an enabled entry -> index
}

func (v *validator) mailbox(i int, m *Mailbox, seen *seenMailboxes) {
	p := fmt.Sprintf("mailboxes[%d]", i)
	switch {
	case m.ID == "":
		v.fail(p+".id", "required")
	case !mailboxIDRE.MatchString(m.ID):
		v.fail(p+".id", "%q must be 1 to 64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", m.ID)
	default:
		if j, dup := seen.ids[m.ID]; dup {
			v.fail(p+".id", "%q is already used by mailboxes[%d]; ids must be unique", m.ID, j)
		} else {
			seen.ids[m.ID] = i
		}
	}
	_, port, msg := splitServer(m.Server)
	if msg != "" {
		v.fail(p+".server", "%s", msg)
	}
	if err := tlsmode.POP3.Check(m.TLS); err != nil {
		v.fail(p+".tls", "%v", err)
	}
	switch m.TLS {
	case tlsmode.Implicit:
		if port == 110 {
			v.warn(p+".tls", "port 110 normally uses starttls or none; implicit TLS is usually on 995")
		}
	case tlsmode.StartTLS:
		if port == 995 {
			v.warn(p+".tls", "port 995 normally uses tls: implicit")
		}
	case tlsmode.None:
		if port == 995 {
			v.warn(p+".tls", "port 995 normally uses tls: implicit; tls: none will not connect there")
		}
		if !m.AllowPlaintextAuth {
			v.fail(p+".allow_plaintext_login", "tls: none sends the POP3 password and all mail unencrypted; "+
				"set allow_plaintext_login: true to accept that (only on a network you trust), or use tls: implicit or starttls")
		}
	}
	if m.AllowPlaintextAuth && m.TLS != tlsmode.None {
		v.warn(p+".allow_plaintext_login", "has no effect unless tls is none")
	}
	v.tlsFiles(p, m.TLS, m.VerifyCertificate, m.CAFile, m.ServerName)
	if strings.TrimSpace(m.Username) == "" {
		v.fail(p+".username", "required")
	} else if key, ok := maildropKey(m); ok && m.Enabled {
		// Two enabled entries on one maildrop would each fetch and delete
		// the other's messages. A disabled one may stay while migrating.
		if j, dup := seen.drops[key]; dup {
			v.fail(p+".username", "mailboxes[%d] already polls this server and username; two entries on one maildrop would fight over its messages", j)
		} else {
			seen.drops[key] = i
		}
	}
	switch m.AuthMechanism {
	case MailboxAuthAuto, "", MailboxAuthUser, MailboxAuthPlain, MailboxAuthAPOP, MailboxAuthXOAUTH2, MailboxAuthOAuthBearer:
	default:
		v.fail(p+".auth_mechanism", "must be one of auto, user, plain, apop, xoauth2, oauthbearer; got %q", m.AuthMechanism)
	}
	v.credentials(p, "auth_mechanism", string(m.AuthMechanism), m.AuthMechanism.IsOAuth(), m.Password, m.OAuth)
	switch m.Type {
	case MailboxIndividual, "":
		if len(m.DeliverTo) == 0 {
			v.fail(p+".deliver_to", "at least one Exchange address is required")
		}
		if m.Global != nil {
			v.fail(p+".global", "applies only with type: global")
		}
	case MailboxGlobal:
		if len(m.DeliverTo) > 0 {
			v.fail(p+".deliver_to", "a global mailbox takes its recipients from each message's header; remove deliver_to and set global.local_domains")
		}
		if m.Global == nil {
			v.fail(p+".global", "required with type: global: at least local_domains, the domains Exchange accepts mail for")
		} else if err := m.Global.Options().Validate(); err != nil {
			var msgs []string
			if u, ok := errors.Unwrap(err).(interface{ Unwrap() []error }); ok {
				for _, e := range u.Unwrap() {
					msgs = append(msgs, e.Error())
				}
			} else {
				msgs = append(msgs, err.Error())
			}
			for _, msg := range msgs {
				v.fail(p+".global", "%s", msg)
			}
		}
	default:
		v.fail(p+".type", "must be individual or global; got %q", m.Type)
	}
	switch m.Undeliverable.Action {
	case UndeliverableLeave, UndeliverableBadmail, "":
		if len(m.Undeliverable.DeleteOnCodes) > 0 {
			v.fail(p+".undeliverable.delete_on_codes", "applies only with action: delete")
		}
	case UndeliverableDelete:
		if len(m.Undeliverable.DeleteOnCodes) == 0 {
			v.fail(p+".undeliverable.delete_on_codes", "list at least one reply code, e.g. \"550 5.7.1\"")
		}
		for k, c := range m.Undeliverable.DeleteOnCodes {
			rc, err := notify.ParseReplyCode(c)
			switch {
			case err != nil:
				v.fail(fmt.Sprintf("%s.undeliverable.delete_on_codes[%d]", p, k), "%v", err)
			case rc.Code < 500:
				v.fail(fmt.Sprintf("%s.undeliverable.delete_on_codes[%d]", p, k), "%q is not a permanent (5xx) reply; a temporary failure is always retried", c)
			}
		}
	default:
		v.fail(p+".undeliverable.action", "must be one of leave, delete, badmail; got %q", m.Undeliverable.Action)
	}
	rcpts := map[string]int{}
	for k, a := range m.DeliverTo {
		ap := fmt.Sprintf("%s.deliver_to[%d]", p, k)
		if !v.address(ap, a, true) {
			continue
		}
		folded := strings.ToLower(a)
		if j, dup := rcpts[folded]; dup {
			v.fail(ap, "%q is already listed as deliver_to[%d]", a, j)
		} else {
			rcpts[folded] = k
		}
	}
	switch m.AfterDelivery {
	case AfterDeliveryKeepDays:
		if m.KeepDays < 1 || m.KeepDays > maxKeepDays {
			v.fail(p+".keep_days", "must be between 1 and %d when after_delivery is keep_days, got %d", maxKeepDays, m.KeepDays)
		}
	case AfterDeliveryDelete, AfterDeliveryKeep:
		if m.KeepDays != 0 {
			v.fail(p+".keep_days", "applies only with after_delivery: keep_days (after_delivery is %s)", m.AfterDelivery)
		}
	default:
		v.fail(p+".after_delivery", "must be one of delete, keep, keep_days; got %q", m.AfterDelivery)
	}
	if m.MaxMessagesPerPoll < 0 {
		v.fail(p+".max_messages_per_poll", "must be 0 (no limit) or more, got %d", m.MaxMessagesPerPoll)
	}
	if m.MaxBytesPerPoll < 0 {
		v.fail(p+".max_bytes_per_poll", "must be 0 (no limit) or more, got %d", int64(m.MaxBytesPerPoll))
	}
	okP := v.duration(p+".poll_timeout", m.PollTimeout, minTimeout, maxPollTimeout)
	okT := v.duration(p+".timeout", m.Timeout, minTimeout, maxTimeout)
	if okP && okT && m.Timeout > m.PollTimeout {
		v.fail(p+".poll_timeout", "must be at least timeout (%s), got %s", formatDuration(m.Timeout), formatDuration(m.PollTimeout))
	}
	if m.Sender != "" {
		v.address(p+".sender", m.Sender, false)
	}
	v.duration(p+".duplicate_window", m.DuplicateWindow, 0, maxDuplicateWindow)
}

// credentials checks a password or, for an OAuth mechanism, the oauth
// block under p; mechKey names the key that chose the mechanism.
func (v *validator) credentials(p, mechKey, mech string, isOAuth bool, password Secret, o *OAuth) {
	if !isOAuth {
		v.secret(p+".password", password)
		if o != nil {
			v.fail(p+".oauth", "applies only with %s: xoauth2 or oauthbearer (%s is %s)", mechKey, mechKey, orStr(mech, "auto"))
		}
		return
	}
	if !password.IsZero() {
		v.warn(p+".password", "is not used with %s: %s; the access token comes from oauth", mechKey, mech)
	}
	if o == nil {
		v.fail(p+".oauth", "required with %s: %s: at least token_url, client_id and client_secret or refresh_token", mechKey, mech)
		return
	}
	v.oauth(p+".oauth", o)
}

// oauth checks an oauth block.
func (v *validator) oauth(p string, o *OAuth) {
	u, err := url.Parse(o.TokenURL)
	switch {
	case strings.TrimSpace(o.TokenURL) == "":
		v.fail(p+".token_url", "required: the token endpoint, e.g. https://login.microsoftonline.com/TENANT/oauth2/v2.0/token")
	case err != nil || u.Host == "":
		v.fail(p+".token_url", "%q is not an absolute URL", o.TokenURL)
	case u.Scheme != "https":
		v.fail(p+".token_url", "must use https; the client secret and tokens must not cross the network unencrypted")
	case u.User != nil:
		v.fail(p+".token_url", "must not contain a user name or password; use client_id and client_secret")
	}
	if strings.TrimSpace(o.ClientID) == "" {
		v.fail(p+".client_id", "required: the application (client) id of the app registration")
	}
	switch o.Grant {
	case OAuthClientCredentials:
		v.secret(p+".client_secret", o.ClientSecret)
		if !o.RefreshToken.IsZero() {
			v.fail(p+".refresh_token", "applies only with grant: refresh_token")
		}
	case OAuthRefreshToken:
		v.secret(p+".refresh_token", o.RefreshToken)
		if !o.ClientSecret.IsZero() {
			v.secret(p+".client_secret", o.ClientSecret)
		}
	default:
		v.fail(p+".grant", "must be client_credentials or refresh_token; got %q", o.Grant)
	}
	for i, sc := range o.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\r\n\"\\") {
			v.fail(fmt.Sprintf("%s.scopes[%d]", p, i), "must be one scope without spaces or quotes, e.g. https://outlook.office.com/POP.AccessAsUser.All; got %q", sc)
		}
	}
	if o.CAFile != "" {
		if msg := checkCAFile(o.CAFile); msg != "" {
			v.fail(p+".ca_file", "%s", msg)
		}
	}
}

// tlsFiles checks the settings shared by both TLS clients.
func (v *validator) tlsFiles(p string, mode tlsmode.Mode, verify bool, caFile, serverName string) {
	if caFile != "" {
		if msg := checkCAFile(caFile); msg != "" {
			v.fail(p+".ca_file", "%s", msg)
		}
	}
	if serverName != "" && mailaddr.Host(serverName) != nil {
		v.fail(p+".server_name", "must be a host name or IP address, got %q", serverName)
	}
	if mode == tlsmode.None {
		if caFile != "" || serverName != "" {
			v.warn(p, "ca_file and server_name are ignored with tls: none")
		}
		return
	}
	if !verify {
		v.warn(p+".verify_certificate", "certificate checks are off; anyone on the network path can impersonate the server")
	}
}

// secret checks that s is a reference; the message never repeats s.
func (v *validator) secret(path string, s Secret) {
	if msg := checkSecretRef(s.ref); msg != "" {
		v.fail(path, "%s", msg)
		return
	}
	v.refs = append(v.refs, secretAt{path, s})
}

// address checks a bare RFC 5322 addr-spec (no display name, no angle
// brackets) and reports whether it is one. An empty address is reported
// only when required.
func (v *validator) address(path, a string, required bool) bool {
	if strings.TrimSpace(a) == "" {
		if required {
			v.fail(path, "required")
		}
		return false
	}
	if msg := checkAddrSpec(a); msg != "" {
		v.fail(path, "%s", msg)
		return false
	}
	return true
}

// checkAddrSpec accepts a bare address by package mailaddr's Mailbox rule:
// what notices, recipient resolution and SMTP's MAIL FROM and RCPT TO
// (RFC 5321 section 4.1.2) all take as written.
func checkAddrSpec(a string) string {
	if strings.TrimSpace(a) != a {
		return fmt.Sprintf("%q has leading or trailing spaces", a)
	}
	// net/mail only recognises the forms people paste, for the hint.
	if addr, err := mail.ParseAddress(a); err == nil && (addr.Name != "" || strings.ContainsAny(a, "<>()")) {
		return fmt.Sprintf("%q must be a bare address such as %s, without a display name, comment or angle brackets", a, addr.Address)
	}
	if err := mailaddr.Mailbox(a); err != nil {
		return fmt.Sprintf("%q is not a valid email address: %v", a, err)
	}
	return ""
}

// checkDeliveryHost implements the rules of the Exchange smart-host
// documentation through route.ValidateHost: a name must be an FQDN, an IP
// address may be bracketed as an RFC 5321 section 4.1.3 address literal.
func checkDeliveryHost(p, h string) string {
	if strings.TrimSpace(h) == "" {
		return "required: the Exchange server's fully qualified name or IP address"
	}
	if !strings.HasPrefix(h, "[") && net.ParseIP(h) == nil {
		if hp, port, err := net.SplitHostPort(h); err == nil && port != "" {
			return fmt.Sprintf("%q contains a port; put %s in %s.host and %s in %s.port", h, hp, p, port, p)
		}
	}
	if err := route.ValidateHost(h); err != nil {
		return err.Error()
	}
	return ""
}

func validHELO(h string) bool {
	return mailaddr.Hostname(h) == nil || mailaddr.AddressLiteral(h) == nil
}

// splitServer checks a POP3 host:port and returns its parts, or a message.
func splitServer(s string) (host string, port int, msg string) {
	if strings.TrimSpace(s) == "" {
		return "", 0, "required: host:port of the POP3 server, e.g. pop.isp.example:995"
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Count(s, ":") > 1 && !strings.Contains(s, "[") {
			return "", 0, fmt.Sprintf("%q: enclose an IPv6 address in brackets, e.g. [2001:db8::1]:995", s)
		}
		return "", 0, fmt.Sprintf("%q must be host:port, e.g. pop.isp.example:995", s)
	}
	if h == "" {
		return "", 0, fmt.Sprintf("%q has no host", s)
	}
	if mailaddr.Host(h) != nil {
		return "", 0, fmt.Sprintf("%q: %q is not a valid host name or IP address", s, h)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || !isDigits(p) {
		return "", 0, fmt.Sprintf("%q: port must be a number between 1 and 65535", s)
	}
	return h, n, ""
}

// maildropKey identifies the maildrop a mailbox polls: host (case-folded,
// without a trailing dot), port and username (case-folded: servers commonly
// treat user names case-insensitively, and a false match only asks the user
// to look twice).
func maildropKey(m *Mailbox) (string, bool) {
	h, p, msg := splitServer(m.Server)
	if msg != "" || m.Username == "" {
		return "", false
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if ip := net.ParseIP(h); ip != nil {
		h = ip.String()
	}
	return net.JoinHostPort(h, strconv.Itoa(p)) + "\x00" + strings.ToLower(m.Username), true
}

// checkCAFile reports whether path is a readable PEM file of certificates.
func checkCAFile(path string) string {
	_, err := LoadCAFile(path)
	if err != nil {
		return err.Error()
	}
	return ""
}

// LoadCAFile reads a PEM bundle and returns a pool with its certificates.
// It fails if the file cannot be read, holds no certificate, or holds a
// block that is not a parseable certificate. Both TLS clients use it so
// they accept exactly what Validate accepted.
func LoadCAFile(path string) (*x509.CertPool, error) {
	data, err := readRegularFile(path, maxCAFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s holds a PEM block of type %q; only CERTIFICATE blocks belong in a CA file", path, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d does not parse: %w", path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// maxCAFile bounds a CA bundle; the system bundle of a Linux distribution
// is about 200 KiB.
const maxCAFile = 16 << 20

// readRegularFile reads at most limit bytes from a regular file, so a path
// to a device or FIFO fails instead of blocking or filling memory.
func readRegularFile(path string, limit int64) ([]byte, error) {
	// Stat before Open: opening a FIFO blocks until a writer appears.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// Options converts g to the recipient resolver's options.
func (g *Global) Options() recipients.GlobalOptions {
	return recipients.GlobalOptions{
		LocalDomains: g.LocalDomains, HeaderOrder: g.HeaderOrder, UseTo: g.UseTo,
		Rewrite: g.Rewrite, Fallback: g.Fallback,
	}
}

// DeleteCodes returns the parsed delete_on_codes (valid after Validate).
func (u Undeliverable) DeleteCodes() []notify.ReplyCode {
	var out []notify.ReplyCode
	for _, c := range u.DeleteOnCodes {
		if rc, err := notify.ParseReplyCode(c); err == nil {
			out = append(out, rc)
		}
	}
	return out
}
