// Package route chooses the SMTP endpoint (smart host) each recipient is
// relayed to, by address space and cost, the way Exchange routes over SMTP
// connectors (Exchange Server 2003, "Configuring an SMTP Connector"):
//
//   - A route serves the address spaces it lists: "*" (every domain),
//     "contoso.com" (that domain only), "*.contoso.com" (every subdomain of
//     contoso.com, not contoso.com itself; list both to cover both), "*.net"
//     (every domain under a top-level domain).
//   - The closest match wins: with a "*" route and a "*.net" route, mail to
//     any .net domain takes the "*.net" route. An exact domain beats any
//     wildcard, a longer wildcard suffix beats a shorter one, and "*" comes
//     last.
//   - Among routes whose match is equally close, the lowest cost wins: with
//     Connector1 (cost 1) and Connector2 (cost 2) both serving "*", mail
//     goes through Connector1 while it works and through Connector2 when it
//     cannot be reached. Equal costs keep configuration order.
//
// Guarantees: a Table is immutable and safe for concurrent use. Candidates
// lists every route that may carry a recipient, best first, so failing over
// never skips one and never tries one twice. Plan keeps every recipient
// exactly once, in input order within each group. Hosts are validated like
// Exchange's smart host: an FQDN, "localhost", an IP address, or an address
// literal in brackets ([192.0.2.10], [IPv6:2001:db8::1]); a single-label name
// is refused because it resolves differently depending on the resolver's
// search list.
//
// What it cannot do: it does not resolve names, look up MX records or test
// that a route is reachable; "unavailable" means the caller failed to
// connect and said so (Failover). It has no notion of routing groups or
// scope. Domains are compared case-insensitively as ASCII; an IDN domain
// must be written as its A-label (xn--...).
package route

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/popconnector/popconnector/internal/mailaddr"
)

// DefaultPort is the SMTP port used when a Route's Port is 0.
const DefaultPort = 25

// Exchange's connector costs range from 1 to 100; 0 means the default, 1.
const (
	DefaultCost = 1
	MaxCost     = 100
)

// Route is one SMTP endpoint and the recipients it serves.
type Route struct {
	// Name identifies the route in logs and in the configuration; unique.
	Name string
	// Host is an FQDN, "localhost", an IP address, or an address literal
	// ("[192.0.2.10]", "[IPv6:2001:db8::1]").
	Host string
	// Port is the SMTP port; 0 means DefaultPort.
	Port int
	// AddressSpaces are the recipient domains served: "*", "*.net",
	// "contoso.com", "*.contoso.com". Empty means {"*"}.
	AddressSpaces []string
	// Cost orders routes whose address spaces match equally well, lowest
	// first: 1..100, 0 means DefaultCost.
	Cost int
	// MaxConnections bounds the SMTP connections open to the route at
	// once, over every poll of the process (Exchange counts connections
	// per source: MaxInboundConnectionPerSource); 0 means no bound.
	MaxConnections int
}

// Addr returns Host and Port in the form net.Dial takes, with an address
// literal's brackets and "IPv6:" tag removed.
func (r Route) Addr() string {
	h := r.Host
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
		if len(h) >= 5 && strings.EqualFold(h[:5], "IPv6:") {
			h = h[5:]
		}
	}
	port := r.Port
	if port == 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(h, strconv.Itoa(port))
}

// ErrNotFQDN is matched (errors.Is) by ValidateHost's error for a
// single-label host name.
var ErrNotFQDN = errors.New("not a fully qualified domain name")

// ErrInvalidHost is matched by ValidateHost's other errors.
var ErrInvalidHost = errors.New("invalid host")

type hostError struct {
	msg  string
	kind error
}

func (e *hostError) Error() string { return e.msg }
func (e *hostError) Unwrap() error { return e.kind }

func invalidHost(format string, args ...any) error {
	return &hostError{msg: fmt.Sprintf(format, args...), kind: ErrInvalidHost}
}

// ValidateHost checks a smart host: an FQDN (servername.contoso.com),
// "localhost", an IP address, or an RFC 5321 §4.1.3 address literal
// ([192.0.2.10], [IPv6:2001:db8::1]), each by package mailaddr's rules. A
// bare single-label name such as "Server Name" or "exchange" is refused
// with ErrNotFQDN.
func ValidateHost(h string) error {
	if strings.TrimSpace(h) == "" {
		return invalidHost("host is empty: give the server's fully qualified name or IP address")
	}
	if strings.HasPrefix(h, "[") || strings.HasSuffix(h, "]") {
		if err := mailaddr.AddressLiteral(h); err != nil {
			return invalidHost("%q: %v", h, err)
		}
		return nil
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	if hp, port, err := net.SplitHostPort(h); err == nil && port != "" {
		return invalidHost("%q contains a port; give the host %s and the port %s separately", h, hp, port)
	}
	name := strings.TrimSuffix(h, ".")
	if !strings.Contains(name, ".") && !strings.EqualFold(name, "localhost") {
		return &hostError{
			msg: fmt.Sprintf("%q is not a fully qualified domain name (FQDN); use e.g. servername.contoso.com, "+
				"or an IP address in brackets like [192.0.2.10]", h),
			kind: ErrNotFQDN,
		}
	}
	if mailaddr.Hostname(h) != nil {
		return invalidHost("%q is not a valid host name or IP address", h)
	}
	return nil
}

// space is a parsed address space.
type space struct {
	star   bool   // "*"
	wild   bool   // "*.suffix": matches proper subdomains of suffix
	domain string // exact domain, or the suffix of a wildcard; lower case
	labels int    // labels in domain
}

// parseSpace checks one address space and returns it normalised.
func parseSpace(s string) (space, error) {
	v := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	if v == "*" {
		return space{star: true}, nil
	}
	wild := false
	if rest, ok := strings.CutPrefix(v, "*."); ok {
		wild, v = true, rest
	}
	if v == "" || strings.Contains(v, "*") {
		return space{}, fmt.Errorf("address space %q: use *, a domain (contoso.com), or a wildcard (*.contoso.com, *.net)", s)
	}
	if err := mailaddr.Hostname(v); err != nil {
		return space{}, fmt.Errorf("address space %q: %w", s, err)
	}
	labels := strings.Split(v, ".")
	if !wild && len(labels) == 1 {
		return space{}, fmt.Errorf("address space %q: a single label matches no domain; for a top-level domain write *.%s", s, v)
	}
	return space{wild: wild, domain: v, labels: len(labels)}, nil
}

// String returns the address space as written in normalised form.
func (s space) String() string {
	switch {
	case s.star:
		return "*"
	case s.wild:
		return "*." + s.domain
	}
	return s.domain
}

// specificity ranks how closely s matches domain: 0 for no match, higher
// for closer. "*" is 1; a wildcard is 2 plus its suffix length in labels;
// an exact domain beats every wildcard.
func (s space) specificity(domain string) int {
	switch {
	case s.star:
		return 1
	case s.wild:
		if strings.HasSuffix(domain, "."+s.domain) {
			return 2 + s.labels
		}
		return 0
	case domain == s.domain:
		return 1 << 20
	}
	return 0
}

type entry struct {
	Route
	spaces []space
	order  int
}

// Table is a validated set of routes.
type Table struct {
	entries []entry
	byName  map[string]int
}

// New validates routes and builds a Table. The error lists every problem
// (errors.Join), each prefixed with the route's name or position.
func New(routes []Route) (*Table, error) {
	t := &Table{byName: make(map[string]int)}
	var errs []error
	if len(routes) == 0 {
		errs = append(errs, errors.New("route: no route: give at least one SMTP endpoint"))
	}
	for i, r := range routes {
		label := fmt.Sprintf("route %d", i+1)
		if r.Name != "" {
			label = fmt.Sprintf("route %q", r.Name)
		}
		fail := func(err error) { errs = append(errs, fmt.Errorf("%s: %w", label, err)) }
		switch {
		case strings.TrimSpace(r.Name) == "":
			fail(errors.New("name is required"))
		case r.Name != strings.TrimSpace(r.Name):
			fail(errors.New("name has leading or trailing spaces"))
		default:
			key := strings.ToLower(r.Name)
			if _, dup := t.byName[key]; dup {
				fail(errors.New("name is used by another route"))
			}
			t.byName[key] = len(t.entries)
		}
		if err := ValidateHost(r.Host); err != nil {
			fail(err)
		}
		if r.Port == 0 {
			r.Port = DefaultPort
		} else if r.Port < 1 || r.Port > 65535 {
			fail(fmt.Errorf("port %d is out of range 1..65535", r.Port))
		}
		if r.Cost == 0 {
			r.Cost = DefaultCost
		} else if r.Cost < 1 || r.Cost > MaxCost {
			fail(fmt.Errorf("cost %d is out of range 1..%d", r.Cost, MaxCost))
		}
		e := entry{order: i}
		written := r.AddressSpaces
		if len(written) == 0 {
			written = []string{"*"}
		}
		r.AddressSpaces = nil
		seen := make(map[string]bool)
		for _, s := range written {
			sp, err := parseSpace(s)
			if err != nil {
				fail(err)
				continue
			}
			if seen[sp.String()] {
				fail(fmt.Errorf("address space %q is listed twice", s))
				continue
			}
			seen[sp.String()] = true
			e.spaces = append(e.spaces, sp)
			r.AddressSpaces = append(r.AddressSpaces, sp.String())
		}
		e.Route = r
		t.entries = append(t.entries, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// Routes returns the routes as validated (defaults filled in, address
// spaces normalised), in configuration order.
func (t *Table) Routes() []Route {
	out := make([]Route, len(t.entries))
	for i, e := range t.entries {
		out[i] = e.copy()
	}
	return out
}

// Lookup returns the route named name (case-insensitive).
func (t *Table) Lookup(name string) (Route, bool) {
	i, ok := t.byName[strings.ToLower(name)]
	if !ok {
		return Route{}, false
	}
	return t.entries[i].copy(), true
}

func (e entry) copy() Route {
	r := e.Route
	r.AddressSpaces = slices.Clone(r.AddressSpaces)
	return r
}

// recipientDomain returns the lower-cased domain of rcpt without a trailing
// dot; "" when rcpt has none.
func recipientDomain(rcpt string) string {
	at := strings.LastIndexByte(rcpt, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(rcpt[at+1:], "."))
}

// Candidates returns every route whose address spaces match rcpt's domain,
// best first: closest address space, then lowest cost, then configuration
// order. Nil when none matches. An address without a domain, or with an
// address literal, is matched only by "*".
func (t *Table) Candidates(rcpt string) []Route {
	return t.candidates(rcpt, nil)
}

func (t *Table) candidates(rcpt string, down Down) []Route {
	domain := recipientDomain(rcpt)
	type match struct {
		e    *entry
		spec int
	}
	var ms []match
	for i := range t.entries {
		e := &t.entries[i]
		if down[strings.ToLower(e.Name)] {
			continue
		}
		best := 0
		for _, s := range e.spaces {
			if s.star || (domain != "" && !strings.HasPrefix(domain, "[")) {
				best = max(best, s.specificity(domain))
			}
		}
		if best > 0 {
			ms = append(ms, match{e, best})
		}
	}
	slices.SortStableFunc(ms, func(a, b match) int {
		if a.spec != b.spec {
			return b.spec - a.spec
		}
		if a.e.Cost != b.e.Cost {
			return a.e.Cost - b.e.Cost
		}
		return a.e.order - b.e.order
	})
	if len(ms) == 0 {
		return nil
	}
	out := make([]Route, len(ms))
	for i, m := range ms {
		out[i] = m.e.copy()
	}
	return out
}

// Down is the set of routes found unreachable during one delivery run,
// keyed by lower-cased route name. The caller owns it; Failover adds to it.
type Down map[string]bool

// Group is the recipients of one message that take the same route.
type Group struct {
	// Route is the first choice for every recipient in the group; nil when
	// no route that is not down serves them (Unroutable).
	Route *Route
	// Recipients are in the order they were given.
	Recipients []string
}

// Unroutable reports whether no available route serves the group.
func (g Group) Unroutable() bool { return g.Route == nil }

// Plan splits the recipients of one message by their first-choice route,
// so that one message can go over several routes (one SMTP transaction
// per group). Groups come in the order of their first recipient; the
// recipients no route serves form the last group, with a nil Route.
func (t *Table) Plan(rcpts []string) []Group {
	return t.PlanAvoiding(rcpts, nil)
}

// PlanAvoiding is Plan without the routes in down.
func (t *Table) PlanAvoiding(rcpts []string, down Down) []Group {
	var groups []Group
	index := make(map[string]int)
	var unroutable []string
	for _, rc := range rcpts {
		c := t.candidates(rc, down)
		if len(c) == 0 {
			unroutable = append(unroutable, rc)
			continue
		}
		key := strings.ToLower(c[0].Name)
		i, ok := index[key]
		if !ok {
			i = len(groups)
			index[key] = i
			r := c[0]
			groups = append(groups, Group{Route: &r})
		}
		groups[i].Recipients = append(groups[i].Recipients, rc)
	}
	if len(unroutable) > 0 {
		groups = append(groups, Group{Recipients: unroutable})
	}
	return groups
}

// Failover marks failed.Route as down and plans failed's recipients again
// over the routes left: the next candidates, which may split the group
// when its recipients' second choices differ. A recipient with no route
// left comes back in a group with a nil Route; the caller then defers it
// (a temporary failure: the routes may come back). Failover of an
// unroutable group returns it unchanged. down should be non-nil so that the
// caller's later plans avoid the failed route too; a nil down is treated as
// empty and the mark is not kept.
func (t *Table) Failover(failed Group, down Down) []Group {
	if failed.Route == nil {
		return []Group{failed}
	}
	if down == nil {
		down = make(Down)
	}
	down[strings.ToLower(failed.Route.Name)] = true
	return t.PlanAvoiding(failed.Recipients, down)
}
