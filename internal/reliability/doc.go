// Package reliability is the connector's reliability suite: scenarios that
// crash, overlap, starve and feed garbage to the whole pipeline against
// real servers (Dovecot, the popconn binary) and scripted fault servers,
// and one checker that every scenario ends with.
//
// The invariants (Check):
//
//   - lost = 0: every message that was on the POP3 server is, at the end,
//     accepted by the SMTP side for every recipient, set aside (a recorded
//     disposition: a badmail copy of the served bytes with its reason, or
//     a deletion the undeliverable option allows), or still on the POP3
//     server with a ledger record giving the reason and the next attempt
//     (or, when the poll was refused before any record could exist, with
//     that refusal as the reason).
//   - deleted-undelivered = 0: nothing left the POP3 server without a
//     ledger record of its own (same UIDL and same digest) showing every
//     recipient accepted it or recording its disposition.
//   - duplicates are counted per message and recipient; each scenario
//     states how many its faults can cause (only the window between the
//     final "." of DATA and recording the reply may produce them).
//   - archive = source: every archived object hashes to its ledger digest
//     and to the bytes the POP3 server served under that UIDL; every relayed
//     copy, once the trace field is removed, equals those bytes.
//
// Messages are identified by the digest of the bytes the server serves,
// with the X-Test-Seq header and the trace field's id as fallbacks to name
// a message whose relayed bytes differ.
//
// The hostile corpus (hostile.go, testdata/hostile) is over a hundred
// messages in thirteen categories (empty and one-byte, bare CR and LF,
// NUL and control bytes, long lines and huge headers, broken MIME, deep
// nesting, dot lines, SMTP smuggling shapes, odd Message-IDs, raw UTF-8
// and broken encodings, envelopes, mail loops), each a .eml file with a
// row in testdata/hostile/MANIFEST.tsv: its category, its expected outcome
// (relayed as served, quarantined in badmail, or held because the server
// sends other than it lists), and what a real Dovecot lists and serves for
// it (size, SHA-256, and how that differs from the stored bytes). The
// generator writes the files and the manifest:
//
//	POPCONN_INTEGRATION=1 go test ./internal/reliability -run 'TestHostileCorpus(UpToDate|Served)' -update
//
// and the corpus scenario runs every case from one Dovecot mailbox through
// the whole pipeline, checking each outcome and that the mailbox drains.
//
// Every scenario is a Case with a Run function over testing.TB, so the
// same code runs as `go test ./internal/reliability` (Short options) and
// as the long harness infra/reliability (Long options), which prints one
// table row per case. The ledger is chosen by a LedgerFactory (bbolt by
// default) so another implementation can run the same scenarios; the
// process-kill scenario always uses the ledger the popconn binary opens
// from its configuration.
//
// What it cannot do: it cannot stage a kernel crash or power loss (a
// SIGKILL keeps the page cache), and a scenario only shows the invariants
// for the interleavings it happened to hit; the random ones print their
// seed so a failure can be replayed.
package reliability
