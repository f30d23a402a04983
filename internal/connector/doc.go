// Package connector runs the per-mailbox pipeline: lease, list, fetch and
// archive, deliver, delete, quit. One pure function, Decide, says what
// happens next to each message from its state; the pipeline's stages only
// carry that out and publish what they did as events. It sees only narrow
// interfaces (Source, archive.Archive, ledger.Ledger, Relay); the callers
// choose the implementations (local files, or S3 and DynamoDB).
//
// Guarantees, each shown by a test against real servers:
//
//   - Archive first: a message is archived durably, and that recorded in the
//     ledger, before any byte of it is relayed. The relay reads the archived
//     copy, so what Exchange gets is what the archive holds (plus one
//     Received: trace field, and a Message-ID field derived from the ledger
//     key when the message had none).
//   - No DELE without a recorded delivery: DELE is sent only for messages
//     whose ledger record shows every recipient accepted, and a deletion is
//     recorded only after QUIT answered +OK (RFC 1939 §6: before that the
//     server rolls DELE back). A later run simply DELEs again; it never
//     relays again.
//   - A retry sends only to the recipients that have not accepted.
//   - A temporary failure (4xx, connection lost, timeout, anything unknown)
//     and a permanent rejection (5xx) both leave the message on the server,
//     with the reason and the next attempt time in the ledger. Permanent
//     rejections are retried at the retry interval (the seeds' safe default:
//     leave rejected mail on the POP3 server until told otherwise); a
//     message too large for the endpoint only at the slowest pace.
//   - The undeliverable options "delete" (only when every unaccepted
//     recipient got a listed reply code, never on a relay refusal) and
//     "badmail" (a copy under badmail/ plus a reason object, written before
//     the decision is recorded), the give-up age and loop detection
//     (Mailbox.Undeliverable, Settings.MaxTraceHops) end in a disposition
//     recorded in the ledger in the same write as the attempt's outcomes,
//     before any DELE: a DELE follows either a recorded delivery or a
//     recorded decision. Giving up under "leave" (and "delete") copies the
//     message to badmail and stops the attempts, but keeps it on the
//     server.
//   - A fetch whose size differs from the server's LIST is held (held.go):
//     never relayed, never deleted on its own account, refetched on a
//     session of its own; four fetches of the same bytes confirm the hold
//     and the undeliverable action applies to what was served.
//   - Recipients go over routes (package route): one SMTP transaction per
//     route group, a connection per route per poll, an unreachable route
//     failed over to the next cost and not tried again in the poll.
//   - A global mailbox's recipients are resolved from the archived header
//     (package recipients) and recorded with the archive key: fixed
//     thereafter.
//   - Postmaster notices (package notify) go with the null sender, at most
//     one per message and cause: a cause is recorded after its notice was
//     accepted, or once the SMTP server refused it for good (5xx): such a
//     notice is reported once, never retried.
//   - Duplicate copies (dedupe.go): a recipient that accepted the same
//     message (same Message-ID and content fingerprint) from another copy
//     within Mailbox.DuplicateWindow is not sent it again; a message with a
//     reused Message-ID but other content is delivered; its outcome is recorded as a suppressed
//     duplicate naming the first copy, and a copy no recipient still needs
//     is settled like a delivered one. The index entry that allows this is
//     written with the recorded 250 or after it (never before), so
//     suppression never lets a copy be deleted unless some copy's delivery
//     is recorded.
//   - The stages overlap without weakening any of this (pipeline.go):
//     messages are received into the archive while earlier ones are made
//     durable and recorded (several flushes share one fsync), relayed in
//     server order once their own archive record is written, and a fully
//     accepted message's outcome is written in the background while later
//     messages are sent; DELE waits for every outcome write of the poll.
//   - Up to Settings.DeliveriesInFlight messages of a poll are sent at
//     once, each on an SMTP connection of its own; a route's connections
//     over every poll of the process stay within its MaxConnections
//     (gates.go).
//   - Before DATA a copy takes a delivery claim for its Message-ID and
//     fingerprint: a copy in another mailbox polled at the same moment
//     waits for the next poll instead of being relayed too. A claim never
//     suppresses by itself.
//   - A crash at any point loses nothing. The only duplicate possible (a
//     reply-window duplicate) is a crash (or lost reply) between the final
//     "." of DATA (or BDAT LAST) and recording the reply in the ledger.
//     That window is declared: a message takes a place in it before its
//     final "." (relay.Envelope.BeforeEnd) and gives it back once the
//     reply is durably recorded, and at most Settings.ReplyWindow messages
//     of the process hold one, so a crash relays at most that many again.
//     A message with a reused Message-ID but other content is a second
//     message, delivered on purpose.
//   - A second run over an unchanged mailbox relays nothing.
//   - Work per poll is bounded (messages, bytes, deadline) and the POP3
//     session ends with QUIT whenever the connection still allows it.
//   - One poller per mailbox at a time (the ledger lease); mailboxes are
//     polled in parallel by a bounded number of workers.
//
// What it cannot do: it cannot tell whether an SMTP server that accepted
// DATA but whose 250 reply was lost has delivered the message; it records
// the attempt as deferred and delivers again (the accepted duplicate). A
// lease is time-based: a poller starts a message only with two SMTP
// timeouts of its poll left, and its lease outlives the poll deadline by
// two minutes, so in real time polls never overlap; a process frozen (or a
// clock jumping) past that margin while a message is in flight can see
// that message relayed again by the next poller, whose ledger write then
// wins (the frozen poller's write fails as a conflict). An SMTP server
// cannot check a fencing token, so no lease can close this window
// (internal/reliability stages it: at most the message in flight).
//
// A POP3 UIDL names a message only while it is on the server (RFC 1939
// §7): a record whose deletion the server confirmed, or whose UIDL is
// listed again with another LIST size, starts a new ledger generation
// instead of being deleted; a UIDL the listing gives to two messages
// names neither, and both are left on the server. A delivered but not yet
// deleted record listed again with the same size is taken for the same
// message (under the keep policy that is every poll).
package connector
