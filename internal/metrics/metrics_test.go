package metrics

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/testenv"
)

const ns = "PopConnector"

var now = time.Date(2026, 3, 4, 5, 6, 7, 8e6, time.UTC)

// emf is one parsed EMF line, checked against the specification by parseEMF.
type emf struct {
	root       map[string]any
	timestamp  int64
	directives []emfDirective
}

type emfDirective struct {
	namespace  string
	dimensions [][]string
	metrics    map[string]string // name -> unit
}

// parseEMF decodes one line and checks the structure the EMF specification
// requires; a line that fails here is one CloudWatch Logs would not turn
// into metrics.
func parseEMF(t *testing.T, line []byte) emf {
	t.Helper()
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("want exactly one newline-terminated line, got %q", line)
	}
	if len(line) > 256*1024 {
		t.Fatalf("line of %d bytes exceeds the CloudWatch Logs event limit", len(line))
	}
	var root map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, line)
	}
	var e emf
	e.root = root
	aws, ok := root["_aws"].(map[string]any)
	if !ok {
		t.Fatalf("_aws missing or not an object: %s", line)
	}
	onlyKeys(t, "_aws", aws, "Timestamp", "CloudWatchMetrics")
	ts, ok := aws["Timestamp"].(json.Number)
	if !ok {
		t.Fatalf("_aws.Timestamp is not a number: %v", aws["Timestamp"])
	}
	e.timestamp, _ = ts.Int64()
	cwm, ok := aws["CloudWatchMetrics"].([]any)
	if !ok || len(cwm) == 0 {
		t.Fatalf("_aws.CloudWatchMetrics is not a non-empty array: %v", aws["CloudWatchMetrics"])
	}
	for i, d := range cwm {
		dm, ok := d.(map[string]any)
		if !ok {
			t.Fatalf("directive %d is not an object", i)
		}
		onlyKeys(t, "directive", dm, "Namespace", "Dimensions", "Metrics")
		var dir emfDirective
		dir.namespace, ok = dm["Namespace"].(string)
		if !ok || dir.namespace == "" {
			t.Fatalf("directive %d: Namespace missing", i)
		}
		dims, ok := dm["Dimensions"].([]any)
		if !ok {
			t.Fatalf("directive %d: Dimensions is not an array", i)
		}
		for _, set := range dims {
			keys, ok := set.([]any)
			if !ok {
				t.Fatalf("directive %d: a dimension set is not an array", i)
			}
			if len(keys) > 30 {
				t.Fatalf("directive %d: dimension set of %d keys, at most 30 allowed", i, len(keys))
			}
			var ks []string
			for _, k := range keys {
				name, ok := k.(string)
				if !ok {
					t.Fatalf("directive %d: dimension key %v is not a string", i, k)
				}
				v, ok := root[name].(string)
				if !ok || v == "" {
					t.Fatalf("directive %d: dimension %q must be a non-empty top-level string, got %#v", i, name, root[name])
				}
				ks = append(ks, name)
			}
			dir.dimensions = append(dir.dimensions, ks)
		}
		ms, ok := dm["Metrics"].([]any)
		if !ok || len(ms) == 0 {
			t.Fatalf("directive %d: Metrics is not a non-empty array", i)
		}
		if len(ms) > 100 {
			t.Fatalf("directive %d: %d metrics, at most 100 allowed", i, len(ms))
		}
		dir.metrics = map[string]string{}
		for _, m := range ms {
			mm, ok := m.(map[string]any)
			if !ok {
				t.Fatalf("directive %d: metric definition is not an object", i)
			}
			onlyKeys(t, "metric definition", mm, "Name", "Unit", "StorageResolution")
			name, _ := mm["Name"].(string)
			unit, _ := mm["Unit"].(string)
			if name == "" {
				t.Fatalf("directive %d: metric without a Name", i)
			}
			if !slices.Contains(StandardUnits, unit) {
				t.Fatalf("metric %s: unit %q is not a CloudWatch StandardUnit", name, unit)
			}
			switch v := root[name].(type) {
			case json.Number:
			case []any:
				if len(v) > 100 {
					t.Fatalf("metric %s: %d values, at most 100 allowed", name, len(v))
				}
			default:
				t.Fatalf("metric %s: top-level value must be a number, got %#v", name, root[name])
			}
			dir.metrics[name] = unit
		}
		e.directives = append(e.directives, dir)
	}
	return e
}

func onlyKeys(t *testing.T, what string, m map[string]any, allowed ...string) {
	t.Helper()
	for k := range m {
		if !slices.Contains(allowed, k) {
			t.Fatalf("%s has member %q, which the EMF specification does not define", what, k)
		}
	}
}

func (e emf) num(t *testing.T, name string) float64 {
	t.Helper()
	n, ok := e.root[name].(json.Number)
	if !ok {
		t.Fatalf("%s: not a number: %#v", name, e.root[name])
	}
	f, err := n.Float64()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// directive returns the directive whose dimension sets equal dims.
func (e emf) directive(t *testing.T, dims ...[]string) emfDirective {
	t.Helper()
	for _, d := range e.directives {
		if slices.EqualFunc(d.dimensions, dims, slices.Equal) {
			return d
		}
	}
	t.Fatalf("no directive with dimensions %v in %v", dims, e.directives)
	return emfDirective{}
}

// realTLSError dials a loopback TLS server whose certificate comes from a
// CA the client does not trust.
func realTLSError(t *testing.T) error {
	t.Helper()
	ca := testenv.NewCA(t)
	_, _, cert := ca.Issue(t, "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*tls.Conn).Handshake()
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"})
	if err == nil {
		conn.Close()
		t.Fatal("TLS dial to an untrusted certificate succeeded")
	}
	return fmt.Errorf("mailbox sales: pop3: dial: %w", err)
}

// realRefused dials a loopback port nobody listens on.
func realRefused(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Skip("the freed loopback port was taken again; cannot stage a refusal")
	}
	return fmt.Errorf("mailbox sales: %w", err)
}

func TestErrorKind(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"lease held", fmt.Errorf("mailbox sales: %w", ledger.ErrLeaseHeld), KindLease},
		{"PASS rejected", fmt.Errorf("mailbox sales: %w", &pop3.Error{Command: "PASS ***", Response: "-ERR [AUTH] invalid login"}), KindAuth},
		{"USER rejected without code", &pop3.Error{Command: "USER", Response: "-ERR no such user"}, KindAuth},
		{"mailbox in use is not auth", &pop3.Error{Command: "PASS ***", Response: "-ERR [IN-USE] locked", Code: "IN-USE"}, KindOther},
		{"untrusted certificate", realTLSError(t), KindTLS},
		{"hostname mismatch", fmt.Errorf("x: %w", x509.HostnameError{Host: "pop.example.net", Certificate: &x509.Certificate{}}), KindTLS},
		{"plaintext port", fmt.Errorf("x: %w", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), KindTLS},
		{"mechanism not offered", fmt.Errorf("x: %w", pop3.ErrMechanismNotOffered), KindAuth},
		{"token endpoint refused the client", fmt.Errorf("x: %w", &oauth.Error{Status: 401, Code: "invalid_client"}), KindAuth},
		{"token endpoint unreachable", fmt.Errorf("x: %w", &oauth.Error{Temporary: true, Err: syscall.ECONNREFUSED}), KindConnect},
		{"no STLS", fmt.Errorf("x: %w", pop3.ErrNoSTLS), KindTLS},
		{"plaintext login refused", fmt.Errorf("x: %w", pop3.ErrPlaintextRefused), KindTLS},
		{"connection refused", realRefused(t), KindConnect},
		{"DNS", fmt.Errorf("x: %w", &net.DNSError{Err: "no such host", Name: "pop.example.net", IsNotFound: true}), KindConnect},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), KindConnect},
		{"server hung up", fmt.Errorf("pop3: RETR: %w", io.ErrUnexpectedEOF), KindConnect},
		{"poll deadline", fmt.Errorf("mailbox sales: %w", context.DeadlineExceeded), KindOther},
		{"protocol", fmt.Errorf("x: %w", pop3.ErrProtocol), KindOther},
		{"an unknown error", errors.New("connectortest: the process crashed"), KindOther},
		{"unknown", errors.New("something else"), KindOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorKind(tt.err); got != tt.want {
				t.Errorf("ErrorKind(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// countingWriter records each Write call.
type countingWriter struct{ writes [][]byte }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestPollEMF(t *testing.T) {
	base := connector.Result{
		Mailbox: "sales", OnServer: 7, Fetched: 3, Bytes: 150 << 20, Delivered: 2, Deferred: 1,
		Rejected: 0, GaveUp: 0, Deleted: 2, NotDue: 1,
		OldestUndelivered: 90 * time.Minute, Duration: 2500 * time.Millisecond,
	}
	with := func(f func(*connector.Result)) connector.Result { r := base; f(&r); return r }
	tests := []struct {
		name        string
		r           connector.Result
		want        map[string]float64 // values to check
		wantOutcome string
		wantKind    string
		wantProps   map[string]string
	}{
		{
			name: "clean poll",
			r:    base,
			want: map[string]float64{
				"MessagesOnServer": 7, "MessagesFetched": 3, "BytesFetched": 150 << 20,
				"MessagesDelivered": 2, "MessagesDeferred": 1, "MessagesRejected": 0, "MessagesGaveUp": 0,
				"MessagesDeleted": 2, "PollDuration": 2500, "OldestUndeliveredAge": 5400,
				"PollStoppedEarly": 0, "MailboxErrors": 0, "LeaseContention": 0,
			},
			wantOutcome: OutcomeOK,
		},
		{
			name:        "rejected and gave up",
			r:           with(func(r *connector.Result) { r.Rejected, r.GaveUp = 2, 1 }),
			want:        map[string]float64{"MessagesRejected": 2, "MessagesGaveUp": 1, "MailboxErrors": 0},
			wantOutcome: OutcomeOK,
		},
		{
			name: "auth failure",
			r: with(func(r *connector.Result) {
				*r = connector.Result{Mailbox: "sales", Duration: 40 * time.Millisecond,
					Err: fmt.Errorf("mailbox sales: %w", &pop3.Error{Command: "PASS ***", Response: "-ERR [AUTH] bad"})}
			}),
			want:        map[string]float64{"MailboxErrors": 1, "LeaseContention": 0, "MessagesFetched": 0, "PollDuration": 40},
			wantOutcome: OutcomeFailed,
			wantKind:    KindAuth,
			wantProps:   map[string]string{"Error": "mailbox sales: pop3: PASS ***: -ERR [AUTH] bad"},
		},
		{
			// Busy is not a failure: no MailboxErrors, no error properties.
			name: "lease held",
			r: connector.Result{Mailbox: "sales", Duration: 5 * time.Millisecond,
				Err: fmt.Errorf("mailbox sales: %w", ledger.ErrLeaseHeld)},
			want:        map[string]float64{"MailboxErrors": 0, "LeaseContention": 1},
			wantOutcome: OutcomeBusy,
		},
		{
			name:        "stopped at the deadline",
			r:           with(func(r *connector.Result) { r.Stopped = "deadline" }),
			want:        map[string]float64{"PollStoppedEarly": 1, "MailboxErrors": 0},
			wantOutcome: OutcomeStopped,
			wantProps:   map[string]string{"StopReason": "deadline"},
		},
		{
			name: "failure after an early stop is a failure",
			r: with(func(r *connector.Result) {
				r.Stopped = "deadline"
				r.Err = fmt.Errorf("x: %w", io.ErrUnexpectedEOF)
			}),
			want:        map[string]float64{"PollStoppedEarly": 1, "MailboxErrors": 1},
			wantOutcome: OutcomeFailed,
			wantKind:    KindConnect,
		},
		{
			name:        "negative age is clamped",
			r:           connector.Result{Mailbox: "a.b-c_d", OldestUndelivered: -time.Second},
			want:        map[string]float64{"OldestUndeliveredAge": 0},
			wantOutcome: OutcomeOK,
		},
	}
	for _, perMailbox := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/per-mailbox=%v", tt.name, perMailbox), func(t *testing.T) {
				var w countingWriter
				if err := PollEMF(&w, ns, tt.r, now, PollOptions{PerMailboxMetrics: perMailbox}); err != nil {
					t.Fatal(err)
				}
				if len(w.writes) != 1 {
					t.Fatalf("%d Write calls, want 1 (a line must not be split)", len(w.writes))
				}
				e := parseEMF(t, w.writes[0])
				if e.timestamp != now.UnixMilli() {
					t.Errorf("Timestamp = %d, want %d", e.timestamp, now.UnixMilli())
				}
				if got := e.root[DimensionMailbox]; got != tt.r.Mailbox {
					t.Errorf("Mailbox = %v, want %q", got, tt.r.Mailbox)
				}
				if got := e.root[PropertyOutcome]; got != tt.wantOutcome {
					t.Errorf("Outcome = %v, want %q", got, tt.wantOutcome)
				}
				if got := Outcome(tt.r); got != tt.wantOutcome {
					t.Errorf("Outcome() = %q, want %q", got, tt.wantOutcome)
				}
				rollup := e.directive(t, []string{})
				var perMB emfDirective
				if perMailbox {
					perMB = e.directive(t, []string{DimensionMailbox})
				}
				if want := map[bool]int{false: 1, true: 2}[perMailbox]; len(e.directives) != want {
					t.Errorf("%d directives, want %d", len(e.directives), want)
				}
				for _, m := range Catalog {
					if m.Scope != ScopePoll {
						if _, ok := e.root[m.Name]; ok {
							t.Errorf("invocation metric %s in a poll line", m.Name)
						}
						continue
					}
					// Every value is on the line, declared or not: Logs
					// Insights and Contributor Insights read it there.
					if _, ok := e.root[m.Name].(json.Number); !ok {
						t.Errorf("%s: no numeric property", m.Name)
					}
					if u, ok := perMB.metrics[m.Name]; ok != perMailbox || (ok && u != string(m.Unit)) {
						t.Errorf("%s: declared per mailbox = %v with unit %q, want %v with %q", m.Name, ok, u, perMailbox, m.Unit)
					}
					if _, ok := rollup.metrics[m.Name]; ok != m.Rollup {
						t.Errorf("%s: in rollup = %v, want %v", m.Name, ok, m.Rollup)
					}
				}
				for name, want := range tt.want {
					if got := e.num(t, name); got != want {
						t.Errorf("%s = %v, want %v", name, got, want)
					}
				}
				gotKind, _ := e.root[PropertyErrorKind].(string)
				if gotKind != tt.wantKind {
					t.Errorf("ErrorKind = %q, want %q", gotKind, tt.wantKind)
				}
				if _, ok := e.root[PropertyError]; ok != (tt.wantKind != "") {
					t.Errorf("Error property present = %v, want %v", ok, tt.wantKind != "")
				}
				for k, want := range tt.wantProps {
					if got, _ := e.root[k].(string); got != want {
						t.Errorf("%s = %q, want %q", k, got, want)
					}
				}
			})
		}
	}
}

// TestPerMailboxCount: the figures the README's cost table and the
// template's PerMailboxMetrics description use.
func TestPerMailboxCount(t *testing.T) {
	var w countingWriter
	if err := PollEMF(&w, ns, connector.Result{Mailbox: "sales"}, now, PollOptions{PerMailboxMetrics: true}); err != nil {
		t.Fatal(err)
	}
	e := parseEMF(t, w.writes[0])
	d := e.directive(t, []string{DimensionMailbox})
	if len(d.metrics) != PerMailboxCount || PerMailboxCount != 14 {
		t.Errorf("%d metrics per mailbox, PerMailboxCount %d; the README and template.yaml say 14", len(d.metrics), PerMailboxCount)
	}
	w = countingWriter{}
	if err := InvocationEMF(&w, ns, Invocation{Deadline: now.Add(time.Minute)}, now); err != nil {
		t.Fatal(err)
	}
	n := len(e.directive(t, []string{}).metrics) + len(parseEMF(t, w.writes[0]).directive(t, []string{}).metrics)
	if n != AccountWideCount || AccountWideCount != 17 {
		t.Errorf("%d metrics without dimensions, AccountWideCount %d; the README and template.yaml say 17", n, AccountWideCount)
	}
}

func TestPollEMFRefusesWhatCloudWatchWouldDrop(t *testing.T) {
	tests := []struct {
		name       string
		namespace  string
		mailbox    string
		perMailbox bool // the mailbox is a dimension value only then
	}{
		{"empty namespace", "", "sales", false},
		{"reserved namespace", "AWS/Lambda", "sales", false},
		{"blank namespace", "   ", "sales", false},
		{"control character in namespace", "Pop\nConnector", "sales", false},
		{"namespace too long", strings.Repeat("n", 256), "sales", false},
		{"empty mailbox", ns, "", false},
		{"non-ASCII mailbox as a dimension", ns, "ventes-é", true},
		{"mailbox too long for a dimension", ns, strings.Repeat("m", 1025), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := PollEMF(&buf, tt.namespace, connector.Result{Mailbox: tt.mailbox}, now, PollOptions{PerMailboxMetrics: tt.perMailbox})
			if err == nil {
				t.Fatal("no error")
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %q despite the error", buf.String())
			}
		})
	}
	// Without the dimension, any mailbox id is only a JSON string.
	var buf bytes.Buffer
	if err := PollEMF(&buf, ns, connector.Result{Mailbox: "ventes-é"}, now, PollOptions{}); err != nil {
		t.Errorf("non-ASCII mailbox without per-mailbox metrics: %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("stdout closed") }

func TestWriteErrorIsReturned(t *testing.T) {
	err := PollEMF(failingWriter{}, ns, connector.Result{Mailbox: "sales"}, now, PollOptions{})
	if err == nil || !strings.Contains(err.Error(), "stdout closed") {
		t.Fatalf("err = %v, want the writer's error", err)
	}
}

func TestInvocationEMF(t *testing.T) {
	results := []connector.Result{
		{Mailbox: "a"},
		{Mailbox: "b", Err: fmt.Errorf("x: %w", ledger.ErrLeaseHeld)},
		{Mailbox: "c", Err: errors.New("boom")},
	}
	tests := []struct {
		name        string
		inv         Invocation
		want        map[string]float64
		wantMissing []string
	}{
		{
			name: "with deadline",
			inv:  Invocation{RequestID: "req-1", Trigger: "schedule", Results: results, Duration: 12 * time.Second, Deadline: now.Add(30 * time.Second)},
			want: map[string]float64{"MailboxesPolled": 3, "MailboxesFailed": 1, "MailboxesBusy": 1, "InvocationDuration": 12000, "DeadlineHeadroom": 30000},
		},
		{
			name:        "without deadline",
			inv:         Invocation{Trigger: "manual"},
			want:        map[string]float64{"MailboxesPolled": 0, "MailboxesFailed": 0, "MailboxesBusy": 0, "InvocationDuration": 0},
			wantMissing: []string{"DeadlineHeadroom"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w countingWriter
			if err := InvocationEMF(&w, ns, tt.inv, now); err != nil {
				t.Fatal(err)
			}
			if len(w.writes) != 1 {
				t.Fatalf("%d Write calls, want 1", len(w.writes))
			}
			e := parseEMF(t, w.writes[0])
			d := e.directive(t, []string{})
			for name, want := range tt.want {
				if got := e.num(t, name); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
				if _, ok := d.metrics[name]; !ok {
					t.Errorf("%s not listed in the directive", name)
				}
			}
			for _, name := range tt.wantMissing {
				if _, ok := e.root[name]; ok {
					t.Errorf("%s present, want absent", name)
				}
				if _, ok := d.metrics[name]; ok {
					t.Errorf("%s listed but has no value", name)
				}
			}
			if got, _ := e.root["Trigger"].(string); got != tt.inv.Trigger {
				t.Errorf("Trigger = %q, want %q", got, tt.inv.Trigger)
			}
		})
	}
}

func TestCatalog(t *testing.T) {
	seen := map[string]bool{}
	perScope := map[Scope]int{}
	for _, m := range Catalog {
		if seen[m.Name] {
			t.Errorf("%s listed twice", m.Name)
		}
		seen[m.Name] = true
		perScope[m.Scope]++
		if !slices.Contains(StandardUnits, string(m.Unit)) {
			t.Errorf("%s: unit %q is not a StandardUnit", m.Name, m.Unit)
		}
		if m.Rollup && m.Scope != ScopePoll {
			t.Errorf("%s: only poll metrics have a rollup", m.Name)
		}
		if m.Help == "" {
			t.Errorf("%s: no Help", m.Name)
		}
		if got, ok := Lookup(m.Name); !ok || got.Name != m.Name {
			t.Errorf("Lookup(%s) = %v, %v", m.Name, got, ok)
		}
	}
	for s, n := range perScope {
		if n > 100 {
			t.Errorf("scope %s has %d metrics; one EMF directive holds at most 100", s, n)
		}
	}
	if !slices.Equal(Names, func() []string {
		var n []string
		for _, m := range Catalog {
			n = append(n, m.Name)
		}
		return n
	}()) {
		t.Errorf("Names %v does not follow Catalog", Names)
	}
	for _, required := range []string{"MessagesFetched", "MessagesDelivered", "MessagesDeferred", "MessagesRejected",
		"MessagesDeleted", "BytesFetched", "PollDuration", "OldestUndeliveredAge", "MailboxErrors", "LeaseContention"} {
		if !seen[required] {
			t.Errorf("metric %s missing from the catalog", required)
		}
	}
}
