package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// Message is one message a scenario put on the POP3 server.
type Message struct {
	// ID names the message in reports: "seq-17" for generated mail (its
	// X-Test-Seq header), the corpus file name for hostile mail.
	ID string
	// UIDL is the server's unique-id for it. Two messages may share one
	// when a scenario stages UIDL reuse; Digest tells them apart.
	UIDL string
	// Digest and Size describe the bytes the POP3 server serves for RETR
	// after dot-unstuffing: what the archive must hold.
	Digest string
	Size   int64
}

// Observation is what the checker looks at when a scenario has ended.
type Observation struct {
	Messages []Message
	// Recipients is the mailbox's deliver_to list: a message is delivered
	// when every one of them accepted it.
	Recipients []string
	// OnServer holds the IDs of the messages still on the POP3 server.
	OnServer map[string]bool
	// Received are the transactions the SMTP side accepted.
	Received []testenv.Received
	// Records is the ledger of the mailbox. It may also hold snapshots
	// taken earlier in the scenario (a UIDL reused for a new message
	// replaces its record). LedgerUnreadable says the scenario made the
	// ledger unreadable on purpose (a corrupt file); records are then not
	// required for messages still on the server.
	Records          []*ledger.Record
	LedgerUnreadable bool
	// Archive opens archived objects by key.
	Archive archive.Archive
	// Normalised maps the digest of a message's SMTP form (bare LF sent as
	// CRLF, which RFC 5321 §2.3.8 requires) to its ID, for sources that
	// serve bare LF: a relayed copy in that form counts in RelayNormalised,
	// not as a mismatch.
	Normalised map[string]string
	// Refusal is the poll-level error that explains why messages still on
	// the server have no ledger record (no UIDL, a login refused, an
	// unwritable archive). Nil means every such message needs a record
	// with a reason and a next attempt.
	Refusal error
	// NoticeTo is the postmaster address of the connector's notices: a
	// transaction for it alone is a notice, counted in Notices.
	NoticeTo string
}

// Tally is the checker's verdict on one Observation.
type Tally struct {
	Messages int
	// Delivered: every recipient accepted the message at least once.
	Delivered int
	// Waiting: on the server, not delivered, and the ledger holds the
	// reason and the next attempt (or that automatic attempts gave up, or
	// a disposition whose deletion is still to come).
	Waiting int
	// Refused: on the server without a record, explained by
	// Observation.Refusal (or an unreadable ledger).
	Refused int
	// SetAside: gone from the server, not delivered, with a recorded
	// disposition of its own: a badmail copy (checked against the served
	// bytes with the archive) or a deletion the undeliverable option
	// allowed.
	SetAside int
	// Lost: not delivered to every recipient, and either gone from the
	// server or on it with nothing saying why (no record, no refusal).
	Lost int
	// DeletedUndelivered: gone from the server without a ledger record of
	// its own (same UIDL and digest) showing every recipient accepted.
	DeletedUndelivered int
	// Duplicates counts extra accepted copies, per message and recipient.
	Duplicates int
	// ArchiveMismatches counts ledger records whose archived object does
	// not hash to the record's digest or to the bytes the server served
	// under that UIDL.
	ArchiveMismatches int
	// RelayMismatches counts accepted copies whose bytes, once the trace
	// field (and a generated Message-ID) are removed, differ from what the
	// server served.
	RelayMismatches int
	// RelayNormalised counts accepted copies equal to the served bytes in
	// their SMTP form (bare LF as CRLF) but not byte for byte.
	RelayNormalised int
	// Unmatched counts accepted transactions no seeded message explains.
	Unmatched int
	// Notices counts transactions to Observation.NoticeTo.
	Notices int
	// Problems has one line per finding, for the report.
	Problems []string
}

// OK reports whether the invariants hold: nothing lost, nothing deleted
// without a recorded delivery, archive equal to the source, every relayed
// copy equal to the archive and explained, and no more than allowedDups
// duplicates.
func (t Tally) OK(allowedDups int) bool {
	return t.Lost == 0 && t.DeletedUndelivered == 0 && t.ArchiveMismatches == 0 &&
		t.RelayMismatches == 0 && t.Unmatched == 0 && t.Duplicates <= allowedDups
}

func (t *Tally) problem(format string, args ...any) {
	t.Problems = append(t.Problems, fmt.Sprintf(format, args...))
}

// Check evaluates the reliability invariants over o.
func Check(ctx context.Context, o Observation) Tally {
	var t Tally
	t.Messages = len(o.Messages)
	byDigest := map[string]*Message{}
	byID := map[string]*Message{}
	for i := range o.Messages {
		m := &o.Messages[i]
		byDigest[m.Digest] = m
		byID[m.ID] = m
	}
	// Records by UIDL (several when a UIDL was reused, the ledger keeps
	// one) and by archive object name (the trace field's id).
	recsByUIDL := map[string][]*ledger.Record{}
	recByTraceID := map[string]*ledger.Record{}
	for _, r := range o.Records {
		recsByUIDL[serverUIDL(r)] = append(recsByUIDL[serverUIDL(r)], r)
		if r.ArchiveKey != "" {
			recByTraceID[strings.TrimSuffix(path.Base(r.ArchiveKey), ".eml")] = r
		}
	}

	// What the SMTP side accepted, per message and recipient.
	accepted := map[string]map[string]int{}
	for i, rcv := range o.Received {
		if o.NoticeTo != "" && len(rcv.To) == 1 && strings.EqualFold(rcv.To[0], o.NoticeTo) {
			t.Notices++
			continue
		}
		body, traceID := StripAdded(rcv.Data)
		d := digestOf(body)
		// The trace id names the archive object, hence the UIDL: among
		// the messages served under it, the one with these bytes. (Two
		// messages may serve identical bytes; the UIDL tells them apart.)
		rec := recByTraceID[traceID]
		var m *Message
		if rec != nil {
			m = messageWith(o.Messages, serverUIDL(rec), d)
		}
		if m == nil {
			m = byDigest[d]
		}
		if id, ok := o.Normalised[d]; ok && m == nil {
			m = byID[id]
			t.RelayNormalised++
		}
		if m == nil {
			// Bytes differ from every served message: find which message
			// it was meant to be, by the trace id or X-Test-Seq.
			var want []byte
			if rec != nil {
				m = messageWith(o.Messages, serverUIDL(rec), rec.SHA256)
				if o.Archive != nil && rec.Size < 64<<20 {
					want, _ = readObject(ctx, o.Archive, rec.ArchiveKey)
				}
			}
			if m == nil {
				if seq := headerValue(body, "X-Test-Seq"); seq != "" {
					m = byID["seq-"+seq]
				}
			}
			if m == nil {
				t.Unmatched++
				t.problem("accepted transaction %d (%d bytes, trace id %q) matches no seeded message", i, len(rcv.Data), traceID)
				continue
			}
			t.RelayMismatches++
			t.problem("%s: relayed bytes (%d, sha256 %.12s) differ from the served bytes (%d, sha256 %.12s)%s",
				m.ID, len(body), d, m.Size, m.Digest, firstDiff(body, want))
		}
		if accepted[m.ID] == nil {
			accepted[m.ID] = map[string]int{}
		}
		for _, to := range rcv.To {
			accepted[m.ID][strings.ToLower(to)]++
		}
	}

	for i := range o.Messages {
		m := &o.Messages[i]
		acc := accepted[m.ID]
		all := len(o.Recipients) > 0
		for _, rc := range o.Recipients {
			if acc[strings.ToLower(rc)] == 0 {
				all = false
			}
		}
		for rc, n := range acc {
			if n > 1 {
				t.Duplicates += n - 1
				t.problem("%s: %d copies accepted for %s", m.ID, n, rc)
			}
		}
		rec, own := recordFor(recsByUIDL[m.UIDL], m.Digest)
		onServer := o.OnServer[m.ID]

		if !onServer && !(own && (rec.Delivered() || rec.Disposition != "")) {
			t.DeletedUndelivered++
			switch {
			case rec == nil:
				t.problem("%s (uidl %s): gone from the server with no ledger record", m.ID, m.UIDL)
			case !own:
				t.problem("%s (uidl %s): gone from the server; the ledger record under its UIDL is another message's (sha256 %.12s, served %.12s)", m.ID, m.UIDL, rec.SHA256, m.Digest)
			default:
				t.problem("%s (uidl %s): gone from the server, ledger says not delivered (%s)", m.ID, m.UIDL, rec.LastError)
			}
		}
		switch {
		case all:
			t.Delivered++
		case !onServer && own && rec.Disposition != "":
			t.SetAside++
		case onServer && own && rec.GaveUp:
			t.Waiting++
		case onServer && own && rec.Disposition != "":
			// Set aside, its deletion not confirmed yet: the next poll
			// deletes it whatever happens to delivery.
			t.Waiting++
		case onServer && own && rec.LastError != "" && (!rec.NextAttempt.IsZero() || !rec.NextRefetch.IsZero()):
			// Waiting for its next attempt, or (held) its next fetch.
			t.Waiting++
		case onServer && own && rec.GaveUp && (rec.BadmailKey != "" || rec.Held != ""):
			// Given up and kept on the server (undeliverable "leave"):
			// no more attempts; the server's copy stays, with a badmail
			// copy (or, held, the archived bytes it served).
			t.Waiting++
		case onServer && heldFor(recsByUIDL[m.UIDL], m.Size):
			// Held: what the server sent did not match its LIST size, so
			// the archived bytes are by definition not this message's;
			// the record names the reason and the next fetch.
			t.Waiting++
		case onServer && (o.LedgerUnreadable || (rec == nil && o.Refusal != nil)):
			t.Refused++
		case onServer:
			t.Lost++
			if rec == nil {
				t.problem("%s: on the server, undelivered, with no ledger record and no poll error explaining why", m.ID)
			} else {
				t.problem("%s: on the server, undelivered, ledger has no reason/next attempt (error %q, next attempt %v, next fetch %v)", m.ID, rec.LastError, rec.NextAttempt, rec.NextRefetch)
			}
		default:
			t.Lost++
			t.problem("%s: gone from the server and not accepted for every recipient (accepted: %v)", m.ID, acc)
		}
	}

	// Archive = source.
	served := map[string][]*Message{}
	for i := range o.Messages {
		served[o.Messages[i].UIDL] = append(served[o.Messages[i].UIDL], &o.Messages[i])
	}
	checked := map[string]bool{}
	for _, r := range o.Records {
		if r.ArchiveKey == "" || checked[r.ArchiveKey+" "+r.SHA256] {
			continue
		}
		checked[r.ArchiveKey+" "+r.SHA256] = true
		if o.Archive == nil {
			t.ArchiveMismatches++
			t.problem("record %s: no archive to check", r.UIDL)
			continue
		}
		n, d, err := digestObject(ctx, o.Archive, r.ArchiveKey)
		if err != nil {
			t.ArchiveMismatches++
			t.problem("record %s: archive %s: %v", r.UIDL, r.ArchiveKey, err)
			continue
		}
		if d != r.SHA256 || n != r.Size {
			t.ArchiveMismatches++
			t.problem("record %s: archived object is %d bytes sha256 %.12s, ledger says %d bytes %.12s", r.UIDL, n, d, r.Size, r.SHA256)
		}
		if r.Disposition == ledger.DispositionBadmail {
			t.checkBadmail(ctx, o.Archive, r)
		}
		if r.Held != "" {
			// The record says the fetch did not match the server's LIST:
			// the archive holds what arrived, kept for inspection; the
			// message itself stays on the server (checked above).
			continue
		}
		match := false
		for _, m := range served[serverUIDL(r)] {
			match = match || m.Digest == d
		}
		if !match && len(served[serverUIDL(r)]) > 0 {
			t.ArchiveMismatches++
			t.problem("record %s: archived bytes (sha256 %.12s) are not what the server served under that UIDL", r.UIDL, d)
		}
	}
	return t
}

// checkBadmail counts a mismatch unless r's badmail copy hashes to its
// digest and its reason object is there.
func (t *Tally) checkBadmail(ctx context.Context, a archive.Archive, r *ledger.Record) {
	n, d, err := digestObject(ctx, a, r.BadmailKey)
	switch {
	case r.BadmailKey == "":
		t.ArchiveMismatches++
		t.problem("record %s: disposition badmail without a badmail key", r.UIDL)
	case err != nil:
		t.ArchiveMismatches++
		t.problem("record %s: badmail copy %s: %v", r.UIDL, r.BadmailKey, err)
	case d != r.SHA256 || n != r.Size:
		t.ArchiveMismatches++
		t.problem("record %s: badmail copy is %d bytes sha256 %.12s, ledger says %d bytes %.12s", r.UIDL, n, d, r.Size, r.SHA256)
	}
	if r.BadmailKey != "" {
		if _, _, err := digestObject(ctx, a, r.BadmailKey+".reason.json"); err != nil {
			t.ArchiveMismatches++
			t.problem("record %s: badmail reason: %v", r.UIDL, err)
		}
	}
}

// SMTPForm returns b as an SMTP client must send it (RFC 5321 §2.3.8):
// every LF not preceded by CR becomes CRLF, and a non-empty message gets a
// final CRLF.
func SMTPForm(b []byte) []byte {
	out := bareLFToCRLF(b)
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

// bareLFToCRLF turns every LF not preceded by CR into CRLF.
func bareLFToCRLF(b []byte) []byte {
	out := make([]byte, 0, len(b)+16)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// recordFor picks m's record among those stored under its UIDL: the
// latest one holding m's digest (own), else one not yet archived (own: it
// can only be about the message now under that UIDL), else another
// message's record (not own).
func recordFor(recs []*ledger.Record, digest string) (rec *ledger.Record, own bool) {
	var unarchived, other *ledger.Record
	for _, r := range recs {
		switch {
		case r.SHA256 == digest:
			if rec == nil || r.Version >= rec.Version {
				rec = r
			}
		case r.SHA256 == "":
			unarchived = r
		default:
			other = r
		}
	}
	switch {
	case rec != nil:
		return rec, true
	case unarchived != nil:
		return unarchived, true
	}
	return other, false
}

// messageWith returns the message served under uidl with digest d.
func messageWith(msgs []Message, uidl, d string) *Message {
	for i := range msgs {
		if msgs[i].UIDL == uidl && msgs[i].Digest == d {
			return &msgs[i]
		}
	}
	return nil
}

func readObject(ctx context.Context, a archive.Archive, key string) ([]byte, error) {
	rc, err := a.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func digestObject(ctx context.Context, a archive.Archive, key string) (int64, string, error) {
	rc, err := a.Open(ctx, key)
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return n, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var traceIDRe = regexp.MustCompile(`\bid <([^>]*)>`)

// StripAdded removes what the connector puts in front of a relayed
// message: its Received: field (with folded continuation lines) and, when
// the message had none, the generated "Message-ID: <popconn.…>" field. It
// returns the rest and the trace field's id (the archive object's name),
// or data unchanged and "" when it does not start with a Received: field.
func StripAdded(data []byte) (rest []byte, traceID string) {
	_, _, rest, traceID = splitAdded(data)
	return rest, traceID
}

// splitAdded is StripAdded that also returns the fields it removed: the
// Received field and the generated Message-ID field (nil when absent), each
// with its CRLF.
func splitAdded(data []byte) (trace, messageID, rest []byte, traceID string) {
	if !bytes.HasPrefix(data, []byte("Received: ")) {
		return nil, nil, data, ""
	}
	end := bytes.Index(data, []byte("\r\n"))
	for end >= 0 && end+2 < len(data) && (data[end+2] == ' ' || data[end+2] == '\t') {
		j := bytes.Index(data[end+2:], []byte("\r\n"))
		if j < 0 {
			end = -1
			break
		}
		end += 2 + j
	}
	if end < 0 {
		return nil, nil, data, ""
	}
	if m := traceIDRe.FindSubmatch(data[:end]); m != nil {
		traceID = string(m[1])
	}
	trace, rest = data[:end+2], data[end+2:]
	if bytes.HasPrefix(rest, []byte("Message-ID: <popconn.")) {
		if k := bytes.Index(rest, []byte("\r\n")); k >= 0 {
			messageID, rest = rest[:k+2], rest[k+2:]
		}
	}
	return trace, messageID, rest, traceID
}

// headerValue returns the first value of header name in msg's header
// section, or "" (a tolerant scan: any line ending, no unfolding).
func headerValue(msg []byte, name string) string {
	prefix := strings.ToLower(name) + ":"
	for _, line := range headerLines(msg) {
		if len(line) > len(prefix) && strings.ToLower(string(line[:len(prefix)])) == prefix {
			return strings.TrimSpace(string(line[len(prefix):]))
		}
	}
	return ""
}

// headerLines returns the lines of msg's header section, without their
// line ends: up to the first line that holds nothing or only CR (LF ends a
// line, CR LF or bare).
func headerLines(msg []byte) [][]byte {
	var out [][]byte
	for len(msg) > 0 {
		i := bytes.IndexByte(msg, '\n')
		line := msg
		if i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		out = append(out, line)
	}
	return out
}

// firstDiff describes where got first differs from want ("" when want is
// unknown).
func firstDiff(got, want []byte) string {
	if want == nil {
		return ""
	}
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			lo := max(i-12, 0)
			return fmt.Sprintf(" at byte %d: got %q, want %q", i, got[lo:min(i+12, len(got))], want[lo:min(i+12, len(want))])
		}
	}
	return fmt.Sprintf(": lengths %d and %d share the first %d bytes", len(got), len(want), n)
}

// sortedProblems returns the problems, sorted, at most n of them.
func sortedProblems(p []string, n int) []string {
	out := append([]string(nil), p...)
	sort.Strings(out)
	if len(out) > n {
		out = append(out[:n], fmt.Sprintf("... and %d more", len(p)-n))
	}
	return out
}

// serverUIDL is the server's UIDL of a ledger record: the connector keys a
// message whose UIDL the server reused as "<uidl> <generation>".
func serverUIDL(r *ledger.Record) string {
	uidl, _, _ := strings.Cut(r.UIDL, " ")
	return uidl
}

// heldFor reports whether the current record among recs for a message of
// the given served size is held for a size mismatch, with a next fetch.
func heldFor(recs []*ledger.Record, size int64) bool {
	for _, r := range recs {
		if r.Held != "" && !r.NextRefetch.IsZero() && r.ListSize == size {
			return true
		}
	}
	return false
}
