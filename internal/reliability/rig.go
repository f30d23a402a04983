package reliability

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/tlsmode"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/archive/fsarchive"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/pop3/pop3test"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
)

// Passwords the suite uses; the security scenario searches every output
// for them, and the other scenarios' logs are searched too.
const (
	popUser     = "sales"
	popPassword = "Rel-pop-S3cret-7d1e"
	smtpUser    = "relay@corp.example"
	smtpSecret  = "Rel-smtp-S3cret-90ab"
)

// Clock is a settable clock for the connector's retry schedule and the
// ledger's leases.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock starts at the real time.
func NewClock() *Clock { return &Clock{now: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// SyncBuffer is a goroutine-safe log buffer.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

// Rig is one mailbox polled in-process: a POP3 source (Dovecot or a
// pop3test fault server), an SMTP side (ScriptedSMTP or a raw fault
// server), an fs archive and a ledger from the LedgerFactory, all sharing
// one Clock.
type Rig struct {
	T          T
	Dir        string
	Clock      *Clock
	Archive    *fsarchive.Archive
	ArchiveDir string
	Ledger     ledger.Ledger
	Logs       *SyncBuffer
	Logger     *slog.Logger
	Recipients []string
	Messages   []Message
	Runs       int
	Results    []connector.Result

	// Dovecot is the POP3 server when the rig uses a real one.
	Dovecot *testenv.Dovecot
	// Boxes are the pop3test mailboxes the rig served, oldest first; the
	// last one is live.
	Boxes []*scriptedBox

	popAddr atomic.Value // string
	PopOpts pop3.Options // Addr is taken from popAddr at each dial
	PopPass string
	SMTP    *testenv.ScriptedSMTP
	// Exact is the SMTP side when RigOptions.ExactSMTP chose it.
	Exact    *ExactSMTP
	smtpAddr atomic.Value // string
	// RelayOpts are the SMTP client options; Addr comes from SetSMTPAddr.
	RelayOpts   relay.Options
	RelayPass   func(context.Context) (string, error)
	Settings    connector.Settings
	MailboxEdit func(*connector.Mailbox)
	// FreshRelay sends each message over its own SMTP connection, so that
	// one message's failure cannot leave the connection unusable for the
	// next (the hostile corpus, against a server that does not resync
	// after an over-long line).
	FreshRelay bool
	// Snapshots are ledger records saved by Snapshot, for the checker.
	Snapshots []*ledger.Record
	// Refusal is the poll error that explains unrecorded messages.
	Refusal error
	// LedgerUnreadable marks a ledger the scenario broke on purpose.
	LedgerUnreadable bool
	// Normalised is Observation.Normalised for sources serving bare LF.
	Normalised map[string]string
	// Served is what SeedDovecot's raw RETR found, by UIDL.
	Served map[string]Served
}

type scriptedBox struct {
	mb  *pop3test.Mailbox
	srv *pop3test.Server
	ids []string // message IDs by index into mb.Messages
}

// RigOptions choose the rig's servers.
type RigOptions struct {
	// Dovecot uses a real Dovecot over implicit TLS; otherwise a pop3test
	// Mailbox over plaintext.
	Dovecot bool
	// Script, when non-nil, starts a ScriptedSMTP as the SMTP side.
	Script *testenv.SMTPScript
	// ExactSMTP, without Script, starts an ExactSMTP as the SMTP side.
	ExactSMTP bool
	// Recipients default to sales@corp.example.
	Recipients []string
}

// NewRig builds a rig with nothing seeded.
func NewRig(t T, o *Options, ro RigOptions) *Rig {
	t.Helper()
	r := &Rig{T: t, Dir: t.TempDir(), Clock: NewClock(), Logs: &SyncBuffer{}, PopPass: popPassword}
	r.Logger = slog.New(slog.NewJSONHandler(r.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.Recipients = ro.Recipients
	if r.Recipients == nil {
		r.Recipients = []string{"sales@corp.example"}
	}
	if ro.Dovecot {
		r.Dovecot = testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{popUser: popPassword}})
		r.popAddr.Store(r.Dovecot.TLSAddr)
		r.PopOpts = pop3.Options{TLS: tlsmode.Implicit, TLSConfig: &tls.Config{RootCAs: r.Dovecot.CA.Pool}, Timeout: 10 * time.Second}
	} else {
		r.popAddr.Store("")
		r.PopOpts = pop3.Options{TLS: tlsmode.None, AllowPlaintextAuth: true, Timeout: 3 * time.Second}
	}
	if ro.Script != nil {
		r.SMTP = testenv.StartScriptedSMTP(t, *ro.Script)
		r.smtpAddr.Store(r.SMTP.Addr)
	} else if ro.ExactSMTP {
		r.Exact = StartExactSMTP(t)
		r.smtpAddr.Store(r.Exact.Addr)
	} else {
		r.smtpAddr.Store("")
	}
	r.RelayOpts = relay.Options{TLS: tlsmode.None, HeloDomain: "popconn.test", Timeout: 5 * time.Second}
	r.Settings = connector.Settings{
		Postmaster: "postmaster@corp.example", Hostname: "popconn.test",
		RetryInterval: time.Minute, MaxRetryInterval: 4 * time.Minute, GiveUpAfter: 120 * time.Hour,
		DeliveryTimeout: 5 * time.Second, LeaseOwner: "reliability/1", MaxTraceHops: config.DefaultLoopLimit, RetrPipelineDepth: config.DefaultPOP3PipelineDepth,
	}
	r.ArchiveDir = filepath.Join(r.Dir, "archive")
	var err error
	if r.Archive, err = fsarchive.New(r.ArchiveDir); err != nil {
		t.Fatal(err)
	}
	r.Ledger = o.Ledger.Open(t, r.Dir, r.Clock.Now)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("connector log tail:\n%s", tail(r.Logs.String(), 40))
		}
		for _, s := range []string{popPassword, smtpSecret} {
			if strings.Contains(r.Logs.String(), s) {
				t.Errorf("a password appears in the connector log")
			}
		}
	})
	return r
}

// SetSMTPAddr points the relay at addr for the following dials.
func (r *Rig) SetSMTPAddr(addr string) { r.smtpAddr.Store(addr) }

// SetPOPAddr points the POP3 dialer at addr for the following dials.
func (r *Rig) SetPOPAddr(addr string) { r.popAddr.Store(addr) }

// SeedDovecot delivers msgs (named by ids) to the Dovecot mailbox and
// records what Dovecot serves for each, read with an independent raw
// RETR.
func (r *Rig) SeedDovecot(ids []string, msgs [][]byte) {
	r.T.Helper()
	uidls := make([]string, len(msgs))
	for i, m := range msgs {
		uidls[i] = r.Dovecot.Deliver(r.T, popUser, m)
	}
	served := RawServed(r.T, r.Dovecot.TLSAddr, &tls.Config{RootCAs: r.Dovecot.CA.Pool, ServerName: "127.0.0.1"}, popUser, popPassword)
	if r.Served == nil {
		r.Served = map[string]Served{}
	}
	for i, u := range uidls {
		s, ok := served[u]
		if !ok {
			r.T.Fatalf("raw RETR: Dovecot does not list %s (%s)", u, ids[i])
		}
		r.Served[u] = s
		r.Messages = append(r.Messages, Message{ID: ids[i], UIDL: u, Digest: s.Digest, Size: s.Size})
	}
}

// ServePOP3 starts a pop3test Mailbox over msgs (named by ids) and makes it
// the live source; fault, if set, is its Fault hook. Its UIDLs are
// pop3test.UID(i), so a second ServePOP3 reuses the first one's UIDLs.
func (r *Rig) ServePOP3(ids []string, msgs [][]byte, fault func(s *pop3test.Session, cmd string) bool) *pop3test.Mailbox {
	r.T.Helper()
	mb := &pop3test.Mailbox{User: popUser, Pass: r.PopPass, Messages: msgs, Fault: fault}
	srv := pop3test.NewServer(r.T, mb.Serve)
	r.Boxes = append(r.Boxes, &scriptedBox{mb: mb, srv: srv, ids: ids})
	r.popAddr.Store(srv.Addr)
	for i, m := range msgs {
		served := m
		if len(m) > 0 && !bytes.HasSuffix(m, []byte("\r\n")) {
			served = append(append([]byte(nil), m...), '\r', '\n') // DotStuff completes the last line
		}
		r.Messages = append(r.Messages, Message{ID: ids[i], UIDL: pop3test.UID(i), Digest: digestOf(served), Size: int64(len(served))})
		if form := SMTPForm(served); !bytes.Equal(form, served) {
			if r.Normalised == nil {
				r.Normalised = map[string]string{}
			}
			r.Normalised[digestOf(form)] = ids[i]
		}
	}
	return mb
}

// Dialer is the rig's POP3 dialer.
func (r *Rig) Dialer() connector.SourceDialer {
	return func(ctx context.Context) (connector.Source, error) {
		o := r.PopOpts
		o.Addr = r.popAddr.Load().(string)
		pass := r.PopPass
		return app.DialPOP3(o, popUser, func(context.Context) (string, error) { return pass, nil })(ctx)
	}
}

// Mailbox is the connector's view of the rig's mailbox.
func (r *Rig) Mailbox() connector.Mailbox {
	mb := connector.Mailbox{
		ID: "sales", Server: "pop.isp.example", DeliverTo: r.Recipients,
		AfterDelivery: connector.DeleteAfterDelivery, PollTimeout: 2 * time.Minute, Dial: r.Dialer(),
	}
	if r.MailboxEdit != nil {
		r.MailboxEdit(&mb)
	}
	return mb
}

// Connector returns a connector over the rig's stores; owner names its
// leases ("" = the rig's default).
func (r *Rig) Connector(owner string) *connector.Connector {
	s := r.Settings
	if owner != "" {
		s.LeaseOwner = owner
	}
	// One route to the rig's SMTP server, whose address may change
	// between polls: the dialer reads it at each connection.
	routes, dial, err := connectortest.SingleRoute("127.0.0.1:25", func(ctx context.Context) (connector.Relay, error) {
		if r.FreshRelay {
			return freshRelay{r.dialRelay}, nil
		}
		return r.dialRelay(ctx)
	})
	if err != nil {
		panic(err) // a constant address
	}
	return &connector.Connector{
		Archive: r.Archive, Ledger: r.Ledger, Routes: routes, DialRoute: dial,
		Settings: s,
		Logger:   r.Logger,
		Now:      r.Clock.Now,
	}
}

func (r *Rig) dialRelay(ctx context.Context) (connector.Relay, error) {
	o := r.RelayOpts
	o.Addr = r.smtpAddr.Load().(string)
	return app.DialSMTP(o, r.RelayPass)(ctx)
}

// freshRelay dials a new SMTP connection for every message.
type freshRelay struct {
	dial func(context.Context) (connector.Relay, error)
}

func (f freshRelay) Send(ctx context.Context, env relay.Envelope, body io.Reader) ([]relay.Outcome, error) {
	c, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	out, err := c.Send(ctx, env, body)
	if err != nil {
		c.Close()
		return out, err
	}
	if qerr := c.Quit(); qerr != nil {
		c.Close()
	}
	return out, nil
}

func (freshRelay) Quit() error  { return nil }
func (freshRelay) Close() error { return nil }

// Poll runs one poll with the default connector.
func (r *Rig) Poll() connector.Result {
	return r.PollWith(r.Connector(""))
}

// PollWith runs one poll with c and records it.
func (r *Rig) PollWith(c *connector.Connector) connector.Result {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res := c.Poll(ctx, r.Mailbox())
	r.Runs++
	r.Results = append(r.Results, res)
	return res
}

// PollUntilDone polls, advancing the clock past the retry schedule between
// polls, until every message is delivered and gone from the server, or
// max polls ran. It returns the last result.
func (r *Rig) PollUntilDone(max int) connector.Result {
	var res connector.Result
	for i := 0; i < max; i++ {
		res = r.Poll()
		if r.Done() {
			return res
		}
		r.Clock.Advance(5 * time.Minute)
	}
	return res
}

// Done reports whether the server is empty and the ledger holds every
// message as settled (delivered, or set aside) and deleted.
func (r *Rig) Done() bool {
	if len(r.OnServer()) > 0 {
		return false
	}
	recs, err := r.Ledger.List(context.Background(), "sales")
	if err != nil {
		return false
	}
	for _, rec := range recs {
		if !rec.Settled() || !rec.Deleted() {
			return false
		}
	}
	return true
}

// OnServer returns the IDs of the messages still on the POP3 server.
func (r *Rig) OnServer() map[string]bool {
	out := map[string]bool{}
	if r.Dovecot != nil {
		byUIDL := map[string]string{}
		for _, m := range r.Messages {
			byUIDL[m.UIDL] = m.ID
		}
		for _, f := range r.Dovecot.Files(r.T, popUser) {
			if id, ok := byUIDL[f.Name]; ok {
				out[id] = true
			} else {
				out["unknown:"+f.Name] = true
			}
		}
		return out
	}
	for _, b := range r.Boxes {
		for _, rem := range b.mb.Remaining() {
			for i, m := range b.mb.Messages {
				if bytes.Equal(m, rem) {
					out[b.ids[i]] = true
				}
			}
		}
	}
	return out
}

// Snapshot saves the ledger's current records for the checker (before a
// scenario replaces them).
func (r *Rig) Snapshot() {
	recs, err := r.Ledger.List(context.Background(), "sales")
	if err != nil {
		r.T.Fatalf("ledger list: %v", err)
	}
	r.Snapshots = append(r.Snapshots, recs...)
}

// Observe collects the end state for Check.
func (r *Rig) Observe() Observation {
	o := Observation{
		Messages: r.Messages, Recipients: r.Recipients, OnServer: r.OnServer(),
		Archive: r.Archive, Refusal: r.Refusal, LedgerUnreadable: r.LedgerUnreadable,
		Normalised: r.Normalised,
	}
	if r.SMTP != nil {
		o.Received = r.SMTP.Messages()
	}
	if r.Exact != nil {
		o.Received = r.Exact.Messages()
	}
	o.NoticeTo = r.Settings.Notify.To
	o.Records = append(o.Records, r.Snapshots...)
	if !r.LedgerUnreadable {
		recs, err := r.Ledger.List(context.Background(), "sales")
		if err != nil {
			r.T.Errorf("ledger list for the check: %v", err)
		}
		o.Records = append(o.Records, recs...)
	}
	return o
}

// Row checks the rig and returns its report row.
func (r *Rig) Row(name string, allowedDups int) Row {
	tally := Check(context.Background(), r.Observe())
	return Row{Scenario: name, Runs: r.Runs, Tally: tally, AllowedDups: allowedDups}
}

// SeqMessages generates n messages numbered from first, with their IDs.
func SeqMessages(first, n int) (ids []string, msgs [][]byte) {
	for i := first; i < first+n; i++ {
		ids = append(ids, fmt.Sprintf("seq-%d", i))
		msgs = append(msgs, GenMessage(i))
	}
	return ids, msgs
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 400 {
			lines[i] = l[:400] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// lastErr returns the last poll error, or nil.
func (r *Rig) lastErr() error {
	if len(r.Results) == 0 {
		return nil
	}
	return r.Results[len(r.Results)-1].Err
}

// mustExist fails unless path exists.
func mustExist(t T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

// ledgerRecords lists the rig's ledger.
func ledgerRecords(t T, r *Rig) []*ledger.Record {
	t.Helper()
	recs, err := r.Ledger.List(context.Background(), "sales")
	if err != nil {
		t.Fatalf("ledger list: %v", err)
	}
	return recs
}

// countFiles counts the regular files under dir.
func countFiles(t T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == fsarchive.PoolDir {
			return filepath.SkipDir // empty files made ahead, not objects
		}
		if d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return n
}
