// Package relay delivers messages over SMTP (RFC 5321) to the Exchange
// endpoint. It is a thin, careful layer over github.com/emersion/go-smtp's
// client that adds the policies the connector depends on: TLS that is never
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
//     RCPT).
//   - Send returns a non-nil error only when the connection can no longer be
//     used: network failure, timeout, cancelled context, a 421 reply (RFC 5321
//     §3.8), an unreadable body. Every recipient without a final outcome then
//     carries a temporary *Error describing it. The caller must Close and
//     redial.
//   - The body is copied through one fixed buffer: memory does not grow with
//     the message size. If reading the body fails part-way, the connection is
//     closed without sending the terminating "." so that no truncated message
//     can be delivered (SMTP has no way to abort DATA, RFC 5321 §4.1.1.4).
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
// removes), then go-smtp appends the terminating CRLF "." CRLF. CRLF line
// endings and bare CRs pass unchanged, so a message arrives byte for byte; a
// bare LF is sent as CRLF (RFC 5321 §2.3.8 forbids bare LF). go-smtp's own
// writer (net/textproto's DotWriter) is not used for the body because it turns
// CR CR LF into CR CR CR LF. A body that does not end in CRLF gets one, as the
// terminator requires.
//
// # Supported extensions
//
//   - SIZE (RFC 1870): SIZE= is sent on MAIL FROM when the envelope knows the
//     size; a message larger than the advertised limit is refused locally with a
//     permanent 552 5.3.4 *Error, without any transaction (RFC 1870 §6).
//   - 8BITMIME (RFC 6152): go-smtp sends BODY=8BITMIME whenever the server
//     advertises it. A message that needs it is still sent when it is not
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
//   - PIPELINING (RFC 2920) is not used: go-smtp sends one command and waits
//     for its reply, which RFC 2920 permits; it costs round trips, not
//     correctness.
//
// # What it cannot do
//
// It does not queue, retry or bounce: that is the caller's policy. It does not
// use CHUNKING/BDAT, DSN or REQUIRETLS. The reply text of an accepted RCPT is
// not exposed by go-smtp, so Verify reports acceptance without text. A
// connection interrupted after the final "." and before the reply leaves the
// outcome unknown; it is reported as temporary, so a retry may deliver the
// message twice (the duplicate window of RFC 5321 §4.5.3.2.6 and RFC 1047).
package relay
