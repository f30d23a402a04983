package reliability

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// ManifestPath is the corpus manifest, relative to this package.
const ManifestPath = "testdata/hostile/MANIFEST.tsv"

// ManifestRow is one case of the manifest: a tab-separated line with the
// columns in this order.
type ManifestRow struct {
	Name     string  // the .eml file name without ".eml", or a gen-* name
	Category string  // one of Categories
	Outcome  Outcome // relayed, quarantined or held
	// Expect is what the outcome check looks for beyond the outcome: for
	// relayed, what the connector puts in front ("trace", or
	// "trace,message-id" when the header has no Message-ID); for
	// quarantined, a phrase of the badmail reason; for held, how many
	// octets the served bytes differ by ("1 octet short").
	Expect string
	// ListSize, ServedSize and ServedSHA256 are what Dovecot lists and
	// what a raw RETR returns after dot-unstuffing.
	ListSize     int64
	ServedSize   int64
	ServedSHA256 string
	// Served says how the served bytes differ from the stored ones
	// (describeServed).
	Served string
}

const manifestHeader = `# The hostile corpus: one case per line, tab-separated. Written by
#   POPCONN_INTEGRATION=1 go test ./internal/reliability -run 'TestHostileCorpus(UpToDate|Served)' -update
# from hostileTable (name, category, outcome, the reason phrase of a
# quarantined case) and from what a real Dovecot serves (a raw LIST and RETR,
# after dot-unstuffing). Outcomes assume the undeliverable action "badmail".
# expect: relayed: what the connector puts in front; quarantined: a phrase
# of the badmail reason; held: how far the served bytes fall short of LIST.
`

var manifestColumns = []string{"name", "category", "outcome", "expect", "list_size", "served_size", "served_sha256", "served"}

// FormatManifest renders rows as the manifest file.
func FormatManifest(rows []ManifestRow) []byte {
	var b bytes.Buffer
	b.WriteString(manifestHeader)
	b.WriteString(strings.Join(manifestColumns, "\t") + "\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Name, r.Category, r.Outcome, r.Expect, r.ListSize, r.ServedSize, r.ServedSHA256, r.Served)
	}
	return b.Bytes()
}

// ParseManifest reads a manifest file.
func ParseManifest(data []byte) ([]ManifestRow, error) {
	var rows []ManifestRow
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != len(manifestColumns) {
			return nil, fmt.Errorf("%s:%d: %d columns, want %d", ManifestPath, n, len(f), len(manifestColumns))
		}
		if f[0] == manifestColumns[0] {
			continue
		}
		r := ManifestRow{Name: f[0], Category: f[1], Outcome: Outcome(f[2]), Expect: f[3], ServedSHA256: f[6], Served: f[7]}
		var err1, err2 error
		r.ListSize, err1 = strconv.ParseInt(f[4], 10, 64)
		r.ServedSize, err2 = strconv.ParseInt(f[5], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s:%d: sizes %q, %q", ManifestPath, n, f[4], f[5])
		}
		switch r.Outcome {
		case Relayed, Quarantined, Held, Kept:
		default:
			return nil, fmt.Errorf("%s:%d: outcome %q", ManifestPath, n, f[2])
		}
		rows = append(rows, r)
	}
	return rows, sc.Err()
}

// Manifest returns the committed manifest.
func Manifest() ([]ManifestRow, error) {
	data, err := hostileFS.ReadFile(ManifestPath)
	if err != nil {
		return nil, err
	}
	return ParseManifest(data)
}

// ServedRow is the manifest row of a case from what it is (stored bytes,
// category, outcome, reason) and what Dovecot served for it.
func ServedRow(name, category string, outcome Outcome, reason string, stored []byte, s Served, served []byte) ManifestRow {
	r := ManifestRow{Name: name, Category: category, Outcome: outcome, ListSize: s.ListSize, ServedSize: s.Size, ServedSHA256: s.Digest,
		Served: describeServed(stored, served, s.ListSize)}
	switch outcome {
	case Relayed:
		r.Expect = "trace"
		if !hasMessageID(served) {
			r.Expect = "trace,message-id"
		}
	case Quarantined:
		r.Expect = reason
	case Held, Kept:
		r.Expect = octets(s.ListSize-s.Size) + " short"
	}
	return r
}

func octets(n int64) string {
	if n == 1 || n == -1 {
		return fmt.Sprintf("%d octet", n)
	}
	return fmt.Sprintf("%d octets", n)
}

// describeServed says in a few words how served (listed as listSize)
// differs from what was stored in the maildir.
func describeServed(stored, served []byte, listSize int64) string {
	if bytes.Equal(stored, served) && int64(len(served)) == listSize {
		return "served unchanged"
	}
	// What Dovecot does to every message: bare LF as CRLF, and a CRLF
	// after a last line without one (an empty message included), which
	// its LIST does not count.
	var changes []string
	form := bareLFToCRLF(stored)
	if !bytes.Equal(form, stored) {
		changes = append(changes, "bare LF served as CRLF")
	}
	if !bytes.HasSuffix(form, []byte("\n")) {
		form = append(form, '\r', '\n')
		changes = append(changes, "final CRLF added")
	}
	if bytes.Equal(form, served) {
		if d := int64(len(served)) - listSize; d != 0 {
			changes = append(changes, fmt.Sprintf("LIST is %s less", octets(d)))
		}
		return strings.Join(changes, ", ")
	}
	if int64(len(served)) != listSize {
		switch {
		case len(served) == 0 && len(stored) > 0 && stored[0] == '.':
			return fmt.Sprintf("first line is a lone dot, not stuffed: served as the terminator, 0 of %s", octets(listSize))
		case len(stored) > 0 && stored[0] == '.':
			return fmt.Sprintf("first line's dot not stuffed: %s short of LIST", octets(listSize-int64(len(served))))
		}
		return fmt.Sprintf("RETR gives %s, LIST %d", octets(int64(len(served))), listSize)
	}
	return "changed" + firstDiff(served, stored)
}

// hasMessageID reports whether msg's header section holds a Message-ID
// field, whatever its value (an empty one too: RFC 5322 allows one field,
// so the connector adds none). The header section ends at the first empty
// line; a line without a colon before it does not end it. A bare CR also
// starts a line here: the relay passes it on, and a receiver that breaks
// lines on it would see the field.
func hasMessageID(msg []byte) bool {
	for _, line := range headerLines(msg) {
		for _, part := range bytes.Split(line, []byte("\r")) {
			name, _, ok := bytes.Cut(part, []byte(":"))
			if ok && strings.EqualFold(string(bytes.TrimRight(name, " \t")), "Message-ID") {
				return true
			}
		}
	}
	return false
}
