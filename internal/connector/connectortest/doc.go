// Package connectortest holds in-memory stand-ins for the connector's
// POP3 server and SMTP relay, and a crash injector that wraps the
// connector's interfaces, so that pipeline tests run in milliseconds and
// the product code carries no crash hooks.
//
//   - Mailbox is a POP3 maildrop shared by any number of sessions
//     (connector.Source): scripted LIST sizes, duplicate UIDLs, RETR
//     faults, failures per command, and RFC 1939's rule that only a QUIT
//     answered +OK deletes.
//   - Relay is an SMTP endpoint (connector.Relay) with a scripted reply per
//     recipient, to MAIL and to the final ".", lost replies and a SIZE
//     limit; its errors are the *relay.Error values package relay gives.
//   - Crash wraps a ledger.Ledger, an archive.Archive (keeping
//     archive.Stager), source dialers and relay dialers, and crashes the
//     whole "process" after a named step.
//
// The crash model. A Crash fires at the first event that matches its
// Trigger (a Point, optionally a mailbox, a UIDL, the Nth occurrence, a
// predicate). The step that fired it has happened: the ledger write is
// stored, the archive object committed, the relay's reply given, the DELE
// marked, the QUIT's deletions made. But its caller gets an error wrapping
// ErrCrash instead of the result, as a process that died just after the
// step would never have seen it. From then on every call on every wrapped
// object fails with ErrCrash and has no effect: no ledger read or write,
// no lease renewal or release (the lease runs out by itself), no archive
// write or commit, no POP3 command (so no QUIT: the server rolls every
// DELE back), no SMTP command; a stream in flight (RETR, archive Put, the
// DATA body) fails at its next read, and a final "." not yet sent is
// never sent (the wrapper holds it, through Envelope.BeforeEnd). Every
// source and relay connection is closed when the crash fires, or when the
// call under way on it returns, as the kernel closes a dead process's
// sockets. Close still closes the wrapped object (a restarted process must
// be able to reopen the ledger file) and reports ErrCrash.
//
// One exception to "the caller gets nothing": Send at AfterRelayReply
// returns its outcomes together with the ErrCrash error, so the connector
// can count the accepted reply it could not record
// (Result.UnrecordedReplies). A call already under way on another
// goroutine when the crash fires completes its effect and returns
// ErrCrash.
//
// Limits: these are models, not servers; the Dovecot and Postfix tests
// remain the end-to-end proof of each guarantee. The Mailbox and Relay do
// not parse or dot-stuff anything; a crash cannot cut a single ledger
// write in half (the stores' own tests cover torn writes); and
// AfterRelayReply's mailbox and UIDL are inferred from the archived copy
// opened last, which is exact for one poll at a time (see Event).
package connectortest
