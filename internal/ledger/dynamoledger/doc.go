// Package dynamoledger keeps the ledger in one DynamoDB table; it implements
// ledger.Ledger for AWS mode, where several Lambda invocations may poll at
// once.
//
// # Table design
//
// One table, on-demand billing, TTL enabled on attribute "ttl". The SAM
// template creates it in production; CreateTable creates the same table for
// tests and development.
//
//	Key schema
//	  pk  S  partition key  "MB#" + mailbox
//	  sk  S  sort key       "MSG#" + UIDL   one item per message (record item)
//	                        "LEASE"         the mailbox's lease item
//	  pk                    "MID#" + Message-ID   the duplicate index of one
//	  sk                    "RCPT#" + recipient   Message-ID: one entry item per
//	                                              recipient that accepted it
//	                        (both after ledger.DuplicateKey)
//	  pk                    "CLAIM#" + Message-ID the delivery claims of one
//	  sk                    "FP#" + fingerprint   Message-ID: one claim item per
//	                                              fingerprint (ledger.ClaimKey)
//
//	Record item attributes (names follow the JSON names of ledger.Record)
//	  mailbox, uidl            S   the record's key fields, unescaped
//	  first_seen, archived_at,
//	  last_attempt,
//	  next_attempt, deleted_at,
//	  next_refetch,
//	  next_notice,
//	  disposition_at           S   RFC 3339 with nanoseconds; absent when zero
//	  size, attempts,
//	  too_large_limit          N   (too_large_limit absent when 0)
//	  archive_key, sha256,
//	  fingerprint,
//	  message_id, sender,
//	  last_error               S   absent when empty (fingerprint also in
//	                               items written before it existed)
//	  message_id_added,
//	  needs_8bitmime,
//	  needs_smtputf8, gave_up  BOOL absent when false
//	  recipients               L of M {address S, status S, code N,
//	                                   enhanced S, reply S, at S,
//	                                   failure M {op S, code N, enhanced S,
//	                                   temporary BOOL, local BOOL,
//	                                   message S}}
//	                               (failure absent when nil, its
//	                               attributes when zero)
//	  version                  N   ledger.Record.Version as stored
//	  write_id                 S   random token of the Put that wrote it
//	  ttl                      N   epoch seconds; only once deleted_at is set:
//	                               deleted_at + Options.RecordTTL (7 days,
//	                               ledger.DefaultRecordRetention), rounded up
//
//	Lease item attributes
//	  owner                    S   the poller holding the lease
//	  expires                  N   epoch milliseconds
//	  ttl                      N   epoch seconds, expires + 1 day: abandoned
//	                               lease items disappear on their own
//
//	Duplicate-index entry attributes (ledger.Acceptance)
//	  message_id, recipient    S   the normalized key fields, unescaped
//	  mailbox, uidl            S   the record whose 250 the entry stands for
//	  at, expires              S   RFC 3339 with nanoseconds
//	  fingerprint              S   of the accepted copy; absent in entries
//	                               written before it existed (Accepted
//	                               returns "")
//	  ttl                      N   epoch seconds, expires rounded up: DynamoDB
//	                               removes the entry once the window is over
//	                               (within days); Accepted ignores it at once
//
//	Claim item attributes (ledger.Claim)
//	  message_id, fingerprint  S   the normalized key fields, unescaped
//	  mailbox, uidl            S   the record delivering the message
//	  at_ns, expires_ns        N   Unix nanoseconds (numbers, so that the
//	                               condition compares them, and a take-over's
//	                               At matches exactly)
//	  ttl                      N   epoch seconds, expires rounded up
//
// The attributes next_refetch, next_notice, too_large_limit and a
// recipient's failure were added without changing anything else: an item
// written before them lacks them, and reads through ledger.Record.Upgrade
// (applied to every record Get and List return) and
// ledger.Recipient.LastFailure as today's code means its fields. An older
// build ignores them.
//
// Claim items have their own partition, not the index's "MID#" one: the
// index's Query never reads them, and a build from before claims (which
// takes every item under "MID#" for an index entry) never meets one.
//
// The mailbox and the UIDL are kept in separate key attributes behind fixed
// prefixes, so no mailbox name or UIDL (RFC 1939 section 7: any printable
// character) can collide with another. Key limits: a mailbox name may be up
// to 2045 bytes, a UIDL up to 1020 (RFC 1939 allows 70). A record item is
// about 1 KB (the conformance suite's full record with two recipients is
// under 1 KB), far below DynamoDB's 400 KB item limit.
//
// Writes, and why each is conditional:
//
//   - Put of one record: PutItem with condition attribute_not_exists(pk)
//     when Version is 0, else version = :read. The condition is the ledger's
//     compare-and-swap: two pollers working from the same state cannot both
//     record an outcome. A failed condition is ledger.ErrConflict.
//   - Put of 2 to 100 records: TransactWriteItems of the same conditional
//     Puts, all or none. One failed condition cancels the transaction and is
//     ledger.ErrConflict. A transaction costs twice the write units of the
//     same PutItems.
//   - PutAccepted: the record's conditional PutItem exactly as Put (same
//     condition, lost-answer token and retries), then, only once it has
//     succeeded, an unconditional PutItem of each duplicate-index entry
//     (a later copy's entry for the same key replaces it). The order is
//     what keeps an entry from existing for a 250 that is not recorded,
//     without a transaction: a failed or conflicting record write writes
//     no entry. An entry PutItem that still fails after the client's
//     retries leaves the record standing (the caller's Version is
//     incremented) and returns an error wrapping ledger.ErrIndexNotWritten;
//     that, or a crash between the writes, can only leave a recipient
//     unindexed: its next copy is delivered again, never lost. It costs the
//     record's units + 1 per entry (an entry is about 350 bytes): 2 write
//     units for a one-recipient delivery, where a transaction would bill 4.
//     With no entry it is Put.
//   - Accepted: one strongly consistent Query on pk "MID#" + Message-ID;
//     entries past their expires are skipped.
//   - Claim: one PutItem of the claim item with condition
//     attribute_not_exists(pk) OR expires_ns <= :at OR (mailbox = :mb AND
//     uidl = :uidl), and with a takeOver also OR (mailbox = :tmb AND
//     uidl = :tuidl AND at_ns = :tat): the whole rule of ledger.Ledger.Claim
//     in one conditional write, so of claimants racing for a key exactly one
//     wins. A failed condition is ledger.ErrClaimHeld; the held claim is
//     decoded from the item the failure returns (ALL_OLD), or, should it
//     come without one, read with a strongly consistent GetItem. A client
//     retry after a lost answer meets its own claim and succeeds. 1 write
//     unit (a claim item is about 400 bytes). PutAccepted does not delete
//     the claim (another write unit): it ends at its expires, and DynamoDB
//     removes the item by its ttl. A claim only delays other copies: a
//     crash while holding one holds them back until it expires, and it
//     never suppresses one.
//   - Lease: PutItem of the lease item with condition attribute_not_exists(pk)
//     OR expires < :now OR owner = :me; a failed condition is
//     ledger.ErrLeaseHeld. Renew: UpdateItem with condition owner = :me;
//     it fails with ErrLeaseHeld when another owner took the lease after it
//     expired, and also when the item is gone (taken and released by
//     another poller meanwhile), where the Bolt ledger would take it again.
//     Release: DeleteItem with condition owner = :me; a failed condition
//     means the lease was already lost or released and is not an error.
//
// Reads (Get: BatchGetItem; List: Query on pk with begins_with(sk, "MSG#"))
// are strongly consistent: a poller always sees the last acknowledged
// write, so its conditional Puts fail only on a real concurrent writer.
//
// # Retries and ambiguous outcomes
//
// Throttling (ThrottlingException, ProvisionedThroughputExceededException),
// 5xx answers, timeouts and connection errors are retried by the client's
// retryer, with backoff, up to Options.MaxAttempts attempts per request;
// transaction conflicts (TransactionConflictException, or a cancelled
// transaction whose reasons are TransactionConflict or throttling) and
// UnprocessedKeys are retried by the ledger itself with jittered backoff,
// as often. All retries honour ctx. None of these is ever reported as
// ledger.ErrConflict.
//
// A retry after a lost answer must not turn the first attempt's success
// into a conflict. A TransactWriteItems carries a ClientRequestToken, so
// DynamoDB answers its replay within 10 minutes with success; a PutItem
// asks for the item as stored when its condition fails
// (ReturnValuesOnConditionCheckFailure ALL_OLD), and when that item's
// write_id is the retried Put's own token the write had landed and Put
// succeeds. (Had another writer changed the record between the lost
// answer and the retry, Put reports ErrConflict although its write landed
// before being superseded; a fresh read shows the truth.)
//
// # What it cannot do
//
// Leases and claims compare expiry times from each poller's own clock:
// pollers whose clocks disagree by more than the margin can overlap (the
// conditional Puts still keep the records consistent; two copies both
// delivered under overlapping claims are a duplicate, never a loss). Put accepts at most
// 100 records (the TransactWriteItems limit). TTL deletion is DynamoDB's:
// records past their ttl disappear within days, not at the second, and
// until then Get and List return them. The Ledger does not create or check
// the table; call CheckTable at startup for a clear error on a missing or
// misdesigned table.
//
// # Counting requests and capacity
//
// Stats reports the API calls a Ledger made and the items they wrote, per
// operation, and, with Options.CountCapacity (ReturnConsumedCapacity TOTAL
// on every request), the read and write capacity units DynamoDB reported
// for successful requests. DynamoDB reports none for a request that failed
// (a failed condition still costs one write unit). On DynamoDB, a PutItem
// costs one write unit per started KB of the larger of the old and new
// item, and each item of a TransactWriteItems twice that; DynamoDB Local
// reports PutItem the same way but misreports transactions. A delivered
// one-recipient message costs 5 write units with duplicate suppression on
// (archive record, claim, delivery record, index entry, deletion mark), 3
// with it off, while every item is under 1 KB; each further recipient adds
// its index entry, and a record over 1 KB a unit per started KB at each of
// its writes. Measured (capacity_test.go): with Exchange's long 250 text
// and a fingerprint, a deleted one-recipient record is about 1,040 bytes,
// so its deletion mark costs 2 units: 6 with suppression on, 4 off; a
// five-recipient message (delivered record about 2.2 KB) 13 on, 7 off.
//
// # Permissions
//
// The ledger calls PutItem, UpdateItem, DeleteItem, GetItem, BatchGetItem,
// Query and TransactWriteItems on its table. Claim uses PutItem, and
// GetItem only when a failed condition comes back without the stored item.
package dynamoledger
