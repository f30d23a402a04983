// Package recipients finds the local recipients of a message fetched from a
// global (catch-all) POP3 mailbox: one maildrop that receives the mail of a
// whole domain, whose messages must be spread over the Exchange mailboxes
// they were meant for.
//
// The Exchange POP3 connector did this by scanning To and Cc (Microsoft KB
// 325464), which loses Bcc recipients (KB 279893) and, when the ISP leaves
// one copy per recipient in the maildrop, delivers every copy to everybody.
// This package consults first the envelope headers the ISP's MTA writes at
// delivery, in a configurable order (Delivered-To, X-Original-To,
// X-Envelope-To, Envelope-To, and the "for" clause of Received, RFC 5321
// §4.4), and only then, when asked to, the To/Cc (or Resent-To/Resent-Cc,
// RFC 5322 §3.6.6) of the message.
//
// Guarantees:
//   - Address lists are parsed with emersion/go-message (net/mail's RFC 5322
//     parser): folded fields, encoded-word display names (RFC 2047), group
//     syntax ("undisclosed-recipients:;"), comments and quoted strings. A
//     list with a malformed entry is split at its top-level commas and each
//     entry parsed on its own, so one bad address never hides the others; the
//     skipped entry is named in Result.Problems.
//   - Every recipient found in a header is a mailbox by package mailaddr's
//     rule (a local part that needs no quoting, a valid domain, RFC 5321's
//     length limits), so it can go into an SMTP RCPT command as is, and its
//     domain is one of GlobalOptions.LocalDomains (compared
//     case-insensitively, after rewriting); local domains, rewrite rules
//     and the fallback are checked by the same rules. The fallback address
//     is used as configured. The list has no duplicates (compared
//     case-insensitively; the first spelling is kept) and keeps the order of
//     the headers.
//   - The first header in the order that yields a local recipient decides
//     alone (Result.Source); later headers are not merged in, so a copy the
//     ISP delivered for one recipient goes to that recipient only.
//   - When nothing yields a local recipient, the message goes to the fallback
//     address (Result.Fallback): mail is never dropped for want of a
//     recipient.
//   - Resolve never panics and never fails: whatever the input, it returns a
//     usable Result.
//
// What it cannot do: it cannot tell a header written by the ISP from one the
// sender forged further down the header; like the Exchange connector it
// trusts the message. It does not look at the body, expand aliases or
// distribution lists, or check that a mailbox exists on Exchange (Exchange
// answers that at RCPT). Domains are compared as written: an IDN domain must
// be listed in the form the ISP writes it (A-label or U-label).
package recipients

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-message/mail"

	"github.com/popconnector/popconnector/internal/mailaddr"
)

// DefaultHeaderOrder is the envelope headers consulted when
// GlobalOptions.HeaderOrder is empty, most trustworthy first: Delivered-To
// (Postfix, qmail, Dovecot LDA), X-Original-To (Postfix, the recipient before
// alias expansion), X-Envelope-To and Envelope-To (Exim, many hosters), and
// the "for" clause of Received fields.
var DefaultHeaderOrder = []string{"Delivered-To", "X-Original-To", "X-Envelope-To", "Envelope-To", "Received"}

// ReceivedHeader is the HeaderOrder entry that scans Received fields for
// their "for <addr>" clause rather than parsing them as address lists.
const ReceivedHeader = "Received"

// maxListed bounds Ignored and Problems, so that a message with thousands of
// addresses cannot flood a log line.
const maxListed = 50

// GlobalOptions configures Resolve for one global mailbox.
type GlobalOptions struct {
	// LocalDomains are the domains Exchange accepts mail for (its accepted
	// domains / recipient policy). Only addresses in these domains are
	// recipients. Required.
	LocalDomains []string
	// HeaderOrder lists the envelope headers consulted, in order; the first
	// that yields a local recipient decides. "Received" means the "for"
	// clause of Received fields; any other name is parsed as an address
	// list. Empty means DefaultHeaderOrder.
	HeaderOrder []string
	// UseTo makes Resolve fall back to the message's own recipients when no
	// envelope header gave a local one: Resent-To and Resent-Cc when the
	// message was resent to a local address, else To and Cc. Off, a message
	// without envelope headers goes to Fallback. Bcc recipients cannot be
	// found this way (they are in no header).
	UseTo bool
	// Rewrite maps addresses before the local-domain check, keys compared
	// case-insensitively: "alias@isp.example" -> "user@corp.example" for one
	// address, "*@isp.example" -> "*@corp.example" to keep the local part and
	// change the domain, "*@isp.example" -> "user@corp.example" to send a
	// whole domain to one address. An exact key wins over a wildcard. Each
	// address is rewritten at most once (no chains, so no loops).
	Rewrite map[string]string
	// Fallback receives a message with no local recipient. Empty means
	// "postmaster@" + the first local domain (RFC 5321 §4.5.1 requires that
	// mailbox in every domain); the configuration normally sets it to the
	// connector's postmaster address.
	Fallback string
}

// Result is the outcome of Resolve.
type Result struct {
	// Recipients are the envelope recipients to relay the message to; never
	// empty when a fallback address is known.
	Recipients []string
	// Source names the header(s) the recipients came from: one name of
	// HeaderOrder, "Resent-To, Resent-Cc" or "To, Cc" (those that
	// contributed), or "fallback".
	Source string
	// Fallback reports that no header yielded a local recipient and
	// Recipients is the fallback address.
	Fallback bool
	// Ignored lists well-formed addresses seen in the consulted headers
	// whose domain is not local, for the log when the fallback is used.
	Ignored []string
	// Problems describes what was skipped: unparsable entries, addresses
	// that cannot be used in an envelope, invalid options. Empty for a clean
	// message.
	Problems []string
}

// Resolver is GlobalOptions checked and prepared once, for many messages.
type Resolver struct {
	local    map[string]bool
	order    []string
	useTo    bool
	exact    map[string]string // lower-case address -> target
	wildcard map[string]string // lower-case domain -> target ("*@d" or an address)
	fallback string
}

// NewResolver validates opts and prepares them. The error lists every
// problem (errors.Join).
func NewResolver(opts GlobalOptions) (*Resolver, error) {
	r, problems := compile(opts)
	if len(problems) > 0 {
		errs := make([]error, len(problems))
		for i, p := range problems {
			errs[i] = errors.New(p)
		}
		return nil, fmt.Errorf("recipients: invalid global mailbox options: %w", errors.Join(errs...))
	}
	return r, nil
}

// Validate reports every problem with opts, or nil.
func (o GlobalOptions) Validate() error {
	_, err := NewResolver(o)
	return err
}

// Resolve finds the local recipients of the message whose header is h,
// with opts checked on every call; invalid parts of opts are skipped and
// named in Problems. Use NewResolver to check the options once.
func Resolve(h *mail.Header, opts GlobalOptions) Result {
	r, problems := compile(opts)
	res := r.Resolve(h)
	if len(problems) > 0 {
		res.Problems = append(append([]string(nil), problems...), res.Problems...)
	}
	return res
}

// compile prepares opts, skipping what is invalid, and describes every
// problem.
func compile(opts GlobalOptions) (*Resolver, []string) {
	var problems []string
	r := &Resolver{
		local:    make(map[string]bool),
		exact:    make(map[string]string),
		wildcard: make(map[string]string),
		useTo:    opts.UseTo,
	}
	var firstDomain string
	for _, d := range opts.LocalDomains {
		nd, err := normalizeDomain(d)
		if err != nil {
			problems = append(problems, fmt.Sprintf("local domain %q: %v", d, err))
			continue
		}
		if r.local[nd] {
			problems = append(problems, fmt.Sprintf("local domain %q is listed twice", d))
			continue
		}
		r.local[nd] = true
		if firstDomain == "" {
			firstDomain = nd
		}
	}
	if len(r.local) == 0 && len(opts.LocalDomains) == 0 {
		problems = append(problems, "no local domain: list the domains Exchange accepts mail for")
	}

	order := opts.HeaderOrder
	if len(order) == 0 {
		order = DefaultHeaderOrder
	}
	seen := make(map[string]bool)
	for _, name := range order {
		if !validFieldName(name) {
			problems = append(problems, fmt.Sprintf("header order: %q is not a header field name", name))
			continue
		}
		key := strings.ToLower(name)
		if seen[key] {
			problems = append(problems, fmt.Sprintf("header order: %q is listed twice", name))
			continue
		}
		seen[key] = true
		r.order = append(r.order, name)
	}

	for from, to := range opts.Rewrite {
		if msg := r.addRewrite(from, to); msg != "" {
			problems = append(problems, msg)
		}
	}

	switch {
	case opts.Fallback != "":
		if a, ok := bareAddress(opts.Fallback); ok {
			r.fallback = a
		} else {
			problems = append(problems, fmt.Sprintf("fallback %q is not a bare email address", opts.Fallback))
		}
	case firstDomain != "":
		r.fallback = "postmaster@" + firstDomain
	}
	// Map iteration order is random; sort so that the same options always
	// give the same message.
	slices.Sort(problems)
	return r, problems
}

// addRewrite checks and records one rewrite rule; it returns a problem or "".
func (r *Resolver) addRewrite(from, to string) string {
	target := strings.TrimSpace(to)
	if local, domain, ok := strings.Cut(from, "@"); ok && local == "*" {
		d, err := normalizeDomain(domain)
		if err != nil {
			return fmt.Sprintf("rewrite %q: %v", from, err)
		}
		if tl, td, ok := strings.Cut(target, "@"); ok && tl == "*" {
			ntd, err := normalizeDomain(td)
			if err != nil {
				return fmt.Sprintf("rewrite %q -> %q: %v", from, to, err)
			}
			if !r.local[ntd] {
				return fmt.Sprintf("rewrite %q -> %q: %s is not a local domain, so nothing would be delivered", from, to, td)
			}
			r.wildcard[d] = "*@" + td
			return ""
		}
		a, ok := bareAddress(target)
		if !ok {
			return fmt.Sprintf("rewrite %q -> %q: the target must be an address or *@domain", from, to)
		}
		if !r.local[domainOf(a)] {
			return fmt.Sprintf("rewrite %q -> %q: %s is not in a local domain, so nothing would be delivered", from, to, a)
		}
		r.wildcard[d] = a
		return ""
	}
	src, ok := bareAddress(from)
	if !ok {
		return fmt.Sprintf("rewrite %q: the key must be an address or *@domain", from)
	}
	a, ok := bareAddress(target)
	if !ok || strings.HasPrefix(a, "*@") {
		return fmt.Sprintf("rewrite %q -> %q: the target of an address must be an address", from, to)
	}
	if !r.local[domainOf(a)] {
		return fmt.Sprintf("rewrite %q -> %q: %s is not in a local domain, so nothing would be delivered", from, to, a)
	}
	r.exact[strings.ToLower(src)] = a
	return ""
}

// rewrite applies the rules once.
func (r *Resolver) rewrite(addr string) string {
	if to, ok := r.exact[strings.ToLower(addr)]; ok {
		return to
	}
	at := strings.LastIndexByte(addr, '@')
	if to, ok := r.wildcard[domainOf(addr)]; ok {
		if strings.HasPrefix(to, "*@") {
			return addr[:at] + to[1:]
		}
		return to
	}
	return addr
}

// Resolve finds the local recipients of the message whose header is h. A
// nil h yields the fallback.
func (r *Resolver) Resolve(h *mail.Header) Result {
	c := collector{r: r}
	if h != nil {
		for _, name := range r.order {
			c.begin()
			if strings.EqualFold(name, ReceivedHeader) {
				c.received(h)
			} else {
				c.addressField(h, name)
			}
			if len(c.found) > 0 {
				return c.result(name)
			}
		}
		if r.useTo {
			// Resent-* name the recipients of the latest resending (RFC 5322
			// §3.6.6); the original To and Cc already had their copy.
			for _, set := range [][]string{{"Resent-To", "Resent-Cc"}, {"To", "Cc"}} {
				c.begin()
				var used []string
				for _, name := range set {
					n := len(c.found)
					c.addressField(h, name)
					if len(c.found) > n {
						used = append(used, name)
					}
				}
				if len(c.found) > 0 {
					return c.result(strings.Join(used, ", "))
				}
			}
		}
	}
	res := Result{Source: "fallback", Fallback: true, Ignored: c.ignored, Problems: c.problems}
	if r.fallback != "" {
		res.Recipients = []string{r.fallback}
	} else {
		res.Problems = appendCapped(res.Problems, "no fallback address: set one, or list a local domain")
	}
	return res
}

// collector gathers addresses for one Resolve call.
type collector struct {
	r        *Resolver
	found    []string
	seen     map[string]bool
	ignored  []string
	ignSeen  map[string]bool
	problems []string
}

// begin starts a new candidate source; ignored addresses and problems
// accumulate across sources.
func (c *collector) begin() {
	c.found, c.seen = nil, make(map[string]bool)
}

func (c *collector) result(source string) Result {
	return Result{Recipients: c.found, Source: source, Ignored: c.ignored, Problems: c.problems}
}

func (c *collector) problem(format string, args ...any) {
	c.problems = appendCapped(c.problems, fmt.Sprintf(format, args...))
}

// add rewrites addr and keeps it when local, new and usable in an envelope.
func (c *collector) add(field, addr string) {
	if err := mailaddr.Mailbox(addr); err != nil {
		c.problem("%s: skipped %s: the address needs quoting or is malformed (%v), and cannot be used in an SMTP envelope", field, clip((&mail.Address{Address: addr}).String()), err)
		return
	}
	addr = c.r.rewrite(addr)
	key := strings.ToLower(addr)
	if !c.r.local[domainOf(addr)] {
		if c.ignSeen == nil {
			c.ignSeen = make(map[string]bool)
		}
		if !c.ignSeen[key] {
			c.ignSeen[key] = true
			c.ignored = appendCapped(c.ignored, addr)
		}
		return
	}
	if c.seen[key] {
		return
	}
	c.seen[key] = true
	c.found = append(c.found, addr)
}

// addressField parses every occurrence of the named field as an address
// list.
func (c *collector) addressField(h *mail.Header, name string) {
	for _, v := range h.Values(name) {
		addrs, problems := parseList(v)
		for _, p := range problems {
			c.problem("%s: %s", name, p)
		}
		for _, a := range addrs {
			c.add(name, a)
		}
	}
}

// received scans every Received field for its "for" clause.
func (c *collector) received(h *mail.Header) {
	for _, v := range h.Values(ReceivedHeader) {
		clause, ok := receivedFor(v)
		if !ok {
			continue
		}
		a, err := mail.ParseAddress(clause)
		if err != nil {
			c.problem("Received: skipped \"for %s\": %v", clip(clause), err)
			continue
		}
		c.add(ReceivedHeader, a.Address)
	}
}

func appendCapped(list []string, s string) []string {
	switch {
	case len(list) < maxListed:
		return append(list, s)
	case len(list) == maxListed:
		return append(list, "(more left out)")
	}
	return list
}

// normalizeDomain lower-cases d, drops one trailing dot and checks it by
// mailaddr's Domain rule: LDH labels, A-labels or U-labels.
func normalizeDomain(d string) (string, error) {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if err := mailaddr.Domain(d); err != nil {
		return "", fmt.Errorf("not a domain name: %w", err)
	}
	return d, nil
}

// bareAddress checks s, without surrounding spaces, by mailaddr's Mailbox
// rule: no display name or quotes, so it goes into RCPT TO as written.
func bareAddress(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if mailaddr.Mailbox(s) != nil {
		return "", false
	}
	return s, true
}

// domainOf returns the lower-cased domain of addr without a trailing dot.
func domainOf(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
}

// validFieldName checks RFC 5322 §2.2 field-name syntax: printable ASCII
// except colon.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '!' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// clip shortens s for a message.
func clip(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
