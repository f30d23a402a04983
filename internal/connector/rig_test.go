package connector_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/tlsmode"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/archive/fsarchive"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/boltledger"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
	"github.com/popconnector/popconnector/internal/testenv"
)

// popPassword is a known secret: tests search every output for it.
const popPassword = "Sekr1t-pop-pass-9f3c"

// rig is one mailbox on a real Dovecot, an SMTP server, a local archive
// folder and a bbolt ledger file: everything a poll touches.
type rig struct {
	t        *testing.T
	dovecot  *testenv.Dovecot
	smtp     string // address of the SMTP server in use
	sink     *testenv.SMTPSink
	script   *testenv.ScriptedSMTP
	dir      string
	arc      *fsarchive.Archive
	led      *boltledger.Ledger
	clock    *fakeClock
	mailbox  connector.Mailbox
	crash    *connectortest.Crash // when set, every store and connection of a poll goes through it
	inFlight int                  // Settings.DeliveriesInFlight
	window   int                  // Settings.ReplyWindow
	logs     *syncBuffer
	owner    string // lease owner: one per simulated process
}

type rigOptions struct {
	script     *testenv.SMTPScript // nil: a real smtp-sink
	smtpAddr   string              // an SMTP server already running (the shared Postfix); "" = script or sink
	deliverTo  []string
	policy     connector.DeletePolicy
	password   string // POP3 password used by the connector; "" = the right one
	maxPerPoll int
	users      []string // more Dovecot users (same password) beside "sales"
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }
func newClock() *fakeClock                   { return &fakeClock{now: time.Now()} }
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir(), clock: newClock(), logs: &syncBuffer{}, owner: "test-host/1"}
	users := map[string]string{"sales": popPassword}
	for _, u := range o.users {
		users[u] = popPassword
	}
	r.dovecot = testenv.StartDovecot(t, testenv.DovecotOptions{Users: users})
	if o.script != nil {
		r.script = testenv.StartScriptedSMTP(t, *o.script)
		r.smtp = r.script.Addr
	} else if o.smtpAddr != "" {
		r.smtp = o.smtpAddr
	} else {
		r.sink = testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{})
		r.smtp = r.sink.Addr
	}
	if o.deliverTo == nil {
		o.deliverTo = []string{"sales@corp.example"}
	}
	if o.policy == "" {
		o.policy = connector.DeleteAfterDelivery
	}
	pass := o.password
	if pass == "" {
		pass = popPassword
	}
	r.mailbox = connector.Mailbox{
		ID: "sales", Server: "127.0.0.1", DeliverTo: o.deliverTo, AfterDelivery: o.policy,
		MaxMessages: o.maxPerPoll, PollTimeout: 2 * time.Minute,
		Dial: app.DialPOP3(pop3.Options{
			Addr: r.dovecot.TLSAddr, TLS: tlsmode.Implicit,
			TLSConfig: &tls.Config{RootCAs: r.dovecot.CA.Pool}, Timeout: 10 * time.Second,
		}, "sales", func(context.Context) (string, error) { return pass, nil }),
	}
	var err error
	if r.arc, err = fsarchive.New(filepath.Join(r.dir, "archive")); err != nil {
		t.Fatal(err)
	}
	r.openLedger()
	t.Cleanup(func() {
		if r.led != nil {
			r.led.Close()
		}
		if strings.Contains(r.logs.String(), popPassword) {
			t.Errorf("the POP3 password appears in the logs")
		}
	})
	return r
}

func (r *rig) openLedger() {
	r.t.Helper()
	led, err := boltledger.Open(filepath.Join(r.dir, "ledger.db"), boltledger.Options{Timeout: 2 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	r.led = led
}

// restart simulates a new process: the ledger file is closed and
// reopened, and the lease owner (host/PID) changes. The crashed process's
// lease was never released; the new one must not wait for it.
func (r *rig) restart() {
	r.led.Close()
	r.openLedger()
	r.owner = "test-host/2"
}

func (r *rig) connector() *connector.Connector {
	var (
		arc  archive.Archive = r.arc
		led  ledger.Ledger   = r.led
		dial                 = app.DialSMTP(relay.Options{Addr: r.smtp, TLS: tlsmode.None, HeloDomain: "popconn.test", Timeout: 10 * time.Second}, nil)
	)
	if r.crash != nil {
		arc, led, dial = r.crash.Archive(arc), r.crash.Ledger(led), r.crash.Relay(dial)
	}
	routes, dialRoute := singleRoute(r.t, r.smtp, dial)
	return &connector.Connector{
		Archive: arc, Ledger: led, Routes: routes, DialRoute: dialRoute,
		Settings: connector.Settings{
			Postmaster: "postmaster@corp.example", Hostname: "popconn.test",
			RetryInterval: 10 * time.Minute, MaxRetryInterval: 2 * time.Hour, GiveUpAfter: 120 * time.Hour,
			DeliveryTimeout: 10 * time.Second, LeaseOwner: r.owner, MaxTraceHops: config.DefaultLoopLimit, RetrPipelineDepth: config.DefaultPOP3PipelineDepth,
			DeliveriesInFlight: r.inFlight, ReplyWindow: r.window,
		},
		Logger: testLogger(r.logs),
		Now:    r.clock.Now,
	}
}

// defaultDeleteCodes are config's delete_on_codes default, as app passes
// them to the connector.
var defaultDeleteCodes = config.Undeliverable{DeleteOnCodes: config.DefaultDeleteOnCodes}.DeleteCodes()

// singleRoute is one route to addr for every recipient, opened by dial.
func singleRoute(t *testing.T, addr string, dial connector.RelayDialer) (*route.Table, connector.RouteDialer) {
	t.Helper()
	table, dialRoute, err := connectortest.SingleRoute(addr, dial)
	if err != nil {
		t.Fatal(err)
	}
	return table, dialRoute
}

func (r *rig) poll() connector.Result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mb := r.mailbox
	if r.crash != nil {
		mb.Dial = r.crash.Source(mb.ID, mb.Dial)
	}
	return r.connector().Poll(ctx, mb)
}

// seed puts the fixtures into the mailbox and returns their bytes by name.
func (r *rig) seed(names ...string) map[string][]byte {
	r.t.Helper()
	out := map[string][]byte{}
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			r.t.Fatal(err)
		}
		r.dovecot.Deliver(r.t, "sales", raw)
		out[n] = raw
	}
	return out
}

func (r *rig) received() []testenv.Received {
	if r.script != nil {
		return r.script.Messages()
	}
	return r.sink.Messages(r.t)
}

func (r *rig) records() []*ledger.Record {
	r.t.Helper()
	recs, err := r.led.List(context.Background(), "sales")
	if err != nil {
		r.t.Fatal(err)
	}
	return recs
}

func (r *rig) archived(key string) []byte {
	r.t.Helper()
	rc, err := r.arc.Open(context.Background(), key)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// stripAdded removes what the connector adds in front of a relayed
// message: one Received: field (with its folded lines) and, for a message
// that had none, a Message-ID field. It fails the test if the Received
// field is missing.
func stripAdded(t *testing.T, data []byte) (rest []byte, addedID string) {
	t.Helper()
	if !bytes.HasPrefix(data, []byte("Received: ")) {
		t.Fatalf("relayed message does not start with our Received: field: %q", firstLine(data))
	}
	i := bytes.Index(data, []byte("\r\n"))
	for i >= 0 && i+2 < len(data) && (data[i+2] == ' ' || data[i+2] == '\t') {
		j := bytes.Index(data[i+2:], []byte("\r\n"))
		i = i + 2 + j
	}
	rest = data[i+2:]
	if bytes.HasPrefix(rest, []byte("Message-ID: <popconn.")) {
		k := bytes.Index(rest, []byte("\r\n"))
		addedID = string(rest[len("Message-ID: <") : k-1])
		rest = rest[k+2:]
	}
	return rest, addedID
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// countByDigest counts relayed copies per original message digest.
func countByDigest(t *testing.T, got []testenv.Received) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, m := range got {
		rest, _ := stripAdded(t, m.Data)
		n[digest(rest)]++
	}
	return n
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// noCA trusts only the system roots, so the test CA's certificate fails.
var noCA = &tls.Config{}

// dialAddr dials addr over implicit TLS with the right password; tc nil
// trusts the test CA.
func dialAddr(r *rig, addr string, tc *tls.Config) connector.SourceDialer {
	if tc == nil {
		tc = &tls.Config{RootCAs: r.dovecot.CA.Pool}
	}
	return app.DialPOP3(pop3.Options{Addr: addr, TLS: tlsmode.Implicit, TLSConfig: tc, Timeout: 5 * time.Second},
		"sales", func(context.Context) (string, error) { return popPassword, nil })
}
