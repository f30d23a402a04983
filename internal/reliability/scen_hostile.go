package reliability

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// HostileCases are scenario 6: hostile and malformed mail, each relayed
// byte for byte (apart from what the connector puts in front), set aside
// in badmail with a reason, or held; never a crash, never a silent drop,
// and the mailbox drains.
func HostileCases() []Case {
	return []Case{
		{"hostile/corpus", runHostileCorpus},
		{"hostile/exact-server", runHostileExact},
	}
}

// corpusPostmaster receives the connector's notices in the hostile
// scenarios.
const corpusPostmaster = "postmaster@corp.example"

// CorpusCase is one hostile message with its manifest row. The generated
// big message has no row in the manifest (its size depends on the
// options): it is relayed, and its Expect is worked out from its bytes.
type CorpusCase struct {
	ManifestRow
	Data     []byte
	Unlisted bool // not in the manifest
}

// LoadCorpus returns the committed corpus (testdata/hostile/*.eml with
// MANIFEST.tsv) and the generated messages, the big one of big bytes.
func LoadCorpus(big int64) ([]CorpusCase, error) {
	rows, err := Manifest()
	if err != nil {
		return nil, err
	}
	byName := map[string]ManifestRow{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	names, msgs, err := HostileCorpus()
	if err != nil {
		return nil, err
	}
	gn, gm := GeneratedHostile(big)
	all := append(append([][]byte(nil), msgs...), gm...)
	var out []CorpusCase
	for i, n := range append(names, gn...) {
		data := all[i]
		n = strings.TrimSuffix(n, ".eml")
		r, ok := byName[n]
		delete(byName, n)
		switch {
		case ok:
			out = append(out, CorpusCase{ManifestRow: r, Data: data})
		case strings.HasPrefix(n, "gen-big-"):
			out = append(out, CorpusCase{ManifestRow: ManifestRow{Name: n, Category: generatedCategory, Outcome: Relayed}, Data: data, Unlisted: true})
		default:
			return nil, fmt.Errorf("%s has no row in %s (regenerate it: see hostile.go)", n, ManifestPath)
		}
	}
	for n := range byName {
		return nil, fmt.Errorf("%s lists %s, which is neither committed nor generated", ManifestPath, n)
	}
	return out, nil
}

// tableCorpus is the corpus as hostileTable and GeneratedHostile make it,
// with the manifest columns that do not depend on Dovecot: what
// TestHostileCorpusServed -update starts from.
func tableCorpus() []CorpusCase {
	var out []CorpusCase
	for _, c := range hostileTable() {
		out = append(out, CorpusCase{ManifestRow: ManifestRow{Name: c.name, Category: c.category, Outcome: c.outcome, Expect: c.reason}, Data: c.data})
	}
	gn, gm := GeneratedHostile(0)
	for i := range gn[:len(gn)-1] {
		out = append(out, CorpusCase{ManifestRow: ManifestRow{Name: gn[i], Category: generatedCategory, Outcome: Relayed}, Data: gm[i]})
	}
	return out
}

// ServeCorpus delivers every case to a fresh Dovecot mailbox and returns
// the manifest rows of what it serves, in case order.
func ServeCorpus(t T, cases []CorpusCase) []ManifestRow {
	t.Helper()
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{popUser: popPassword}})
	uidls := make([]string, len(cases))
	for i, c := range cases {
		uidls[i] = d.Deliver(t, popUser, c.Data)
	}
	served := RawServedBytes(t, d.TLSAddr, &tls.Config{RootCAs: d.CA.Pool, ServerName: "127.0.0.1"}, popUser, popPassword)
	rows := make([]ManifestRow, len(cases))
	for i, c := range cases {
		s := served[uidls[i]]
		rows[i] = ServedRow(c.Name, c.Category, c.Outcome, c.Expect, c.Data, s, s.Data)
	}
	return rows
}

// DiffServed compares what Dovecot serves (got) with the manifest (want),
// one line per case that differs.
func DiffServed(got []ManifestRow, want []CorpusCase) []string {
	var out []string
	for i, g := range got {
		w := want[i]
		if w.Unlisted {
			continue
		}
		if g.ListSize != w.ListSize || g.ServedSize != w.ServedSize || g.ServedSHA256 != w.ServedSHA256 {
			out = append(out, fmt.Sprintf("%s: Dovecot now lists %d and serves %d octets (sha256 %.12s), the manifest says LIST %d, served %d (%.12s): %s; if this Dovecot is right, regenerate the manifest (see hostile.go)",
				w.Name, g.ListSize, g.ServedSize, g.ServedSHA256, w.ListSize, w.ServedSize, w.ServedSHA256, w.Served))
		}
	}
	return out
}

// runHostileCorpus serves every corpus case (and the generated ones) from
// one real Dovecot mailbox whose undeliverable action is badmail, polls it
// with the whole pipeline into an ExactSMTP until it drains, and checks each
// case against its manifest row: what Dovecot serves, then its outcome.
func runHostileCorpus(t T, o *Options) Row {
	cases, err := LoadCorpus(o.BigMessage)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRig(t, o, RigOptions{Dovecot: true, ExactSMTP: true})
	r.FreshRelay = true // one message's failed transaction cannot affect the next
	r.Settings.Notify = connector.NotifySettings{To: corpusPostmaster, Badmail: true}
	retrs := &retrCounter{n: map[string]int{}}
	r.MailboxEdit = func(mb *connector.Mailbox) {
		mb.PollTimeout = 10 * time.Minute
		mb.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
		mb.Dial = retrs.wrap(mb.Dial)
	}
	ids := make([]string, len(cases))
	msgs := make([][]byte, len(cases))
	held := 0
	for i, c := range cases {
		ids[i], msgs[i] = c.Name, c.Data
		if c.Outcome == Held || c.Outcome == Kept {
			held++
		}
	}
	r.SeedDovecot(ids, msgs)
	served := make([]ManifestRow, len(cases))
	for i, c := range cases {
		s := r.Served[r.Messages[i].UIDL]
		served[i] = ManifestRow{Name: c.Name, ListSize: s.ListSize, ServedSize: s.Size, ServedSHA256: s.Digest}
	}
	for _, d := range DiffServed(served, cases) {
		t.Errorf("%s", d)
	}

	// The first fetch of a held message ends its poll's main session
	// (the rest may be on the wire: no DELE, no further fetch), so each
	// held case's first fetch may cost a poll; refetches run on sessions
	// of their own, all due held messages in each poll, and a hold is
	// confirmed by its fourth fetch; one more poll deletes what was set
	// aside, two spare; the clock moves by step, so a refetch comes every
	// perRefetch polls. Kept cases stay on the server.
	const step = 5 * time.Minute // the clock's advance between polls
	perRefetch := int((r.Settings.RetryInterval + step - 1) / step)
	maxPolls := held + 3*perRefetch + 1 + 2
	w := watchCorpus(r, cases, retrs)
	for i := 0; i < maxPolls && !w.drained(); i++ {
		r.Poll()
		w.observe(i + 1)
		r.Clock.Advance(step)
	}
	if !w.drained() {
		var left []string
		for name := range r.OnServer() {
			if w.outcome(name) != Kept {
				left = append(left, name)
			}
		}
		sort.Strings(left)
		if len(left) > 12 {
			left = append(left[:12], fmt.Sprintf("and %d more", len(left)-12))
		}
		t.Errorf("the mailbox did not drain in %d polls (%d held cases): %d of %d cases still on the server: %s",
			maxPolls, held, len(left), len(cases), strings.Join(left, ", "))
	}
	checkNoPanic(t, r)
	counts := w.check(t, held)

	row := r.Row("hostile/corpus", 0)
	row.Notes = append(row.Notes, fmt.Sprintf("%d cases (%s); %d polls", len(cases), counts, r.Runs))
	var changed []string
	for _, c := range cases {
		if !c.Unlisted && c.Served != "served unchanged" {
			changed = append(changed, c.Name+": "+c.Served)
		}
	}
	row.Notes = append(row.Notes, fmt.Sprintf("Dovecot serves %d cases differently from the stored bytes: %s", len(changed), strings.Join(changed, "; ")))
	row.Notes = append(row.Notes, undeliveredReasons(t, r)...)
	return row
}

// corpusWatch follows each case's ledger record from poll to poll.
type corpusWatch struct {
	r     *Rig
	cases []CorpusCase
	// delivered is the poll after which a case's record showed every
	// recipient accepted it (0: never).
	delivered map[string]int
	retrs     *retrCounter
	// early says how a held case left the hold too soon (deleted, relayed
	// or set aside before its fourth fetch).
	early map[string]string
	// settledAt is the poll after which a held case was set aside.
	settledAt map[string]int
}

func watchCorpus(r *Rig, cases []CorpusCase, retrs *retrCounter) *corpusWatch {
	return &corpusWatch{r: r, cases: cases, delivered: map[string]int{}, retrs: retrs, early: map[string]string{}, settledAt: map[string]int{}}
}

// outcome is the expected outcome of the case named name.
func (w *corpusWatch) outcome(name string) Outcome {
	for _, c := range w.cases {
		if c.Name == name {
			return c.Outcome
		}
	}
	return ""
}

// drained reports whether every case that should leave the server has,
// and every record of the mailbox but the kept cases' is settled.
func (w *corpusWatch) drained() bool {
	for name := range w.r.OnServer() {
		if w.outcome(name) != Kept {
			return false
		}
	}
	recs, err := w.r.Ledger.List(context.Background(), "sales")
	if err != nil {
		return false
	}
	for _, rec := range recs {
		switch {
		case rec.Held != "" && rec.HeldFetches < 4:
			return false // a kept case's hold is not confirmed yet
		case rec.Held == "" && (!rec.Settled() || !rec.Deleted()):
			return false
		}
	}
	return true
}

// record returns case i's own record (the one holding its served digest).
func (w *corpusWatch) record(recs map[string][]*ledger.Record, i int) *ledger.Record {
	m := w.r.Messages[i]
	rec, own := recordFor(recs[m.UIDL], m.Digest)
	if !own {
		return nil
	}
	return rec
}

func (w *corpusWatch) byUIDL() map[string][]*ledger.Record {
	out := map[string][]*ledger.Record{}
	for _, rec := range ledgerRecords(w.r.T, w.r) {
		out[serverUIDL(rec)] = append(out[serverUIDL(rec)], rec)
	}
	return out
}

func (w *corpusWatch) observe(poll int) {
	recs := w.byUIDL()
	for i, c := range w.cases {
		rec := w.record(recs, i)
		if rec == nil {
			continue
		}
		if rec.Delivered() && w.delivered[c.Name] == 0 {
			w.delivered[c.Name] = poll
		}
		if (c.Outcome != Held && c.Outcome != Kept) || w.early[c.Name] != "" || w.settledAt[c.Name] != 0 {
			continue
		}
		n := w.retrs.count(w.r.Messages[i].UIDL)
		switch {
		case rec.Delivered():
			w.early[c.Name] = fmt.Sprintf("relayed after %d fetch(es)", n)
		case rec.Disposition == "" && rec.Deleted():
			w.early[c.Name] = fmt.Sprintf("deleted from the server without a disposition after %d fetch(es)", n)
		case rec.Disposition != "" && n != 4:
			w.early[c.Name] = fmt.Sprintf("set aside (%s) after %d fetch(es), want 4 with the same bytes", rec.Disposition, n)
		case rec.Disposition != "":
			w.settledAt[c.Name] = poll
		}
	}
}

// retrCounter counts the connector's RETRs per UIDL, wrapping its POP3
// sessions.
type retrCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *retrCounter) wrap(dial connector.SourceDialer) connector.SourceDialer {
	return func(ctx context.Context) (connector.Source, error) {
		s, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return &countingSource{Source: s, c: c}, nil
	}
}

func (c *retrCounter) count(uidl string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[uidl]
}

type countingSource struct {
	connector.Source
	c    *retrCounter
	uids map[int]string // this session's numbers
}

func (s *countingSource) ListAll(ctx context.Context) ([]connector.ServerMessage, error) {
	msgs, err := s.Source.ListAll(ctx)
	s.uids = map[int]string{}
	for _, m := range msgs {
		s.uids[m.Num] = m.UID
	}
	return msgs, err
}

func (s *countingSource) Retr(ctx context.Context, num int) (io.ReadCloser, error) {
	s.c.mu.Lock()
	s.c.n[s.uids[num]]++
	s.c.mu.Unlock()
	return s.Source.Retr(ctx, num)
}

// check asserts every case's outcome and returns the counts by outcome.
func (w *corpusWatch) check(t T, held int) string {
	t.Helper()
	ctx := context.Background()
	r := w.r
	recs := w.byUIDL()
	onServer := r.OnServer()
	// The transactions for the mailbox's recipient, by trace id, and the
	// notices to the postmaster.
	byTrace := map[string][][]byte{}
	var notices [][]byte
	for _, rcv := range r.Exact.Messages() {
		if len(rcv.To) == 1 && rcv.To[0] == corpusPostmaster {
			notices = append(notices, rcv.Data)
			continue
		}
		_, _, _, id := splitAdded(rcv.Data)
		byTrace[id] = append(byTrace[id], rcv.Data)
	}
	noticeFor := func(rec *ledger.Record) bool {
		for _, n := range notices {
			if bytes.Contains(n, []byte(rec.ArchiveKey)) {
				return true
			}
		}
		return false
	}
	count := map[Outcome]int{}
	for i, c := range w.cases {
		count[c.Outcome]++
		m := r.Messages[i]
		rec := w.record(recs, i)
		if rec == nil {
			t.Errorf("%s (%s): no ledger record holds the served bytes (sha256 %.12s): not archived as served", c.Name, c.Outcome, m.Digest)
			continue
		}
		sent := byTrace[strings.TrimSuffix(path.Base(rec.ArchiveKey), ".eml")]
		switch c.Outcome {
		case Relayed:
			w.checkRelayed(ctx, t, c, rec, sent, onServer[c.Name], held)
		case Kept:
			if len(sent) > 0 {
				t.Errorf("%s (kept): relayed %d time(s), want never", c.Name, len(sent))
			}
			if !onServer[c.Name] || rec.Disposition != "" || rec.Held == "" {
				t.Errorf("%s (kept): on the server %v, disposition %q, held %q; want kept on the server, held", c.Name, onServer[c.Name], rec.Disposition, rec.Held)
			}
			if !noticeFor(rec) {
				t.Errorf("%s (kept): no notice to %s names its archived copy %s", c.Name, corpusPostmaster, rec.ArchiveKey)
			}
			if e := w.early[c.Name]; e != "" {
				t.Errorf("%s (kept): %s", c.Name, e)
			}
			if n := w.retrs.count(m.UIDL); n < 4 || rec.HeldFetches < 4 {
				t.Errorf("%s (kept): fetched %d time(s) in all (%d in a row the same), want at least 4 (after that at the slowest pace)", c.Name, n, rec.HeldFetches)
			}
		case Quarantined, Held:
			if len(sent) > 0 {
				t.Errorf("%s (%s): relayed %d time(s), want never", c.Name, c.Outcome, len(sent))
			}
			if onServer[c.Name] {
				t.Errorf("%s (%s): still on the POP3 server (ledger: held %q, disposition %q, last error %q)", c.Name, c.Outcome, rec.Held, rec.Disposition, rec.LastError)
			}
			reason := w.checkBadmail(ctx, t, c, rec)
			if rec.Disposition == ledger.DispositionBadmail && !noticeFor(rec) {
				t.Errorf("%s (%s): no notice to %s names its archived copy %s", c.Name, c.Outcome, corpusPostmaster, rec.ArchiveKey)
			}
			if c.Outcome == Quarantined {
				if !strings.Contains(reason, c.Expect) {
					t.Errorf("%s (quarantined): badmail reason %q does not name %q", c.Name, reason, c.Expect)
				}
				continue
			}
			// Held: the reason says the bytes differ from the server's
			// copy and by how many octets, and it took four fetches.
			diff := fmt.Sprint(c.ListSize - c.ServedSize)
			if !strings.Contains(reason, diff) || !strings.Contains(reason, "octet") {
				t.Errorf("%s (held): badmail reason %q does not give the difference from the server's LIST (%s octets)", c.Name, reason, diff)
			}
			if e := w.early[c.Name]; e != "" {
				t.Errorf("%s (held): %s", c.Name, e)
			}
			if n := w.retrs.count(m.UIDL); n != 4 {
				t.Errorf("%s (held): fetched %d time(s) in all, want 4 (the first fetch and 3 refetches)", c.Name, n)
			}
		}
	}
	return fmt.Sprintf("%d relayed, %d quarantined, %d held, %d kept", count[Relayed], count[Quarantined], count[Held], count[Kept])
}

// checkRelayed: one copy went to the recipient, equal to the served bytes
// (as the archive holds them) in SMTP form, behind one trace field of this
// connector and, when the header has none, a Message-ID field; in time;
// and the message left the server.
func (w *corpusWatch) checkRelayed(ctx context.Context, t T, c CorpusCase, rec *ledger.Record, sent [][]byte, onServer bool, held int) {
	t.Helper()
	if len(sent) != 1 {
		t.Errorf("%s (relayed): %d copies reached the recipient, want 1 (ledger: last error %q, disposition %q)", c.Name, len(sent), rec.LastError, rec.Disposition)
		return
	}
	// Each held case can delay the rest of the mailbox by the one poll that
	// first fetches it, never more.
	if p := w.delivered[c.Name]; p == 0 || p > held+1 {
		t.Errorf("%s (relayed): delivered in poll %d, want by poll %d: a held message blocked it", c.Name, p, held+1)
	}
	if onServer && w.r.Done() {
		t.Errorf("%s (relayed): still on the POP3 server", c.Name) // else the drain error covers it
	}
	trace, mid, rest, _ := splitAdded(sent[0])
	var archived []byte
	if rec.Size > 64<<20 {
		// The long suite's big message: Dovecot serves CRLF only, so its
		// SMTP form is the archived bytes; compare digests, not copies.
		if d := digestOf(rest); d != rec.SHA256 {
			t.Errorf("%s (relayed): relayed bytes (%d, sha256 %.12s) differ from the archived ones (%d, %.12s)", c.Name, len(rest), d, rec.Size, rec.SHA256)
		}
		archived = rest
	} else {
		var err error
		if archived, err = readObject(ctx, w.r.Archive, rec.ArchiveKey); err != nil {
			t.Errorf("%s (relayed): archive: %v", c.Name, err)
			return
		}
		if want := SMTPForm(archived); !bytes.Equal(rest, want) {
			t.Errorf("%s (relayed): relayed bytes (%d) differ from the served bytes in SMTP form (%d)%s", c.Name, len(rest), len(want), firstDiff(rest, want))
		}
	}
	expect := c.Expect
	if c.Unlisted {
		expect = "trace"
		if !hasMessageID(archived) {
			expect = "trace,message-id"
		}
	}
	mark := "by " + rigHostname + " (popconnector)"
	if !bytes.Contains(bytes.Join(bytes.Fields(trace), []byte(" ")), []byte(mark)) {
		t.Errorf("%s (relayed): does not start with the connector's Received field (%q): %.120q", c.Name, mark, sent[0])
	}
	switch {
	case expect == "trace,message-id" && string(mid) != "Message-ID: <"+rec.MessageID+">\r\n":
		t.Errorf("%s (relayed): the header has no Message-ID, so one must be added after the trace field; got %q (ledger %q)", c.Name, mid, rec.MessageID)
	case expect == "trace" && mid != nil:
		t.Errorf("%s (relayed): the header has a Message-ID, yet %q was added", c.Name, mid)
	}
}

// checkBadmail: the case was set aside under badmail/ with a copy of the
// served bytes and a reason object; it returns the reason.
func (w *corpusWatch) checkBadmail(ctx context.Context, t T, c CorpusCase, rec *ledger.Record) string {
	t.Helper()
	if rec.Disposition != ledger.DispositionBadmail {
		t.Errorf("%s (%s): disposition %q, want badmail (held %q, last error %q)", c.Name, c.Outcome, rec.Disposition, rec.Held, rec.LastError)
		return ""
	}
	if want := connector.BadmailPrefix + rec.ArchiveKey; rec.BadmailKey != want {
		t.Errorf("%s (%s): badmail key %q, want %q", c.Name, c.Outcome, rec.BadmailKey, want)
	}
	copied, err := readObject(ctx, w.r.Archive, rec.BadmailKey)
	if err != nil {
		t.Errorf("%s (%s): badmail copy: %v", c.Name, c.Outcome, err)
	} else if d := digestOf(copied); d != c.ServedSHA256 && !c.Unlisted {
		t.Errorf("%s (%s): badmail copy is %d octets sha256 %.12s, Dovecot served %d (%.12s)", c.Name, c.Outcome, len(copied), d, c.ServedSize, c.ServedSHA256)
	}
	data, err := readObject(ctx, w.r.Archive, rec.BadmailKey+".reason.json")
	if err != nil {
		t.Errorf("%s (%s): badmail reason: %v", c.Name, c.Outcome, err)
		return ""
	}
	var reason struct{ Reason string }
	if err := json.Unmarshal(data, &reason); err != nil || reason.Reason == "" {
		t.Errorf("%s (%s): badmail reason object %s: %v, reason %q", c.Name, c.Outcome, filepath.Base(rec.BadmailKey)+".reason.json", err, reason.Reason)
	}
	return reason.Reason
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// runHostileExact serves the committed corpus byte for byte from a
// pop3test server, bare LF and first-line dots included, so what the relay
// does with bytes Dovecot would have rewritten shows. Nothing here is held
// (the server sends what it lists); the loop and SMTPUTF8 cases go to
// badmail.
func runHostileExact(t T, o *Options) Row {
	names, msgs, err := HostileCorpus()
	if err != nil {
		t.Fatal(err)
	}
	gn, gm := GeneratedHostile(1 << 20)
	names, msgs = append(names, gn[:3]...), append(msgs, gm[:3]...) // not the big one
	r := NewRig(t, o, RigOptions{ExactSMTP: true})
	r.FreshRelay = true
	r.PopOpts.Timeout = 30 * time.Second
	r.Settings.Notify = connector.NotifySettings{To: corpusPostmaster, Badmail: true}
	r.MailboxEdit = func(mb *connector.Mailbox) {
		mb.Undeliverable = connector.Undeliverable{Action: connector.BadmailRejected}
	}
	r.ServePOP3(names, msgs, nil)
	r.PollUntilDone(4)
	row := r.Row("hostile/exact-server", 0)
	checkNoPanic(t, r)
	if !r.Done() {
		t.Errorf("the mailbox did not drain in 4 polls: still on the server: %s", strings.Join(sortedKeys(r.OnServer()), ", "))
	}
	if row.RelayNormalised > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("%d message(s) relayed with bare LF sent as CRLF (RFC 5321 §2.3.8), so not byte-equal to the archive", row.RelayNormalised))
	}
	row.Notes = append(row.Notes, undeliveredReasons(t, r)...)
	return row
}

// checkNoPanic fails on a poll that ended in a recovered panic.
func checkNoPanic(t T, r *Rig) {
	t.Helper()
	for i, res := range r.Results {
		if res.Err != nil && strings.Contains(res.Err.Error(), "internal error") {
			t.Errorf("poll %d panicked: %v", i+1, res.Err)
		}
	}
}

// undeliveredReasons lists each message not delivered, with the ledger's
// reason or disposition.
func undeliveredReasons(t T, r *Rig) []string {
	byUIDL := map[string]string{}
	for _, m := range r.Messages {
		byUIDL[m.UIDL] = m.ID
	}
	var out []string
	for _, rec := range ledgerRecords(t, r) {
		if rec.Delivered() {
			continue
		}
		reason, where := rec.LastError, "left on the server"
		if rec.Disposition != "" {
			reason, where = rec.DispositionReason, "set aside ("+string(rec.Disposition)+")"
		}
		if len(reason) > 160 {
			reason = reason[:157] + "..."
		}
		out = append(out, fmt.Sprintf("%s: %s: %s", where, byUIDL[serverUIDL(rec)], reason))
	}
	sort.Strings(out)
	return out
}
