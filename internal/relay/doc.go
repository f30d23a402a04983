// Package relay delivers messages over SMTP (RFC 5321) to the Exchange
// endpoint. It uses github.com/emersion/go-smtp's client for the greeting,
// EHLO, AUTH and QUIT, and its own writer for transactions when the server
// offers PIPELINING, and adds the policies the connector depends on: TLS that is never
// silently downgraded, per-recipient outcomes, a deadline on every network
// read and write, streaming of the body in constant memory, a transcript at
// debug level that never contains credentials, and error values that say
// whether retrying can help.
//
// # Guarantees
//
//   - One Outcome per envelope recipient, in envelope order, for every call to
//     Send or Verify, whatever happened (RFC 5321 §3.3: each RCPT has its own
//     reply; the reply to the final "." applies to every recipient accepted at
//     RCPT in that transaction). When the server takes fewer recipients per
//     transaction than the envelope has, one Send runs several transactions
//     (see Too many recipients); each recipient carries the final reply of
//     the transaction whose RCPT accepted it.
//   - Send returns a non-nil error only when the connection can no longer be
//     used: network failure, timeout, cancelled context, a 421 reply (RFC 5321
//     §3.8), an unreadable body. Every recipient without a final outcome then
//     carries a temporary *Error describing it. The caller must Close and
//     redial.
//   - The body is copied through fixed buffers (32 KiB, and one 128 KiB
//     chunk with CHUNKING): memory does not grow with the message size, and
//     at most 4 BDAT replies are left unread at any time. If reading the
//     body fails part-way, or Envelope.BeforeEnd returns an error, the
//     connection is closed without sending the terminating "." (or
//     "BDAT 0 LAST") so that no truncated message can be delivered (SMTP has
//     no way to abort DATA, RFC 5321 §4.1.1.4).
//   - Envelope.BeforeEnd is called at most once per Send, before the first
//     terminating "." (or "BDAT 0 LAST") of that Send; the further
//     transactions of a split message end without it.
//   - Every reply owed is read before Send returns: no reply is left
//     unread between transactions, whichever path sent them. A reply that is
//     not a valid SMTP reply makes the connection unusable.
//   - Every read and write on the connection gets a fresh deadline of
//     Options.Timeout (and never later than the context's deadline), including
//     each write of the body and the wait for the reply to the final "."
//     (RFC 5321 §4.5.3.2 recommends longer timeouts; Exchange answers well
//     within one minute, and a stuck server must not stall the connector).
//     Cancelling the context interrupts a blocked read or write at once and
//     makes the connection unusable.
//   - TLS: "starttls" refuses to continue if the server does not offer
//     STARTTLS or the upgrade fails; nothing is sent in plaintext after EHLO.
//     Certificates are verified against Options.TLSConfig's roots (the system
//     roots if nil) unless the caller set InsecureSkipVerify. Bytes the server
//     sends after its 220 reply to STARTTLS but before the handshake are
//     treated as an attack (plaintext command injection, CVE-2011-0411) and
//     fail the dial. After the handshake the client forgets all
//     it learned and says EHLO again (RFC 3207 §4.2).
//   - Credentials are sent only over TLS unless Options.AllowPlaintextAuth is
//     set. The AUTH exchange is redacted from the transcript, and the password,
//     its base64 form and the base64 PLAIN token are scrubbed from every server
//     text that reaches an *Error or a log line.
//   - Envelope addresses containing CR, LF, other control characters or angle
//     brackets, or longer than 320 octets (package mailaddr's WireSafe rule),
//     are refused locally (permanent *Error) and never reach the wire.
//
// # Line endings in the body
//
// The body is sent through the package's own streaming dot-stuffer (RFC 5321
// §4.5.2: a line starting with "." is sent with an extra "." that the server
// removes), then the terminating CRLF "." CRLF is appended. CRLF line
// endings and bare CRs pass unchanged, so a message arrives byte for byte; a
// bare LF is sent as CRLF (RFC 5321 §2.3.8 forbids bare LF). go-smtp's own
// writer (net/textproto's DotWriter) is not used for the body because it turns
// CR CR LF into CR CR CR LF. A body that does not end in CRLF gets one, as the
// terminator requires. With CHUNKING the same rules apply without the
// dot-stuffing (BDAT counts bytes; each chunk's size is counted after bare
// LFs became CRLF), so the server receives the same message either way.
//
// # Supported extensions
//
//   - SIZE (RFC 1870): SIZE= is sent on MAIL FROM when the envelope knows the
//     size; a message larger than the advertised limit is refused locally with a
//     permanent 552 5.3.4 *Error, without any transaction (RFC 1870 §6).
//   - 8BITMIME (RFC 6152): BODY=8BITMIME is sent on MAIL FROM (by go-smtp,
//     and alike by the pipelined path) whenever the server advertises it. A
//     message that needs it is still sent when it is not
//     advertised (Exchange accepts 8-bit data) and Outcome.Warning says so.
//   - SMTPUTF8 (RFC 6531): requested when the envelope needs it or an address
//     is not ASCII; if the server does not advertise it the message is refused
//     locally with a permanent *Error (553 5.6.7 for a non-ASCII address,
//     554 5.6.9 otherwise) and nothing is sent.
//   - STARTTLS (RFC 3207) and implicit TLS (RFC 8314 §3.3).
//   - AUTH PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login), per
//     RFC 4954.
//   - ENHANCEDSTATUSCODES (RFC 2034, codes per RFC 3463): parsed into
//     Error.Enhanced whenever the server gives one.
//   - PIPELINING (RFC 2920), when advertised: RSET (when an earlier
//     transaction may be open), MAIL, every RCPT and DATA go in one write,
//     and their replies are read in order; then the body and the final ".":
//     two round trips per message instead of four or more. A list of more
//     than 100 recipients goes out in parts: at most 100 replies are owed
//     while RCPTs are written, so neither side can block the other. Per RFC 2920
//     §3.1: after a refused MAIL every recipient gets MAIL's reply (the 503s
//     that follow are not reported); if DATA is answered 354 although no
//     RCPT was accepted, only the terminating "." is sent, never the body; a
//     refused DATA goes to the recipients accepted at RCPT. Verify sends
//     MAIL, the RCPTs and RSET in one write. Options.NoPipelining turns it
//     off (one command at a time through go-smtp, for servers with broken
//     pipelining); Client.Pipelining reports the path in use.
//   - CHUNKING (RFC 3030), when advertised together with PIPELINING: the
//     body goes in "BDAT n" chunks of at most 128 KiB instead of DATA, up to
//     4 chunks ahead of their replies, and ends with a separate
//     "BDAT 0 LAST" written only after Envelope.BeforeEnd returned nil; its
//     reply is the message's outcome. No chunk is sent before the replies
//     to MAIL and RCPT show MAIL and at least one recipient accepted: a
//     server that does not discard the data of a BDAT it refuses (go-smtp's
//     server answers 502 and reads that data as commands) would otherwise
//     execute message content. So a message costs two round trips, as with
//     DATA. A refused chunk ends the sending (RFC 3030 §2): the replies to
//     the chunks already sent are read, the first refusal goes to the
//     accepted recipients, and the next transaction starts with RSET.
//     BINARYMIME is not used. Options.NoChunking keeps DATA.
//   - LIMITS (RFC 9422): RCPTMAX, when advertised, is how many RCPTs a
//     transaction carries at most (see Too many recipients); the other
//     limits are not read.
//
// # Too many recipients
//
// Exchange limits the recipients of one message (the receive connector's
// MaxRecipientsPerMessage, 200 by default since Exchange 2013) and answers
// each RCPT past it "452 4.5.3 Too many recipients"; Postfix does the same
// past smtpd_recipient_limit. RFC 5321 §4.5.3.1.10 asks the client to send
// the message to the recipients accepted so far and the rest in a new
// transaction, and so Send does, on the same connection: it ends the
// transaction for the recipients accepted (DATA or BDAT), then says MAIL
// again with RCPTs for the others, and repeats until every recipient's RCPT
// had a real answer. A reply counts as "too many recipients" when
//
//   - its enhanced code is X.5.3 (RFC 3463 §3.6), with any basic code:
//     452 4.5.3, 451 4.5.3, and 552 or 550 5.5.3 from servers that still
//     follow RFC 821 (taken as temporary, as RFC 5321 §4.5.3.1.10 asks);
//   - it has no enhanced code and is 452, or 451 or 552 with the words
//     "too many recipients".
//
// Any other enhanced code is the server's statement of another cause: 452
// 4.2.2 (mailbox full), 452 4.3.1 (insufficient storage) or 450 4.7.1 (a
// rate limit, which Postfix words "too many recipients from ...") is that
// recipient's outcome and splits nothing.
//
// In the first transaction, no more RCPT is written once a "too many"
// reply was read (in lockstep at once, with PIPELINING within the 100
// replies owed), and DATA follows the replies instead of the RCPTs. The
// number of RCPTs that had a real answer there is taken as the server's
// limit: each later transaction carries at most that many, with DATA in the
// same write, so it costs the round trips of a message of its own. RCPTMAX,
// when advertised, is the limit from the start.
//
// The body is sent again for each transaction, streamed as the first time:
// memory stays flat whatever the message size. Send obtains it from
// Envelope.Reopen (the caller opens its copy again; the connector's
// archived copy), else by seeking the body back to the offset it had when
// Send began (an *os.File, a *strings.Reader); a body that is neither is sent
// once, and the recipients it could not reach get a temporary local 452
// 4.5.3 *Error saying why. Envelope.BeforeEnd is called once, before the
// first end of data; the later transactions do not wait again.
//
// The loop stops, leaving the recipients still waiting deferred (their
// temporary "too many" reply, or a local error saying why) for the next
// attempt, when
//
//   - no RCPT of a transaction had a real answer (a server that answers
//     "too many" even to the first RCPT of a fresh transaction): there is
//     no infinite loop, since every transaction that goes on settles at
//     least one recipient, so a Send runs at most one transaction per
//     recipient;
//   - the message was refused (DATA, a chunk or the final reply) for the
//     recipients of a transaction: the others would most likely meet the
//     same refusal, and the next attempt asks again;
//   - the body cannot be read again;
//   - MAIL is refused in a later transaction: every recipient still waiting
//     gets that reply, made temporary (the same MAIL was accepted before,
//     so it is a limit of the session, such as RFC 9422's MAILMAX).
//
// A connection lost on the way (a hang-up, a 421, a timeout) ends the Send
// with an error, as always: the recipients of the transactions already
// ended keep their outcomes, and every other one, accepted at RCPT in the
// unfinished transaction or still waiting, gets the temporary error; none
// is reported accepted. Verify splits alike, with RSET ending each
// transaction.
//
// # What it cannot do
//
// It does not queue, retry or bounce: that is the caller's policy. It does not
// use BINARYMIME, DSN or REQUIRETLS, and it does not send BDAT data before the
// envelope is accepted (which would save a round trip, see CHUNKING). The
// reply text of an accepted RCPT is not kept, so Verify reports acceptance
// without text. A split message is sent once per transaction, so a server
// that takes one recipient per transaction receives the body once per
// recipient, within the caller's context deadline; each transaction has its
// own duplicate window (below). A connection interrupted after the final "." (or
// "BDAT 0 LAST") and before the reply leaves the outcome unknown; it is reported as temporary, so a retry may deliver the
// message twice (the duplicate window of RFC 5321 §4.5.3.2.6 and RFC 1047).
package relay
