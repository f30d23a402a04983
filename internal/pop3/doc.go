// Package pop3 is a small streaming POP3 client: RFC 1939 (POP3), RFC 2449
// (CAPA, extended response codes, PIPELINING), RFC 2595 §4 (STLS), RFC 5034
// with RFC 4616 (AUTH PLAIN), RFC 7628 (AUTH OAUTHBEARER) and XOAUTH2,
// RFC 1939 §7 (APOP), RFC 3206 (AUTH and SYS response codes).
//
// It exists because the connector must archive messages of up to 150 MB
// byte for byte inside 128 MB of memory, which a client that buffers RETR
// cannot do: knadh/go-pop3's RetrRaw peaks at about 3.4 times the message
// size in live heap (BenchmarkRetrMemory).
//
// Guarantees:
//
//   - Retr streams. Memory is a fixed 64 KiB read buffer whatever the
//     message size or line length; there is no line-length limit on message
//     data. Dot-stuffing is removed (RFC 1939 §3); every other byte,
//     including CRLF, bare CR, bare LF, NUL and 8-bit data, is returned
//     exactly as the server sent it. Only CRLF ends a line, so ".\r\n" after
//     a bare LF is data, not the end. A connection that ends before the
//     terminating ".\r\n" yields an error wrapping io.ErrUnexpectedEOF,
//     never a silently short message.
//   - RetrPipelined (RFC 2449 §6.6, when PIPELINING is advertised) keeps
//     up to depth (at most 64) RETR commands on the wire ahead of the
//     response being read; each body is streamed as Retr streams it, with
//     the same buffer, so memory stays flat whatever the depth: responses
//     not yet read wait in the socket buffers, and no command is written
//     while depth responses are outstanding, so the client never blocks
//     writing while the server blocks writing to it. Messages come in the
//     order asked; a -ERR fails that message only; a network, timeout or
//     protocol error (a response cut short) fails that message and every
//     later one and breaks the client. While a RetrQueue is active every
//     other command returns ErrQueueActive, so nothing interleaves on the
//     wire; RetrQueue.Close drains what was sent and gives the session
//     back. Without PIPELINING the same API fetches one at a time.
//   - Deadlines: Options.Timeout (required) bounds the dial and every
//     single network read and write, and is renewed with each one, so a
//     stalled server fails while a slow transfer that keeps progressing does
//     not. The context of each call also bounds it: its deadline is applied
//     to the socket and its cancellation aborts blocked I/O.
//   - Any network error, timeout, cancellation or protocol violation closes
//     the connection and makes every later call fail with an error wrapping
//     the first one; the client never guesses where a stream stands. A -ERR
//     response is a *Error and leaves the session usable. Errors name the
//     command ("RETR 3", "PASS ***").
//   - Status and listing lines are limited to 4096 bytes and listings to
//     2^20 lines; a longer one is an ErrProtocol error, not unbounded memory.
//   - TLS: certificates are verified (against Options.TLSConfig.RootCAs or
//     the system pool, for Options.ServerName or the host of Addr) unless
//     the caller sets InsecureSkipVerify; TLS 1.2 minimum. In "starttls"
//     mode Dial fails with ErrNoSTLS rather than continue in plaintext,
//     rejects plaintext data sent after the STLS +OK (response injection),
//     and re-reads CAPA under TLS.
//   - Credentials (password, APOP digest, access token) are sent only over
//     TLS unless Options.AllowPlaintextAuth. No password, token or SASL
//     payload appears in an error or the debug transcript, even if the
//     server echoes it. Login uses exactly the mechanism asked for, or
//     fails with ErrMechanismNotOffered before sending anything.
//   - Deletion follows RFC 1939 §6: Dele only marks; Quit returning nil
//     means the server committed the deletions; Close (or any failure)
//     before that leaves every message on the server.
//
// Commands: USER, PASS, APOP, AUTH PLAIN, XOAUTH2 and OAUTHBEARER (with
// initial response when it fits in 255 octets, else after the "+ "
// challenge; an XOAUTH2/OAUTHBEARER error challenge is answered as RFC 7628
// §3.2.3 asks and the -ERR that follows returned with the challenge's
// status), CAPA, STLS, STAT, LIST, UIDL, RETR, DELE, NOOP, RSET, QUIT.
// Extensions used when advertised: SASL PLAIN, PIPELINING (LIST+UIDL in
// one write, DELE in batches of 64, RetrPipelined), RESP-CODES and
// AUTH-RESP-CODE (Error.Code, Error.Temporary), STLS.
//
// What it cannot do: TOP, the single-message forms "LIST n" and "UIDL n",
// SASL mechanisms other than PLAIN, XOAUTH2 and OAUTHBEARER (no LOGIN,
// CRAM-MD5, SCRAM), obtaining OAuth tokens (package oauth does), UTF8
// (RFC 6856), and concurrent use of one Client (except
// Close to abort). A RetrQueue pipelines RETR only: DELE cannot ride along
// with it, and a queue given up early costs the transfer of the up to
// depth-1 messages already asked for, which Close must read to stay in
// step. Message numbers are valid only within one session;
// use UIDL to identify messages across sessions. Note that LIST sizes are
// the server's claim: Dovecot, for one, does not count the CRLF it appends
// to a message lacking a final line break.
package pop3
