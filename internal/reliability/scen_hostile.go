package reliability

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/testenv"
)

// HostileCases are scenario 6: hostile and malformed mail, each relayed
// byte for byte (apart from the trace field) or left on the server with a
// reason; never a crash, never a silent drop.
func HostileCases() []Case {
	return []Case{
		{"hostile/dovecot", runHostileDovecot},
		{"hostile/exact-server", runHostileExact},
		{"hostile/dovecot-leading-dot", runDovecotLeadingDot},
	}
}

// runHostileDovecot serves the corpus (plus the generated large messages)
// from a real Dovecot. Dovecot serves bare LF as CRLF; the archive is
// compared with what an independent raw RETR returns.
func runHostileDovecot(t T, o *Options) Row {
	names, msgs, err := HostileCorpus()
	if err != nil {
		t.Fatal(err)
	}
	gn, gm := GeneratedHostile(o.BigMessage)
	names, msgs = append(names, gn...), append(msgs, gm...)
	// Dovecot 2.3 does not dot-stuff a message's first line (see
	// runDovecotLeadingDot); such messages get their own case.
	var skipped []string
	for i := 0; i < len(msgs); i++ {
		if len(msgs[i]) > 0 && msgs[i][0] == '.' {
			skipped = append(skipped, names[i])
			names, msgs = append(names[:i:i], names[i+1:]...), append(msgs[:i:i], msgs[i+1:]...)
			i--
		}
	}
	r := NewRig(t, o, RigOptions{Dovecot: true, Script: &testenv.SMTPScript{MaxLineLength: 4 << 20}}) // long lines must arrive byte for byte
	r.FreshRelay = true
	r.RelayOpts.Timeout = 5 * time.Second // per read or write; the bare-CR message waits it out each poll
	r.MailboxEdit = func(mb *connector.Mailbox) { mb.PollTimeout = 10 * time.Minute }
	r.SeedDovecot(names, msgs)
	var changed []string
	for i, m := range msgs {
		if digestOf(m) != r.Messages[i].Digest {
			changed = append(changed, names[i])
		}
	}
	r.PollUntilDone(4)
	row := r.Row("hostile/dovecot", 0)
	checkNoPanic(t, r)
	row.Notes = append(row.Notes, fmt.Sprintf("not served by Dovecot here (first line starts with a dot): %s", strings.Join(skipped, ", ")))
	row.Notes = append(row.Notes, fmt.Sprintf("Dovecot served %d of %d messages differently from the stored bytes (bare LF as CRLF, final CRLF added): %s",
		len(changed), len(msgs), strings.Join(changed, ", ")))
	row.Notes = append(row.Notes, undeliveredReasons(t, r)...)
	return row
}

// runHostileExact serves the committed corpus byte for byte from a
// pop3test server, bare LF included, so what the relay does with bytes
// Dovecot would have rewritten shows.
func runHostileExact(t T, o *Options) Row {
	names, msgs, err := HostileCorpus()
	if err != nil {
		t.Fatal(err)
	}
	gn, gm := GeneratedHostile(1 << 20)
	names, msgs = append(names, gn[:2]...), append(msgs, gm[:2]...)                    // not the big one
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{MaxLineLength: 4 << 20}}) // long lines must arrive byte for byte
	r.FreshRelay = true
	r.RelayOpts.Timeout = 5 * time.Second // per read or write; the bare-CR message waits it out each poll
	r.PopOpts.Timeout = 30 * time.Second
	r.ServePOP3(names, msgs, nil)
	r.PollUntilDone(4)
	row := r.Row("hostile/exact-server", 0)
	checkNoPanic(t, r)
	if row.RelayNormalised > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("%d message(s) relayed with bare LF sent as CRLF (RFC 5321 §2.3.8), so not byte-equal to the archive", row.RelayNormalised))
	}
	row.Notes = append(row.Notes, undeliveredReasons(t, r)...)
	return row
}

// runDovecotLeadingDot: Dovecot 2.3.19 does not dot-stuff the first line
// of a message (RFC 1939 §3 requires it for every line). A message whose
// first line is ".abc" is served as ".abc", which a correct client reads
// as "abc"; one whose first line is "." is served as the terminator, so
// the client reads an empty message and the rest of it as the next
// responses. LIST gives the true size in both cases. The messages are
// compared with the bytes stored in the maildir (CRLF, so Dovecot would
// otherwise serve them unchanged): the connector must not delete what it
// did not fetch whole.
func runDovecotLeadingDot(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Dovecot: true, Script: &testenv.SMTPScript{MaxLineLength: 4 << 20}}) // long lines must arrive byte for byte
	ids := []string{"seq-1", "leading-dot-text", "seq-3", "leading-dot-alone", "seq-5"}
	msgs := [][]byte{GenMessage(1), []byte(".abc first line starts with a dot\r\nSubject: x\r\n\r\nbody\r\n"),
		GenMessage(3), []byte(".\r\nSubject: first line is a lone dot\r\n\r\nbody\r\n"), GenMessage(5)}
	for i, m := range msgs {
		u := r.Dovecot.Deliver(t, popUser, m)
		r.Messages = append(r.Messages, Message{ID: ids[i], UIDL: u, Digest: digestOf(m), Size: int64(len(m))})
	}
	r.PollUntilDone(4)
	row := r.Row("hostile/dovecot-leading-dot", 0)
	if row.DeletedUndelivered > 0 || row.Lost > 0 {
		t.Errorf("BUG: a message whose first line starts with a dot was fetched short from Dovecot (RETR shorter than LIST) and then deleted: lost %d, deleted-undelivered %d", row.Lost, row.DeletedUndelivered)
	}
	for i, res := range r.Results {
		row.Notes = append(row.Notes, fmt.Sprintf("poll %d: delivered %d deleted %d err %v", i+1, res.Delivered, res.Deleted, res.Err))
	}
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
// reason.
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
		reason := rec.LastError
		if len(reason) > 160 {
			reason = reason[:157] + "..."
		}
		out = append(out, fmt.Sprintf("left on the server: %s: %s", byUIDL[rec.UIDL], reason))
	}
	sort.Strings(out)
	return out
}
