// Package metrics writes popconn's CloudWatch metrics as Embedded Metric
// Format (EMF) log lines: one JSON object per line on the function's
// stdout, from which CloudWatch Logs extracts the metrics. Nothing calls
// PutMetricData, so publishing metrics needs no IAM permission, no network
// round trip from inside the poll and no extra latency at the deadline.
//
// Guarantees:
//   - PollEMF writes exactly one line per mailbox poll, InvocationEMF one
//     per invocation, each with a single Write call so that a line-serialising
//     writer never interleaves it with other output.
//   - Every line follows the EMF specification
//     (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
//     "_aws" holds a Timestamp in epoch milliseconds and CloudWatchMetrics
//     directives; each metric a directive names is a top-level JSON number;
//     each dimension named is a top-level string; units are CloudWatch
//     StandardUnit names; no directive lists more than 100 metrics or a
//     dimension set more than 30 keys.
//   - Cardinality is low by default. A poll line always carries every
//     per-poll value and the mailbox id (Mailbox) as top-level properties,
//     so CloudWatch Logs Insights, metric filters and Contributor Insights
//     rules can group by mailbox; but it declares as metrics only the ones
//     worth an account-wide alarm (Metric.Rollup), without dimensions:
//     with the invocation metrics, AccountWideCount custom metrics
//     whatever the number of mailboxes. With
//     PollOptions.PerMailboxMetrics every per-poll metric is also declared
//     with the dimension Mailbox, which costs one custom metric per metric
//     and mailbox (PerMailboxCount per mailbox).
//   - Each poll line says how the poll ended (Outcome: ok, failed, busy,
//     stopped). A mailbox another invocation holds (ledger.ErrLeaseHeld) is
//     busy, never failed: MailboxErrors is 0 and LeaseContention 1 for it,
//     and InvocationEMF counts it in MailboxesBusy, not MailboxesFailed.
//   - MailboxErrors and LeaseContention are written as 0 on success, so a
//     healthy mailbox is told apart from one that stopped reporting.
//   - A failed poll carries ErrorKind (auth, connect, tls, other) and the
//     error text as log properties, not dimensions: one failing mailbox
//     does not create a metric per error message. Error texts come from
//     packages that guarantee they hold no secret (see pop3, relay,
//     config); this package adds none.
//
// What it cannot do: CloudWatch Logs extracts metrics only from log groups
// it receives (Lambda's stdout goes there; a local run's stdout does not),
// and it drops a line silently when it breaks the specification, which is
// why the tests check the structure. Metric values are sums for one poll:
// statistics over time are CloudWatch's job.
package metrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/pop3"
)

// Unit is a CloudWatch StandardUnit name.
type Unit string

// The units popconn's metrics use.
const (
	Count        Unit = "Count"
	Bytes        Unit = "Bytes"
	Milliseconds Unit = "Milliseconds"
	Seconds      Unit = "Seconds"
)

// StandardUnits are the unit names CloudWatch accepts (the StandardUnit
// enumeration of the CloudWatch API); anything else makes CloudWatch Logs
// reject the EMF line.
var StandardUnits = []string{
	"Seconds", "Microseconds", "Milliseconds",
	"Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
	"Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
	"Percent", "Count",
	"Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
	"Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
	"Count/Second", "None",
}

// Scope says which function writes a metric.
type Scope string

const (
	// ScopePoll metrics are written by PollEMF: always as properties of
	// the poll line, as metrics without dimensions when Rollup, and with
	// the Mailbox dimension when PollOptions.PerMailboxMetrics is set.
	ScopePoll Scope = "poll"
	// ScopeInvocation metrics are written by InvocationEMF, without dimensions.
	ScopeInvocation Scope = "invocation"
)

// DimensionMailbox is the dimension per-mailbox metrics carry, and the
// property of every poll line that names the mailbox: its id from the
// configuration.
const DimensionMailbox = "Mailbox"

// Properties of a poll line besides the metric values.
const (
	// PropertyOutcome is how the poll ended: one of the Outcome constants.
	PropertyOutcome = "Outcome"
	// PropertyErrorKind is the ErrorKind of a failed poll.
	PropertyErrorKind = "ErrorKind"
	// PropertyError is the error text of a failed poll.
	PropertyError = "Error"
	// PropertyStopReason says why a poll stopped early.
	PropertyStopReason = "StopReason"
)

// Outcomes of a poll, the Outcome property (and the value the handler's
// "outcome" log key uses).
const (
	OutcomeOK      = "ok"      // the poll ran to its end
	OutcomeFailed  = "failed"  // the poll ended with an error (ErrorKind says which)
	OutcomeBusy    = "busy"    // another invocation holds the mailbox; skipped, not a failure
	OutcomeStopped = "stopped" // the poll stopped starting messages early (deadline, limits): mail waits
)

// Outcome says how the poll of r ended. An error wins over an early stop;
// a lease held by another invocation is busy, not failed.
func Outcome(r connector.Result) string {
	switch {
	case r.Err != nil && errors.Is(r.Err, ledger.ErrLeaseHeld):
		return OutcomeBusy
	case r.Err != nil:
		return OutcomeFailed
	case r.Stopped != "":
		return OutcomeStopped
	}
	return OutcomeOK
}

// Metric describes one metric this package emits.
type Metric struct {
	Name  string
	Unit  Unit
	Scope Scope
	// Rollup: a poll metric that is declared without dimensions, summed
	// (or maximised) over every mailbox by CloudWatch. The others are
	// declared only per mailbox, when PollOptions.PerMailboxMetrics is set.
	Rollup bool
	// Help says what the value is, for the dashboard and the runbook.
	Help string
}

// Catalog lists every metric, in the order the lines name them.
var Catalog = []Metric{
	{"MessagesOnServer", Count, ScopePoll, false, "messages the POP3 server listed at the start of the poll"},
	{"MessagesFetched", Count, ScopePoll, true, "messages downloaded and archived in the poll"},
	{"BytesFetched", Bytes, ScopePoll, true, "bytes downloaded in the poll"},
	{"MessagesDelivered", Count, ScopePoll, true, "messages every recipient accepted in the poll"},
	{"MessagesDeferred", Count, ScopePoll, true, "messages left with a temporary delivery failure, retried later"},
	{"MessagesRejected", Count, ScopePoll, true, "messages left with a permanent rejection (5xx): needs a person"},
	{"MessagesGaveUp", Count, ScopePoll, true, "messages that passed the give-up age in the poll; the postmaster was told"},
	{"MessagesDeleted", Count, ScopePoll, true, "deletions the POP3 server confirmed with QUIT"},
	{"DuplicatesSuppressed", Count, ScopePoll, true, "recipients not sent a copy because they accepted another copy with the same Message-ID within the duplicate window"},
	{"PollDuration", Milliseconds, ScopePoll, false, "wall time of the poll, lease to release"},
	{"OldestUndeliveredAge", Seconds, ScopePoll, true, "age of the oldest message not yet delivered, 0 when none"},
	{"PollStoppedEarly", Count, ScopePoll, true, "1 when the poll stopped starting messages early (deadline, per-poll limit): mail is waiting"},
	{"MailboxErrors", Count, ScopePoll, true, "1 when the poll failed (ErrorKind says why), 0 when it did not (a busy mailbox is 0)"},
	{"LeaseContention", Count, ScopePoll, true, "1 when another invocation held the mailbox and the poll was skipped (busy, not a failure)"},
	{"MailboxesPolled", Count, ScopeInvocation, false, "mailboxes the invocation was asked to poll, busy ones included"},
	{"MailboxesFailed", Count, ScopeInvocation, false, "mailboxes whose poll failed (busy ones excluded)"},
	{"MailboxesBusy", Count, ScopeInvocation, false, "mailboxes skipped because another invocation held them (not failures)"},
	{"InvocationDuration", Milliseconds, ScopeInvocation, false, "wall time of the invocation's polls"},
	{"DeadlineHeadroom", Milliseconds, ScopeInvocation, false, "time left before the invocation deadline when the polls ended"},
}

// Names lists the name of every metric in Catalog; the dashboard and alarm
// tests check that what they show is emitted.
var Names = func() []string {
	n := make([]string, len(Catalog))
	for i, m := range Catalog {
		n[i] = m.Name
	}
	return n
}()

// PerMailboxCount is the number of custom metrics one mailbox adds when
// PollOptions.PerMailboxMetrics is set: every poll metric, per mailbox.
var PerMailboxCount = func() int {
	n := 0
	for _, m := range Catalog {
		if m.Scope == ScopePoll {
			n++
		}
	}
	return n
}()

// AccountWideCount is the number of custom metrics without dimensions:
// the poll rollups and the invocation metrics, whatever the number of
// mailboxes.
var AccountWideCount = func() int {
	n := 0
	for _, m := range Catalog {
		if m.Rollup || m.Scope == ScopeInvocation {
			n++
		}
	}
	return n
}()

// Lookup returns the Catalog entry for name.
func Lookup(name string) (Metric, bool) {
	for _, m := range Catalog {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// Error kinds, the ErrorKind property of a failed poll.
const (
	KindAuth    = "auth"    // the POP3 server rejected the credentials
	KindConnect = "connect" // the network: DNS, refused, reset, timeout, hang-up
	KindTLS     = "tls"     // certificate verification or TLS negotiation
	KindLease   = "lease"   // another invocation holds the mailbox: busy (OutcomeBusy), never written as a failure
	KindOther   = "other"   // anything else (protocol, storage, deadline, internal)
)

// ErrorKind classifies a poll error for the ErrorKind property: "" for nil.
// The order matters: a lease error is never a network error, and a TLS or
// authentication failure often travels inside a network error type.
func ErrorKind(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, ledger.ErrLeaseHeld) {
		return KindLease
	}
	if errors.Is(err, pop3.ErrAuth) || errors.Is(err, pop3.ErrMechanismNotOffered) {
		return KindAuth
	}
	// The token endpoint refused the client or its grant: the credentials
	// are wrong, not the network.
	var oerr *oauth.Error
	if errors.As(err, &oerr) && !oerr.Temporary {
		return KindAuth
	}
	if isTLS(err) {
		return KindTLS
	}
	if isConnect(err) {
		return KindConnect
	}
	return KindOther
}

func isTLS(err error) bool {
	var (
		verr    *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		header  tls.RecordHeaderError
		alert   tls.AlertError
	)
	switch {
	case errors.As(err, &verr), errors.As(err, &unknown), errors.As(err, &host),
		errors.As(err, &invalid), errors.As(err, &header), errors.As(err, &alert):
		return true
	case errors.Is(err, pop3.ErrNoSTLS), errors.Is(err, pop3.ErrPlaintextRefused):
		// The server offers no STLS, or the mailbox would send credentials
		// unencrypted: a TLS configuration problem, not a network one.
		return true
	}
	return false
}

func isConnect(err error) bool {
	var (
		op  *net.OpError
		dns *net.DNSError
	)
	if errors.As(err, &op) || errors.As(err, &dns) {
		return true
	}
	// The poll's own deadline or cancellation is not a network failure,
	// although context.DeadlineExceeded satisfies net.Error.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error // syscall.Errno (ECONNRESET...), os.ErrDeadlineExceeded
	if errors.As(err, &ne) {
		return true
	}
	// The server hung up mid-session.
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// PollOptions chooses what PollEMF declares as metrics.
type PollOptions struct {
	// PerMailboxMetrics declares every poll metric with the Mailbox
	// dimension too: PerMailboxCount custom metrics per mailbox, billed by
	// CloudWatch per metric and month. Off (the default), the per-mailbox
	// values are log properties only, and the metrics are the rollups.
	PerMailboxMetrics bool
}

// PollEMF writes the line of one mailbox poll to w: every per-poll value
// and the Mailbox, Outcome (and for a failure ErrorKind and Error)
// properties, with the EMF directives opts asks for.
func PollEMF(w io.Writer, namespace string, r connector.Result, now time.Time, opts PollOptions) error {
	if err := checkNamespace(namespace); err != nil {
		return err
	}
	if r.Mailbox == "" {
		return errors.New("metrics: a poll result without a mailbox id")
	}
	if opts.PerMailboxMetrics {
		if err := checkDimensionValue(r.Mailbox); err != nil {
			return fmt.Errorf("metrics: mailbox %q: %w", r.Mailbox, err)
		}
	}
	outcome := Outcome(r)
	values := map[string]float64{
		"MessagesOnServer":     float64(r.OnServer),
		"MessagesFetched":      float64(r.Fetched),
		"BytesFetched":         float64(r.Bytes),
		"MessagesDelivered":    float64(r.Delivered),
		"MessagesDeferred":     float64(r.Deferred),
		"MessagesRejected":     float64(r.Rejected),
		"MessagesGaveUp":       float64(r.GaveUp),
		"MessagesDeleted":      float64(r.Deleted),
		"DuplicatesSuppressed": float64(r.Suppressed),
		"PollDuration":         ms(r.Duration),
		"OldestUndeliveredAge": max(r.OldestUndelivered, 0).Seconds(),
		"PollStoppedEarly":     flag(r.Stopped != ""),
		"MailboxErrors":        flag(outcome == OutcomeFailed),
		"LeaseContention":      flag(outcome == OutcomeBusy),
	}
	doc := map[string]any{DimensionMailbox: r.Mailbox, PropertyOutcome: outcome}
	var all, rollup []metricDef
	for _, m := range Catalog {
		if m.Scope != ScopePoll {
			continue
		}
		v, ok := values[m.Name]
		if !ok {
			return fmt.Errorf("metrics: internal error: no value for %s", m.Name)
		}
		doc[m.Name] = v
		all = append(all, metricDef{Name: m.Name, Unit: string(m.Unit)})
		if m.Rollup {
			rollup = append(rollup, metricDef{Name: m.Name, Unit: string(m.Unit)})
		}
	}
	if outcome == OutcomeFailed {
		doc[PropertyErrorKind] = ErrorKind(r.Err)
		doc[PropertyError] = r.Err.Error()
	}
	if r.Stopped != "" {
		doc[PropertyStopReason] = r.Stopped
	}
	directives := []directive{{Namespace: namespace, Dimensions: [][]string{{}}, Metrics: rollup}}
	if opts.PerMailboxMetrics {
		directives = append(directives, directive{Namespace: namespace, Dimensions: [][]string{{DimensionMailbox}}, Metrics: all})
	}
	doc["_aws"] = metadata{Timestamp: now.UnixMilli(), CloudWatchMetrics: directives}
	return writeLine(w, doc)
}

// Invocation summarises one Lambda invocation for InvocationEMF.
type Invocation struct {
	RequestID string // Lambda's request id, a log property
	Trigger   string // "schedule" or "manual", a log property
	Results   []connector.Result
	// Duration is the wall time of the invocation's polls.
	Duration time.Duration
	// Deadline is the invocation's deadline; zero when there is none
	// (DeadlineHeadroom is then left out).
	Deadline time.Time
}

// InvocationEMF writes the EMF line summarising one invocation to w: how
// many mailboxes it polled, how many failed and how many were busy, how
// long it took and how close it came to its deadline. The metrics have no
// dimensions.
func InvocationEMF(w io.Writer, namespace string, inv Invocation, now time.Time) error {
	if err := checkNamespace(namespace); err != nil {
		return err
	}
	failed, busy := 0, 0
	for _, r := range inv.Results {
		switch Outcome(r) {
		case OutcomeFailed:
			failed++
		case OutcomeBusy:
			busy++
		}
	}
	values := map[string]float64{
		"MailboxesPolled":    float64(len(inv.Results)),
		"MailboxesFailed":    float64(failed),
		"MailboxesBusy":      float64(busy),
		"InvocationDuration": ms(inv.Duration),
	}
	if !inv.Deadline.IsZero() {
		values["DeadlineHeadroom"] = ms(inv.Deadline.Sub(now))
	}
	doc := map[string]any{}
	var defs []metricDef
	for _, m := range Catalog {
		if m.Scope != ScopeInvocation {
			continue
		}
		v, ok := values[m.Name]
		if !ok {
			continue
		}
		doc[m.Name] = v
		defs = append(defs, metricDef{Name: m.Name, Unit: string(m.Unit)})
	}
	if inv.RequestID != "" {
		doc["RequestId"] = inv.RequestID
	}
	if inv.Trigger != "" {
		doc["Trigger"] = inv.Trigger
	}
	doc["_aws"] = metadata{
		Timestamp:         now.UnixMilli(),
		CloudWatchMetrics: []directive{{Namespace: namespace, Dimensions: [][]string{{}}, Metrics: defs}},
	}
	return writeLine(w, doc)
}

type metadata struct {
	Timestamp         int64       `json:"Timestamp"`
	CloudWatchMetrics []directive `json:"CloudWatchMetrics"`
}

type directive struct {
	Namespace  string      `json:"Namespace"`
	Dimensions [][]string  `json:"Dimensions"`
	Metrics    []metricDef `json:"Metrics"`
}

type metricDef struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

func writeLine(w io.Writer, doc map[string]any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("metrics: write: %w", err)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// checkNamespace applies CloudWatch's namespace rules: 1 to 255 printable
// ASCII characters, not only spaces, and not in the reserved AWS/ space.
func checkNamespace(ns string) error {
	switch {
	case ns == "" || len(ns) > 255:
		return fmt.Errorf("metrics: namespace must be 1 to 255 characters, got %d", len(ns))
	case strings.TrimSpace(ns) == "":
		return errors.New("metrics: namespace is blank")
	case strings.HasPrefix(ns, "AWS/"):
		return fmt.Errorf("metrics: namespace %q: AWS/ is reserved for AWS services", ns)
	case strings.HasPrefix(ns, ":"):
		return fmt.Errorf("metrics: namespace %q must not start with a colon", ns)
	}
	for _, c := range []byte(ns) {
		if c < 0x20 || c > 0x7e {
			return fmt.Errorf("metrics: namespace %q: only printable ASCII is allowed", ns)
		}
	}
	return nil
}

// checkDimensionValue applies CloudWatch's dimension value rules: 1 to
// 1024 ASCII characters, no control characters, not only whitespace.
func checkDimensionValue(v string) error {
	if v == "" || len(v) > 1024 || strings.TrimSpace(v) == "" {
		return errors.New("dimension value must be 1 to 1024 characters, not only whitespace")
	}
	for _, c := range []byte(v) {
		if c < 0x20 || c > 0x7e {
			return errors.New("dimension value must be printable ASCII")
		}
	}
	return nil
}
