package reliability

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

var (
	update   = flag.Bool("update", false, "rewrite testdata/hostile from the generator")
	seedFlag = flag.Int64("seed", 0, "seed for the random scenarios (0: from the clock)")
	longFlag = flag.Bool("long", false, "run the long versions (as make reliability does)")
)

var report struct {
	sync.Mutex
	rows []Row
}

func TestMain(m *testing.M) {
	code := m.Run()
	CleanupBuilt()
	if len(report.rows) > 0 {
		fmt.Println()
		WriteTable(os.Stdout, report.rows)
	}
	os.Exit(code)
}

func options() *Options {
	o := ShortOptions()
	if *longFlag {
		o = LongOptions()
	}
	o.Seed = *seedFlag
	return &o
}

// runGroup runs every case of the named scenario as a subtest and fails it
// on any invariant violation.
func runGroup(t *testing.T, name string) {
	runCases(t, name, func(string) bool { return true })
}

// runCases is runGroup for the cases whose name pick accepts.
func runCases(t *testing.T, name string, pick func(caseName string) bool) {
	for _, g := range Groups() {
		if g.Name != name {
			continue
		}
		for _, c := range g.Cases {
			if !pick(c.Name) {
				continue
			}
			t.Run(strings.TrimPrefix(c.Name, name+"/"), func(t *testing.T) {
				row := c.Run(t, options())
				for _, n := range row.Notes {
					t.Log(n)
				}
				for _, e := range InvariantErrors(row) {
					t.Error(e)
				}
				if t.Failed() {
					row.Failures = append(row.Failures, "test failed")
				}
				report.Lock()
				report.rows = append(report.rows, row)
				report.Unlock()
			})
		}
		return
	}
	t.Fatalf("no scenario %q", name)
}

func TestProcessKills(t *testing.T)      { runGroup(t, "kills") }
func TestConcurrentPollers(t *testing.T) { runGroup(t, "concurrent") }
func TestPOP3Faults(t *testing.T)        { runGroup(t, "pop3") }
func TestSMTPFaults(t *testing.T)        { runGroup(t, "smtp") }
func TestStorageFaults(t *testing.T)     { runGroup(t, "storage") }

func TestSecurity(t *testing.T) { runGroup(t, "security") }

// TestHostileMail runs the hostile scenario's cases but the corpus, which
// TestHostileCorpusOutcomes runs.
func TestHostileMail(t *testing.T) {
	runCases(t, "hostile", func(n string) bool { return n != "hostile/corpus" })
}

// Every corpus case through the whole pipeline from one Dovecot mailbox:
// relayed as served, quarantined or held as its manifest row says, and
// the mailbox drains with nothing lost.
func TestHostileCorpusOutcomes(t *testing.T) {
	runCases(t, "hostile", func(n string) bool { return n == "hostile/corpus" })
}

// What Dovecot serves for every case is what the manifest records (with
// -update: record it).
func TestHostileCorpusServed(t *testing.T) {
	if *update {
		cases := tableCorpus()
		rows := ServeCorpus(t, cases)
		if err := os.WriteFile(ManifestPath, FormatManifest(rows), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	cases, err := LoadCorpus(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range DiffServed(ServeCorpus(t, cases), cases) {
		t.Error(d)
	}
}

// The committed corpus is what the generator writes, big enough, in every
// category, and the manifest's own columns agree with the generator.
func TestHostileCorpusUpToDate(t *testing.T) {
	dir := filepath.Join("testdata", "hostile")
	if *update {
		if err := WriteHostileCorpus(dir); err != nil {
			t.Fatal(err)
		}
	}
	// Read from the directory, not the embedded copy, so that one -update
	// run writes and checks.
	names, msgs, err := corpusFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 60 {
		t.Errorf("hostile corpus has %d messages, want at least 60", len(names))
	}
	committed := map[string][]byte{}
	for i, n := range names {
		committed[n] = msgs[i]
	}
	for _, c := range hostileTable() {
		got, ok := committed[c.name+".eml"]
		if !ok {
			t.Errorf("%s.eml is not committed (run with -update)", c.name)
			continue
		}
		if !bytes.Equal(got, c.data) {
			t.Errorf("%s.eml differs from the generator (run with -update)", c.name)
		}
		delete(committed, c.name+".eml")
	}
	for n := range committed {
		t.Errorf("%s is committed but not generated", n)
	}

	data, err := os.ReadFile(ManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]ManifestRow{}
	for _, r := range rows {
		listed[r.Name] = r
	}
	perCategory := map[string]int{}
	const regen = "regenerate the manifest: POPCONN_INTEGRATION=1 go test ./internal/reliability -run TestHostileCorpusServed -update"
	for _, c := range tableCorpus() {
		perCategory[c.Category]++
		r, ok := listed[c.Name]
		switch {
		case !ok:
			t.Errorf("%s has no manifest row (%s)", c.Name, regen)
		case r.Category != c.Category || r.Outcome != c.Outcome || (c.Outcome == Quarantined && r.Expect != c.Expect):
			t.Errorf("%s: manifest says %s/%s/%q, the generator %s/%s/%q (%s)", c.Name, r.Category, r.Outcome, r.Expect, c.Category, c.Outcome, c.Expect, regen)
		}
		delete(listed, c.Name)
	}
	for n := range listed {
		t.Errorf("the manifest lists %s, which the generator does not make (%s)", n, regen)
	}
	for _, c := range Categories() {
		if perCategory[c] == 0 {
			t.Errorf("no corpus case in category %q", c)
		}
	}
}

// corpusFiles reads dir/*.eml.
func corpusFiles(dir string) (names []string, msgs [][]byte, err error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		return nil, nil, err
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, err
		}
		names, msgs = append(names, filepath.Base(p)), append(msgs, b)
	}
	return names, msgs, nil
}

// memArchive is an archive.Archive in memory, for the checker's own test.
type memArchive map[string][]byte

func (m memArchive) Put(_ context.Context, key string, _ archive.Meta, r io.Reader) (archive.Info, error) {
	b, err := io.ReadAll(r)
	m[key] = b
	return archive.Info{Key: key, Size: int64(len(b)), SHA256: digestOf(b)}, err
}

func (m memArchive) Open(_ context.Context, key string) (io.ReadCloser, error) {
	b, ok := m[key]
	if !ok {
		return nil, archive.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// The checker finds each kind of violation in a staged end state, and
// none in a clean one.
func TestCheckFindsViolations(t *testing.T) {
	type world struct {
		obs Observation
		arc memArchive
	}
	const rcpt = "sales@corp.example"
	trace := func(key string) string {
		return "Received: from pop by popconn (popconnector) with POP3 id <" + strings.TrimSuffix(filepath.Base(key), ".eml") + ">\r\n\tfor <" + rcpt + ">; Mon, 2 Jun 2025 10:00:00 +0000\r\n"
	}
	// clean: three messages, all archived, delivered once and deleted.
	clean := func() world {
		w := world{arc: memArchive{}}
		w.obs.Recipients = []string{rcpt}
		w.obs.OnServer = map[string]bool{}
		w.obs.Archive = w.arc
		for i := 1; i <= 3; i++ {
			raw := GenMessage(i)
			key := archive.KeyFor("sales", fmt.Sprintf("u%d", i), time.Unix(0, 0))
			w.arc[key] = raw
			w.obs.Messages = append(w.obs.Messages, Message{ID: fmt.Sprintf("seq-%d", i), UIDL: fmt.Sprintf("u%d", i), Digest: digestOf(raw), Size: int64(len(raw))})
			w.obs.Records = append(w.obs.Records, &ledger.Record{Mailbox: "sales", UIDL: fmt.Sprintf("u%d", i), ArchiveKey: key, SHA256: digestOf(raw), Size: int64(len(raw)),
				Recipients: []ledger.Recipient{{Address: rcpt, Status: ledger.Accepted}}, DeletedAt: time.Unix(1, 0)})
			w.obs.Received = append(w.obs.Received, testenv.Received{To: []string{rcpt}, Data: append([]byte(trace(key)), raw...)})
		}
		return w
	}
	// badmail stages seq-1 as set aside: not relayed, copied under
	// badmail/ with its reason, deleted.
	badmail := func(w *world) {
		r := w.obs.Records[0]
		w.obs.Received = w.obs.Received[1:]
		r.Recipients[0].Status, r.Disposition, r.BadmailKey = ledger.Rejected, ledger.DispositionBadmail, "badmail/"+r.ArchiveKey
		w.arc[r.BadmailKey] = w.arc[r.ArchiveKey]
		w.arc[r.BadmailKey+".reason.json"] = []byte(`{"reason":"staged"}`)
	}
	tests := []struct {
		name  string
		stage func(w *world)
		want  func(tl Tally) bool
	}{
		{"clean", func(w *world) {}, func(tl Tally) bool { return tl.OK(0) && tl.Delivered == 3 }},
		{"deleted without record", func(w *world) {
			w.obs.Records = w.obs.Records[1:]
			w.obs.Received = w.obs.Received[1:]
		}, func(tl Tally) bool { return tl.DeletedUndelivered == 1 && tl.Lost == 1 }},
		{"record of another message under the UIDL", func(w *world) {
			w.obs.Records[0].SHA256 = digestOf([]byte("other"))
			w.arc[w.obs.Records[0].ArchiveKey] = []byte("other")
			w.obs.Received = w.obs.Received[1:]
		}, func(tl Tally) bool { return tl.DeletedUndelivered == 1 && tl.Lost == 1 }},
		{"duplicate", func(w *world) {
			w.obs.Received = append(w.obs.Received, w.obs.Received[0])
		}, func(tl Tally) bool { return tl.Duplicates == 1 && !tl.OK(0) && tl.OK(1) }},
		{"archive altered", func(w *world) {
			w.arc[w.obs.Records[1].ArchiveKey] = []byte("tampered")
		}, func(tl Tally) bool { return tl.ArchiveMismatches >= 1 }},
		{"relayed bytes altered", func(w *world) {
			d := w.obs.Received[2].Data
			w.obs.Received[2].Data = append(d[:len(d)-2:len(d)-2], '\r', '\r', '\n')
		}, func(tl Tally) bool { return tl.RelayMismatches == 1 && tl.Delivered == 3 }},
		{"unknown message relayed", func(w *world) {
			w.obs.Received = append(w.obs.Received, testenv.Received{To: []string{rcpt}, Data: []byte("Subject: ?\r\n\r\nx\r\n")})
		}, func(tl Tally) bool { return tl.Unmatched == 1 }},
		{"on server without reason", func(w *world) {
			w.obs.Records = w.obs.Records[1:]
			w.obs.Received = w.obs.Received[1:]
			w.obs.OnServer["seq-1"] = true
		}, func(tl Tally) bool { return tl.Lost == 1 && tl.DeletedUndelivered == 0 }},
		{"on server, refusal explains", func(w *world) {
			w.obs.Records = w.obs.Records[1:]
			w.obs.Received = w.obs.Received[1:]
			w.obs.OnServer["seq-1"] = true
			w.obs.Refusal = fmt.Errorf("no UIDL")
		}, func(tl Tally) bool { return tl.OK(0) && tl.Refused == 1 }},
		{"on server, deferred with reason", func(w *world) {
			w.obs.Received = w.obs.Received[1:]
			w.obs.OnServer["seq-1"] = true
			r := w.obs.Records[0]
			r.DeletedAt, r.Recipients[0].Status, r.LastError, r.NextAttempt = time.Time{}, ledger.Deferred, "451 later", time.Unix(5, 0)
		}, func(tl Tally) bool { return tl.OK(0) && tl.Waiting == 1 }},
		{"set aside in badmail", func(w *world) {
			badmail(w)
		}, func(tl Tally) bool { return tl.OK(0) && tl.SetAside == 1 && tl.Delivered == 2 }},
		{"set aside, deletion to come", func(w *world) {
			badmail(w)
			w.obs.OnServer["seq-1"] = true
		}, func(tl Tally) bool { return tl.OK(0) && tl.Waiting == 1 }},
		{"badmail copy altered", func(w *world) {
			badmail(w)
			w.arc[w.obs.Records[0].BadmailKey] = []byte("tampered")
		}, func(tl Tally) bool { return tl.ArchiveMismatches == 1 && tl.Lost == 0 }},
		{"badmail reason missing", func(w *world) {
			badmail(w)
			delete(w.arc, w.obs.Records[0].BadmailKey+".reason.json")
		}, func(tl Tally) bool { return tl.ArchiveMismatches == 1 }},
		{"notice to the postmaster", func(w *world) {
			w.obs.NoticeTo = "postmaster@corp.example"
			w.obs.Received = append(w.obs.Received, testenv.Received{To: []string{"postmaster@corp.example"}, Data: []byte("Subject: notice\r\n\r\nx\r\n")})
		}, func(tl Tally) bool { return tl.OK(0) && tl.Notices == 1 }},
		{"partly delivered and deleted", func(w *world) {
			w.obs.Recipients = append(w.obs.Recipients, "team@corp.example")
			for _, r := range w.obs.Records {
				r.Recipients = append(r.Recipients, ledger.Recipient{Address: "team@corp.example", Status: ledger.Accepted})
			}
		}, func(tl Tally) bool { return tl.Lost == 3 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := clean()
			tt.stage(&w)
			tl := Check(context.Background(), w.obs)
			if !tt.want(tl) {
				t.Errorf("tally %+v does not show the staged fault", tl)
			}
		})
	}
}

func TestStripAdded(t *testing.T) {
	in := []byte("Received: from a by b with POP3 id <abc123>\r\n\tfor <x@y>; date\r\nMessage-ID: <popconn.sales.1@corp>\r\nSubject: s\r\n\r\nbody\r\n")
	rest, id := StripAdded(in)
	if string(rest) != "Subject: s\r\n\r\nbody\r\n" || id != "abc123" {
		t.Errorf("StripAdded = %q, %q", rest, id)
	}
}

func TestSMTPForm(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\n": "a\r\nb\r\n", "a\r\nb": "a\r\nb\r\n", "": "", "a\r\r\n": "a\r\r\n", "\n": "\r\n",
	} {
		if got := string(SMTPForm([]byte(in))); got != want {
			t.Errorf("SMTPForm(%q) = %q, want %q", in, got, want)
		}
	}
}

// The rule for "the header has a Message-ID" (the connector then adds
// none), on the shapes of the corpus.
func TestHasMessageID(t *testing.T) {
	tests := []struct {
		msg  string
		want bool
	}{
		{"Message-ID: <a@b>\r\n\r\nbody\r\n", true},
		{"message-id: <a@b>\r\n\r\n", true},
		{"From: x\r\nMessage-ID:\r\n <folded@b>\r\n\r\n", true},
		{"Message-ID: plain@b\n\nLF only\n", true},
		{"X-Grüße: v\r\nMessage-ID: <a@b>\r\n\r\n", true}, // a bad field name ends nothing
		{"Message-ID:\r\nSubject: empty\r\n\r\n", true},   // present, if empty: none is added
		{"Message-ID: \t \r\n\r\n", true},
		{"Message-ID : <spaced@b>\r\n\r\n", true},
		{"Subject: s\r\n\r\nMessage-ID: <in@body>\r\n", false},
		{"\r\nMessage-ID: <after@blank>\r\n", false},
		{"From: a\rMessage-ID: <x@y>\r", true}, // a bare CR may end a line for the receiver
		{"", false},
	}
	for _, tt := range tests {
		if got := hasMessageID([]byte(tt.msg)); got != tt.want {
			t.Errorf("hasMessageID(%q) = %v, want %v", tt.msg, got, tt.want)
		}
	}
}

// The manifest's "served" column for each way Dovecot changes a message.
func TestDescribeServed(t *testing.T) {
	tests := []struct {
		stored, served string
		list           int64
		want           string
	}{
		{"a\r\n", "a\r\n", 3, "served unchanged"},
		{"a\nb\n", "a\r\nb\r\n", 6, "bare LF served as CRLF"},
		{"a", "a\r\n", 1, "final CRLF added, LIST is 2 octets less"},
		{"", "\r\n", 0, "final CRLF added, LIST is 2 octets less"},
		{".abc\r\n", "abc\r\n", 6, "first line's dot not stuffed: 1 octet short of LIST"},
		{".\r\nrest\r\n", "", 9, "first line is a lone dot, not stuffed: served as the terminator, 0 of 9 octets"},
		{"abc\r\n", "abd\r\n", 5, `changed at byte 2: got "abd\r\n", want "abc\r\n"`},
	}
	for _, tt := range tests {
		if got := describeServed([]byte(tt.stored), []byte(tt.served), tt.list); got != tt.want {
			t.Errorf("describeServed(%q, %q, %d) = %q, want %q", tt.stored, tt.served, tt.list, got, tt.want)
		}
	}
}
