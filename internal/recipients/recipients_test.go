package recipients

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/popconnector/popconnector/internal/message"
)

// headerOf reads an .eml file through the same Inspector the pipeline uses,
// so the corpus is parsed exactly as a fetched message would be.
func headerOf(t testing.TB, name string) *mail.Header {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	in := message.NewInspector()
	if _, err := in.Write(raw); err != nil {
		t.Fatal(err)
	}
	s := in.Summary()
	if s.ParseError != nil {
		t.Fatalf("%s: %v", name, s.ParseError)
	}
	if s.Header == nil {
		t.Fatalf("%s: no header", name)
	}
	return s.Header
}

func parseHeader(t testing.TB, raw string) *mail.Header {
	t.Helper()
	th, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(raw + "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return &mail.Header{Header: gomessage.Header{Header: th}}
}

var corp = []string{"corp.example"}

func TestResolveCorpus(t *testing.T) {
	ispRewrite := map[string]string{
		"*@isp.example":        "*@corp.example",
		"SALES@isp.example":    "orders@corp.example",
		"catchall@isp.example": "helpdesk@corp.example",
	}
	tests := []struct {
		file string
		opts GlobalOptions
		want []string
		src  string
		fb   bool
		// ignored lists the non-local addresses expected in Result.Ignored.
		ignored []string
		// problems are substrings, one per expected problem, in order.
		problems []string
	}{
		{file: "postfix-multi-delivered-to.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"alice@corp.example", "bob@corp.example"}, src: "Delivered-To"},
		// The top Delivered-To is the ISP's catch-all box; the recipient
		// before alias expansion is in X-Original-To.
		{file: "postfix-catchall-original-to.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"bob@corp.example"}, src: "X-Original-To", ignored: []string{"catchall@isp.example"}},
		{file: "x-original-to-only.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"dave@corp.example"}, src: "X-Original-To"},
		// "for" and its path are on folded continuation lines; the older
		// Received written by the sender's server names a foreign address.
		{file: "received-folded-for.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"carol@corp.example"}, src: "Received", ignored: []string{"someone@example.org"}},
		{file: "gmail-received-for-comment.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"Dave@Corp.Example"}, src: "Received"},
		{file: "exim-envelope-to.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"erin@corp.example", "frank@Corp.Example"}, src: "Envelope-To"},
		{file: "x-envelope-to.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"grace@corp.example"}, src: "X-Envelope-To"},
		// Encoded words in UTF-8, ISO-8859-1 and windows-1252 (which
		// go-message cannot decode without its charset package) all give
		// their addresses.
		{file: "encoded-display-names.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"heidi@corp.example", "joerg@corp.example", "rene@corp.example"}, src: "To, Cc",
			ignored: []string{"ext@example.org"}},
		{file: "encoded-display-names.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"postmaster@corp.example"}, src: "fallback", fb: true},
		{file: "undisclosed-recipients-bcc.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"ivan@corp.example"}, src: "Delivered-To"},
		{file: "undisclosed-recipients-only.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true, Fallback: "it@corp.example"},
			want: []string{"it@corp.example"}, src: "fallback", fb: true},
		{file: "group-syntax.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"judy@corp.example", "john.doe@corp.example"}, src: "To", ignored: []string{"mallory@example.net"}},
		{file: "invalid-addresses.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"good@corp.example", "kim@corp.example", "lost@corp.example"}, src: "To, Cc",
			problems: []string{`To: skipped "bad@"`, `To: skipped "@nolocal.example"`, `To: skipped "<broken@"`,
				`Cc: kept lost@corp.example from "\"Quote never closed <lost@corp.example>": display name unreadable`}},
		{file: "mixed-case-duplicates.eml", opts: GlobalOptions{LocalDomains: []string{"CORP.example."}},
			want: []string{"Liam@Corp.Example", "mona@corp.example"}, src: "Delivered-To"},
		// Bcc: the recipient is in no To or Cc, only in the envelope header.
		{file: "bcc-only-envelope.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"mike@corp.example"}, src: "X-Original-To",
			ignored: []string{"catchall@isp.example"}},
		{file: "rewrite-isp-domain.eml", opts: GlobalOptions{LocalDomains: corp, Rewrite: ispRewrite},
			want: []string{"Nina@corp.example", "orders@corp.example", "helpdesk@corp.example"}, src: "Delivered-To"},
		{file: "rewrite-isp-domain.eml", opts: GlobalOptions{LocalDomains: corp, Rewrite: map[string]string{"*@isp.example": "sales-team@corp.example"}},
			want: []string{"sales-team@corp.example"}, src: "Delivered-To"},
		{file: "no-local-recipient.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"postmaster@corp.example"}, src: "fallback", fb: true,
			ignored: []string{"catchall@isp.example", "news-subscribers@example.org"}},
		{file: "to-cc-only.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"olivia@corp.example", "peggy@corp.example"}, src: "To, Cc", ignored: []string{"outsider@example.net"}},
		{file: "to-cc-only.eml", opts: GlobalOptions{LocalDomains: corp, Fallback: "postmaster@corp.example"},
			want: []string{"postmaster@corp.example"}, src: "fallback", fb: true},
		{file: "resent.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"quinn@corp.example"}, src: "Resent-To"},
		{file: "8bit-display-name.eml", opts: GlobalOptions{LocalDomains: corp, UseTo: true},
			want: []string{"mueller@corp.example", "plain@corp.example"}, src: "To",
			problems: []string{`To: kept mueller@corp.example from "M\xfcller <mueller@corp.example>": display name unreadable`}},
		{file: "quoted-local-part.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"jsmith@corp.example"}, src: "X-Original-To",
			problems: []string{`Delivered-To: skipped <"john smith"@corp.example>: the address needs quoting`}},
		// A header lower down names another recipient; the first header
		// in the order decides alone.
		{file: "forged-lower-header.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"rachel@corp.example"}, src: "Delivered-To"},
		{file: "forged-lower-header.eml", opts: GlobalOptions{LocalDomains: corp, HeaderOrder: []string{"X-Original-To", "Delivered-To"}},
			want: []string{"ceo@corp.example"}, src: "X-Original-To"},
		// "for" in a comment and after the date are not clauses; Exim's
		// bare "for addr;" is.
		{file: "received-for-in-comment.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"tina@corp.example"}, src: "Received"},
		{file: "domain-literal-and-trailing-dot.eml", opts: GlobalOptions{LocalDomains: corp},
			want: []string{"postmaster@corp.example"}, src: "fallback", fb: true, ignored: []string{"uma@[192.0.2.1]"},
			problems: []string{`X-Envelope-To: skipped "victor@corp.example."`}},
	}
	files, err := filepath.Glob("testdata/*.eml")
	if err != nil {
		t.Fatal(err)
	}
	covered := make(map[string]bool)
	for _, tc := range tests {
		covered[tc.file] = true
		t.Run(strings.TrimSuffix(tc.file, ".eml"), func(t *testing.T) {
			r, err := NewResolver(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := r.Resolve(headerOf(t, tc.file))
			if !slices.Equal(got.Recipients, tc.want) {
				t.Errorf("Recipients = %q, want %q", got.Recipients, tc.want)
			}
			if got.Source != tc.src {
				t.Errorf("Source = %q, want %q", got.Source, tc.src)
			}
			if got.Fallback != tc.fb {
				t.Errorf("Fallback = %v, want %v", got.Fallback, tc.fb)
			}
			if !slices.Equal(got.Ignored, tc.ignored) {
				t.Errorf("Ignored = %q, want %q", got.Ignored, tc.ignored)
			}
			if len(got.Problems) != len(tc.problems) {
				t.Fatalf("Problems = %q, want %d matching %q", got.Problems, len(tc.problems), tc.problems)
			}
			for i, p := range tc.problems {
				if !strings.Contains(got.Problems[i], p) {
					t.Errorf("Problems[%d] = %q, want it to contain %q", i, got.Problems[i], p)
				}
			}
			// The package-level function with the same valid options
			// gives the same result.
			if again := Resolve(headerOf(t, tc.file), tc.opts); !slices.Equal(again.Recipients, got.Recipients) || again.Source != got.Source {
				t.Errorf("Resolve = %q from %q, Resolver.Resolve = %q from %q", again.Recipients, again.Source, got.Recipients, got.Source)
			}
		})
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("testdata/%s has no test case", filepath.Base(f))
		}
	}
	if len(files) < 15 {
		t.Errorf("corpus has %d messages, want at least 15", len(files))
	}
}

func TestResolveNilHeaderFallsBack(t *testing.T) {
	got := Resolve(nil, GlobalOptions{LocalDomains: corp, UseTo: true})
	if !got.Fallback || got.Source != "fallback" || !slices.Equal(got.Recipients, []string{"postmaster@corp.example"}) {
		t.Fatalf("Resolve(nil) = %+v", got)
	}
}

func TestResolveInvalidOptionsStillDeliver(t *testing.T) {
	h := parseHeader(t, "Delivered-To: a@corp.example\r\n")
	got := Resolve(h, GlobalOptions{
		LocalDomains: []string{"corp.example", "bad domain"},
		HeaderOrder:  []string{"Delivered-To", "Bad:Name"},
		Rewrite:      map[string]string{"x@isp.example": "*@corp.example"},
		Fallback:     "not an address",
	})
	if !slices.Equal(got.Recipients, []string{"a@corp.example"}) || got.Source != "Delivered-To" {
		t.Fatalf("got %+v", got)
	}
	want := []string{
		`fallback "not an address" is not a bare email address`,
		`header order: "Bad:Name" is not a header field name`,
		`local domain "bad domain": not a domain name: label "bad domain": " " is not allowed (letters, digits and hyphens only)`,
		`rewrite "x@isp.example" -> "*@corp.example": the target of an address must be an address`,
	}
	if !slices.Equal(got.Problems, want) {
		t.Fatalf("Problems =\n%q\nwant\n%q", got.Problems, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		opts GlobalOptions
		errs []string // substrings; nil means valid
	}{
		{"minimal", GlobalOptions{LocalDomains: corp}, nil},
		{"full", GlobalOptions{
			LocalDomains: []string{"corp.example", "corp2.example"},
			HeaderOrder:  []string{"X-Original-To", "Received"},
			UseTo:        true,
			Rewrite:      map[string]string{"*@isp.example": "*@corp.example", "a@isp.example": "b@corp2.example", "*@old.example": "c@corp.example"},
			Fallback:     "postmaster@corp.example",
		}, nil},
		{"no domains", GlobalOptions{}, []string{"no local domain"}},
		{"duplicate domain", GlobalOptions{LocalDomains: []string{"corp.example", "Corp.Example."}}, []string{"listed twice"}},
		{"bad domains", GlobalOptions{LocalDomains: []string{"", "a..b", "x@y", "*.corp.example", "corp_x.example", "192.0.2.1", "[192.0.2.1]"}},
			[]string{`"": not a domain name: empty`, `"a..b": not a domain name: empty label`, `"@" is not allowed`, `"*" is not allowed`, `"_" is not allowed`,
				"the last label is all digits", `"[" is not allowed`}},
		{"IDN domains", GlobalOptions{LocalDomains: []string{"xn--bcher-kva.example", "Bücher.example."}}, nil},
		{"duplicate header", GlobalOptions{LocalDomains: corp, HeaderOrder: []string{"Delivered-To", "delivered-to"}}, []string{`"delivered-to" is listed twice`}},
		{"bad header", GlobalOptions{LocalDomains: corp, HeaderOrder: []string{"X Original To"}}, []string{"not a header field name"}},
		{"rewrite to foreign domain", GlobalOptions{LocalDomains: corp, Rewrite: map[string]string{"*@isp.example": "*@other.example"}}, []string{"other.example is not a local domain"}},
		{"rewrite address to foreign", GlobalOptions{LocalDomains: corp, Rewrite: map[string]string{"a@isp.example": "b@other.example"}}, []string{"b@other.example is not in a local domain"}},
		{"rewrite wildcard to foreign address", GlobalOptions{LocalDomains: corp, Rewrite: map[string]string{"*@isp.example": "b@other.example"}}, []string{"b@other.example is not in a local domain"}},
		{"rewrite bad key", GlobalOptions{LocalDomains: corp, Rewrite: map[string]string{"Alias <a@isp.example>": "b@corp.example"}}, []string{"the key must be an address or *@domain"}},
		{"rewrite bad wildcard domain", GlobalOptions{LocalDomains: corp, Rewrite: map[string]string{"*@": "b@corp.example"}}, []string{"not a domain name: empty"}},
		{"rewrite bad target", GlobalOptions{LocalDomains: corp, Rewrite: map[string]string{"*@isp.example": "nobody"}}, []string{"the target must be an address or *@domain"}},
		{"fallback with name", GlobalOptions{LocalDomains: corp, Fallback: "PM <postmaster@corp.example>"}, []string{"not a bare email address"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if tc.errs == nil {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, s := range tc.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, s)
				}
			}
		})
	}
}

func TestReceivedFor(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"from a by b with ESMTP id 1 for <u@corp.example>; Mon, 1 Jan 2024 00:00:00 +0000", "<u@corp.example>"},
		{"from a by b with esmtp id 1 FOR u@corp.example; Mon", "u@corp.example"},
		{"from a by b id 1 for\t<u@corp.example>(Google Transport Security); Mon", "<u@corp.example>"},
		{"from a by b id 1 for (comment) <u@corp.example>; Mon", "<u@corp.example>"},
		{"from a by b id 1 for<u@corp.example>; Mon", "<u@corp.example>"},
		{`from a by b id 1 for "quoted local"@corp.example; Mon`, `"quoted local"@corp.example`},
		{"from a (for <x@corp.example>) by b; Mon", ""},
		{"from a (nested (for <x@corp.example>) \\) for <y@corp.example>) by b; Mon", ""},
		{"from a by b; Mon for <x@corp.example>", ""},
		{"from a by b id forward for <u@corp.example>;", "<u@corp.example>"},
		{"from platform.example by b id 1; Mon", ""},
		{"from [IPv6:2001:db8::1 for <x@y>] by b for <u@corp.example>;", "<u@corp.example>"},
		{`from "for <x@corp.example>" by b for <u@corp.example>;`, "<u@corp.example>"},
		{"from a by b for", ""},
		{"from a by b for <unterminated", ""},
		{"(qmail 12345 invoked for bounce); 6 Jun 2024 10:04:00 -0000", ""},
		{"by x with SMTP id y; Thu, 6 Jun", ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, ok := receivedFor(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("receivedFor(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a@x, b@y", []string{"a@x", "b@y"}},
		{`"Doe, John" <j@x>, k@y`, []string{`"Doe, John" <j@x>`, "k@y"}},
		{"Team: a@x, b@y;, c@z", []string{"a@x", "b@y", "c@z"}},
		{"undisclosed-recipients:;", nil},
		{"a@x (Smith, Jr.), b@y", []string{"a@x (Smith, Jr.)", "b@y"}},
		{"u@[IPv6:2001:db8::1], v@w", []string{"u@[IPv6:2001:db8::1]", "v@w"}},
		{"<@r1,@r2:u@x>, v@w", []string{"<@r1,@r2:u@x>", "v@w"}},
		{`"unclosed <a@x>, b@y`, []string{`"unclosed <a@x>`, "b@y"}},
		{"(unclosed a@x, b@y", []string{"(unclosed a@x", "b@y"}},
		{` , ,, `, nil},
	}
	for _, tc := range tests {
		if got := splitList(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRewrite(t *testing.T) {
	r, err := NewResolver(GlobalOptions{
		LocalDomains: []string{"corp.example", "corp2.example"},
		Rewrite: map[string]string{
			"*@isp.example":     "*@corp.example",
			"Boss@isp.example":  "ceo@corp.example",
			"*@old.example":     "archive@corp2.example",
			"loop@corp.example": "loop2@corp.example",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ in, want string }{
		{"jane@isp.example", "jane@corp.example"},
		{"Jane.Doe@ISP.example", "Jane.Doe@corp.example"},
		{"boss@ISP.EXAMPLE", "ceo@corp.example"}, // exact beats wildcard
		{"anyone@old.example", "archive@corp2.example"},
		{"loop@corp.example", "loop2@corp.example"}, // once, no chain
		{"loop2@corp.example", "loop2@corp.example"},
		{"x@sub.isp.example", "x@sub.isp.example"}, // wildcards do not cover subdomains
		{"x@elsewhere.example", "x@elsewhere.example"},
	}
	for _, tc := range tests {
		if got := r.rewrite(tc.in); got != tc.want {
			t.Errorf("rewrite(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestResolveUseToPrefersResentOnlyWhenLocal(t *testing.T) {
	h := parseHeader(t, "Resent-To: outsider@example.net\r\nTo: a@corp.example\r\nCc: b@corp.example\r\n")
	got := Resolve(h, GlobalOptions{LocalDomains: corp, UseTo: true})
	if !slices.Equal(got.Recipients, []string{"a@corp.example", "b@corp.example"}) || got.Source != "To, Cc" {
		t.Fatalf("got %+v", got)
	}
	h = parseHeader(t, "Resent-Cc: r@corp.example\r\nTo: a@corp.example\r\n")
	got = Resolve(h, GlobalOptions{LocalDomains: corp, UseTo: true})
	if !slices.Equal(got.Recipients, []string{"r@corp.example"}) || got.Source != "Resent-Cc" {
		t.Fatalf("got %+v", got)
	}
}

func TestResolveMultipleFieldsAndLists(t *testing.T) {
	// Several To fields (malformed but common) and a list inside an
	// envelope header are all read.
	h := parseHeader(t, "X-Envelope-To: a@corp.example, <b@corp.example>\r\nTo: c@corp.example\r\nTo: d@corp.example\r\n")
	got := Resolve(h, GlobalOptions{LocalDomains: corp, UseTo: true})
	if !slices.Equal(got.Recipients, []string{"a@corp.example", "b@corp.example"}) || got.Source != "X-Envelope-To" {
		t.Fatalf("got %+v", got)
	}
	got = Resolve(h, GlobalOptions{LocalDomains: corp, UseTo: true, HeaderOrder: []string{"Delivered-To"}})
	if !slices.Equal(got.Recipients, []string{"c@corp.example", "d@corp.example"}) || got.Source != "To" {
		t.Fatalf("got %+v", got)
	}
}

func TestResolveCapsLists(t *testing.T) {
	var b strings.Builder
	b.WriteString("To: ")
	for i := range 500 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("bad" + strings.Repeat("x", i%7) + "@")
	}
	b.WriteString("\r\nCc: ")
	for i := range 500 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("u" + string(rune('a'+i%26)) + strings.Repeat("x", i) + "@example.net")
	}
	b.WriteString("\r\n")
	got := Resolve(parseHeader(t, b.String()), GlobalOptions{LocalDomains: corp, UseTo: true})
	if len(got.Problems) != maxListed+1 || got.Problems[maxListed] != "(more left out)" {
		t.Errorf("len(Problems) = %d, last %q", len(got.Problems), got.Problems[len(got.Problems)-1])
	}
	if len(got.Ignored) != maxListed+1 {
		t.Errorf("len(Ignored) = %d", len(got.Ignored))
	}
	if !got.Fallback {
		t.Error("want the fallback")
	}
}

func TestResolveNoFallbackKnown(t *testing.T) {
	got := Resolve(parseHeader(t, "To: a@example.net\r\n"), GlobalOptions{UseTo: true})
	if len(got.Recipients) != 0 || !got.Fallback {
		t.Fatalf("got %+v", got)
	}
	if !slices.ContainsFunc(got.Problems, func(s string) bool { return strings.Contains(s, "no fallback address") }) {
		t.Errorf("Problems = %q", got.Problems)
	}
}

// TestHeaderAddresses: an address from a header becomes a recipient only
// if mailaddr's Mailbox rule accepts it as written; otherwise it is
// skipped with a problem and the fallback is used.
func TestHeaderAddresses(t *testing.T) {
	opts := GlobalOptions{LocalDomains: []string{"b.example", "bücher.example"}, Fallback: "fb@b.example"}
	for _, tt := range []struct {
		addr    string
		want    bool   // a recipient, not the fallback
		problem string // substring of the problem when skipped
	}{
		{"a@b.example", true, ""},
		{"a.b+c@b.example", true, ""},
		{"jörg@b.example", true, ""},
		{"jörg@bücher.example", true, ""},
		{"A@B.Example", true, ""},
		{"a b@b.example", false, `" " is not allowed before the @`}, // from "a b"@b.example
		{`a"b@b.example`, false, `"\"" is not allowed before the @`},
		{"a..b@b.example", false, "two in a row"},
		{strings.Repeat("a", 65) + "@b.example", false, "longer than 64 octets"},
	} {
		got := Resolve(parseHeader(t, "Delivered-To: "+(&mail.Address{Address: tt.addr}).String()), opts)
		if tt.want {
			if !slices.Equal(got.Recipients, []string{tt.addr}) || len(got.Problems) != 0 {
				t.Errorf("%q: got %+v, want it as the recipient", tt.addr, got)
			}
			continue
		}
		if !got.Fallback || !slices.ContainsFunc(got.Problems, func(p string) bool { return strings.Contains(p, tt.problem) }) {
			t.Errorf("%q: got %+v, want the fallback and a problem containing %q", tt.addr, got, tt.problem)
		}
	}
}

// TestCorpusReadsLikePipeline makes sure the testdata is really parsed by
// the pipeline's header reader (a typo in a file would otherwise silently
// test nothing).
func TestCorpusReadsLikePipeline(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.eml")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		h := headerOf(t, filepath.Base(f))
		if h.Len() < 2 {
			t.Errorf("%s: %d header fields", f, h.Len())
		}
		if !bytes.Contains(raw, []byte("\n\n")) && !bytes.Contains(raw, []byte("\r\n\r\n")) {
			t.Errorf("%s: no body separator", f)
		}
	}
}
