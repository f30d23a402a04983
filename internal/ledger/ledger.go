// Package ledger records where each fetched message stands, so that every
// run can resume exactly where the last one stopped.
//
// One Record exists per (mailbox, UIDL). The pipeline writes it after the
// message is archived, after each delivery attempt, and after a deletion is
// confirmed by QUIT. Guarantees every implementation gives:
//
//   - Put is all-or-nothing over the records it is given, and durable when it
//     returns nil: a crash after Put returns cannot lose the write.
//   - Put is conditional: a record is written only if the stored Version
//     equals the caller's Version (0 means "must not exist yet"). On success
//     Version is incremented in the caller's records. A mismatch returns an
//     error wrapping ErrConflict and writes nothing, so two writers can never
//     both record a delivery of the same message from stale state.
//   - Lease gives one holder at a time per mailbox until its expiry.
//   - The duplicate index (Acceptance entries, keyed by DuplicateKey of
//     Message-ID and recipient) is written only by PutAccepted, together
//     with or after the durable write of the record holding the 250s it
//     stands for: an entry never exists for a delivery that is not
//     recorded. An entry may be missing for a recorded delivery (a write
//     that failed after the record, reported as ErrIndexNotWritten, or a
//     crash between the two): a later copy is then delivered again, never
//     lost. Accepted never returns an expired entry. Each entry carries
//     the Fingerprint of the copy that was accepted; the connector
//     suppresses only a copy whose fingerprint matches it, and an entry
//     without one (written before fingerprints existed) never suppresses.
//   - Claim is a conditional write, durable like Put, that lets one record
//     at a time deliver a given (Message-ID, fingerprint), so that copies
//     polled in parallel from two mailboxes are not both sent: of
//     claimants racing for a key exactly one wins, the others get
//     ErrClaimHeld and the winner's claim. A claim is only a lock: the
//     holder's 250s are what suppress, once PutAccepted has recorded them.
//     A claim alone never suppresses: a crash while holding one only
//     delays another copy until it expires. A holder that needs longer
//     claims again (the same record always may).
//   - Every record Get and List return has been through Record.Upgrade:
//     records written by older builds read with today's meaning of their
//     fields. Recipient.LastFailure reads their failures as data.
//   - A deleted record retires (disappears from Get and List) some time
//     after its DeletedAt plus the retention (DefaultRecordRetention
//     unless configured), never before; a record not deleted never does.
//
// Claims rely on the callers' clocks: a claim counts until its Expires as
// the next claimant's clock reads it, so clocks that disagree by more than
// the claim's margin can let two copies deliver at once (each is still
// recorded; the second is a duplicate, never a loss).
//
// What it cannot do: it does not know what the POP3 server holds. A record
// whose deletion was sent but not confirmed stays "delivered" until a later
// run sees the UIDL gone or deletes it again.
package ledger

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// DefaultRecordRetention is how long a deleted message's record is kept
// after its DeletedAt when the implementation's option is zero (bolt:
// Options.RecordRetention; DynamoDB: Options.RecordTTL, its ttl
// attribute). A confirmed deletion needs no record to stay safe (a UIDL
// listed again after it starts a new record either way); the record is
// kept for `popconn status`, for the UIDL-reuse log line and for an
// archive key that does not collide with the next same-day generation.
const DefaultRecordRetention = 7 * 24 * time.Hour

// ErrConflict reports a conditional write that found another Version.
var ErrConflict = errors.New("ledger: record changed by another writer")

// ErrLeaseHeld reports a mailbox lease that another owner holds and has not expired.
var ErrLeaseHeld = errors.New("ledger: mailbox lease held by another poller")

// ErrIndexNotWritten reports a PutAccepted whose record was written (it is
// durable and the caller's Version was incremented, as after a successful
// Put) but some of whose duplicate-index entries were not: the delivery is
// recorded, and a later copy of the message may be delivered again to the
// recipients it names. It never wraps ErrConflict.
var ErrIndexNotWritten = errors.New("ledger: delivery recorded, but its duplicate-index entry was not written (a later copy may be delivered again)")

// ErrClaimHeld reports a live claim held by another record.
var ErrClaimHeld = errors.New("ledger: another copy of this message is being delivered")

// RecipientStatus is the outcome of delivery to one recipient.
type RecipientStatus string

const (
	// Pending: no attempt has been made yet.
	Pending RecipientStatus = "pending"
	// Accepted: the SMTP server answered 250 to DATA for this recipient.
	Accepted RecipientStatus = "accepted"
	// Deferred: a temporary failure (4xx, connection lost, timeout); retried.
	Deferred RecipientStatus = "deferred"
	// Rejected: a permanent failure (5xx); retried at the retry interval
	// under the default undeliverable policy, the message stays on the server.
	Rejected RecipientStatus = "rejected"
	// Suppressed: this copy was not sent to the recipient because the
	// recipient accepted another copy with the same Message-ID within the
	// duplicate window (a 250 recorded for another mailbox, UIDL or
	// generation); Reply names that copy. It is as final as Accepted.
	Suppressed RecipientStatus = "suppressed-duplicate"
)

// Done reports whether nothing remains to be sent to the recipient: it
// accepted this copy, or another copy of the same message.
func (s RecipientStatus) Done() bool { return s == Accepted || s == Suppressed }

// Recipient is one envelope recipient and its last outcome.
type Recipient struct {
	Address  string          `json:"address"`
	Status   RecipientStatus `json:"status"`
	Code     int             `json:"code,omitempty"`     // SMTP basic code of the last reply
	Enhanced string          `json:"enhanced,omitempty"` // e.g. "4.2.2"
	Reply    string          `json:"reply,omitempty"`    // the server's text (250 text when accepted)
	At       time.Time       `json:"at,omitempty"`
	// Failure is the last failure as data, set with Status Deferred or
	// Rejected; nil in records written before it existed, whose failure
	// LastFailure rebuilds from Code, Enhanced and Reply.
	Failure *Failure `json:"failure,omitempty"`
}

// Record is the state of one message of one mailbox.
type Record struct {
	Mailbox string `json:"mailbox"`
	UIDL    string `json:"uidl"`

	FirstSeen time.Time `json:"first_seen"`
	Size      int64     `json:"size"` // bytes archived (as served after dot-unstuffing)
	// ListSize is the size the server's LIST gave when the message was
	// fetched. A later LIST of the same UIDL with another size is another
	// message (a reused UIDL); a fetch that does not match it is held.
	ListSize int64 `json:"list_size,omitempty"`
	// Held says why a message is neither relayed nor deleted: what the
	// server sent does not match what it listed (a server fault, such as
	// Dovecot not dot-stuffing a first line that starts with "."). It is
	// fetched again at NextRefetch and released once they match.
	Held string `json:"held,omitempty"`

	ArchiveKey string    `json:"archive_key,omitempty"`
	SHA256     string    `json:"sha256,omitempty"` // hex digest of the archived bytes
	ArchivedAt time.Time `json:"archived_at,omitempty"`
	// Fingerprint is the content fingerprint of the archived copy, which
	// the connector computes to tell two messages with one Message-ID
	// apart: only a copy with the same fingerprint is a duplicate. It is
	// "" when it could not be computed, and in records written before it
	// existed; such a record's deliveries never suppress another copy.
	Fingerprint string `json:"fingerprint,omitempty"`

	MessageID string `json:"message_id,omitempty"` // without <>; generated when the message had none
	// MessageIDAdded reports a MessageID derived from the ledger key because
	// the message had none: every delivery adds it as a header field, so a
	// redelivery is recognisably the same message.
	MessageIDAdded bool   `json:"message_id_added,omitempty"`
	Sender         string `json:"sender,omitempty"` // envelope MAIL FROM used ("" = null sender)
	Needs8BitMIME  bool   `json:"needs_8bitmime,omitempty"`
	NeedsSMTPUTF8  bool   `json:"needs_smtputf8,omitempty"`

	Recipients  []Recipient `json:"recipients,omitempty"`
	Attempts    int         `json:"attempts,omitempty"`
	LastAttempt time.Time   `json:"last_attempt,omitempty"`
	// NextAttempt is when the message is next offered to the relay; zero
	// means at once. It is the delivery timer only: a held message waits
	// for NextRefetch, a message set aside for NextNotice.
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	GaveUp      bool      `json:"gave_up,omitempty"` // past the give-up age: no more automatic attempts
	// NextRefetch is when a held message is fetched again; zero means at
	// once.
	NextRefetch time.Time `json:"next_refetch,omitempty"`
	// NextNotice is when the postmaster notices not yet accepted are tried
	// again, for a message no delivery attempt visits again (a disposition,
	// or given up while left on the server); zero when none is due.
	NextNotice time.Time `json:"next_notice,omitempty"`
	// TooLargeLimit is the size limit the endpoint refused the message for,
	// by its SIZE extension or a 552 / X.3.4 reply; 0 when not refused for
	// size or when the limit is unknown. Such a message is retried only at
	// the slowest pace: it cannot pass until the limit changes.
	TooLargeLimit int64 `json:"too_large_limit,omitempty"`

	// RecipientSource names where the recipients of a global (catch-all)
	// mailbox's message came from: a header name, "To, Cc" or "fallback".
	// Empty for an individual mailbox (its configured deliver_to).
	RecipientSource string `json:"recipient_source,omitempty"`
	// TraceHops counts the Received fields this connector wrote that the
	// archived message already carried: more than the configured limit is
	// a mail loop.
	TraceHops int `json:"trace_hops,omitempty"`
	// Disposition is the recorded final decision on a message that was not
	// delivered to every recipient and may therefore be deleted from the
	// POP3 server: DispositionDeletedRejected or DispositionBadmail. Empty
	// while the message is delivered normally or left for retry.
	Disposition       Disposition `json:"disposition,omitempty"`
	DispositionReason string      `json:"disposition_reason,omitempty"`
	DispositionAt     time.Time   `json:"disposition_at,omitempty"`
	// BadmailKey is the archive key of the badmail copy.
	BadmailKey string `json:"badmail_key,omitempty"`
	// Notified lists the causes the postmaster was sent a notice for
	// (recorded after the notice was accepted): at most one per cause.
	Notified []string `json:"notified,omitempty"`
	// NoticesRefused lists the causes whose notice the SMTP server refused
	// with a permanent (5xx) reply: reported once in the log, never sent
	// again (the same filter would refuse it again).
	NoticesRefused []string `json:"notices_refused,omitempty"`
	// HeldFetches counts the fetches in a row, while Held, that gave the
	// same bytes (the same SHA256). Once it reaches the connector's limit
	// the hold is confirmed: refetching gives nothing new, and the
	// mailbox's undeliverable action applies.
	HeldFetches int `json:"held_fetches,omitempty"`

	DeletedAt time.Time `json:"deleted_at,omitempty"` // set once QUIT confirmed the DELE
	// SupersededAt is when the server's listing gave this record's UIDL
	// to another message (a newer generation of the UIDL): the listing
	// never names this record again, even once the newer generations'
	// records have retired. An unsettled superseded record is delivered
	// from the archive like any message whose server copy left.
	SupersededAt time.Time `json:"superseded_at,omitempty"`

	Version int64 `json:"version"`
}

// Disposition is a recorded final decision on an undelivered message.
type Disposition string

const (
	// DispositionDeletedRejected: Exchange rejected the message with a reply
	// code the undeliverable option "delete" lists; it is deleted from the
	// POP3 server (the archive keeps its copy).
	DispositionDeletedRejected Disposition = "deleted-rejected"
	// DispositionBadmail: the message was copied under the archive's
	// badmail/ prefix with a reason and is deleted from the POP3 server.
	DispositionBadmail Disposition = "badmail"
)

// Settled reports whether the message may leave the POP3 server: every
// recipient accepted it, or a final disposition was recorded.
func (r *Record) Settled() bool { return r.Delivered() || r.Disposition != "" }

// WasNotified reports whether a notice for cause was recorded: accepted,
// or refused for good.
func (r *Record) WasNotified(cause string) bool {
	return slices.Contains(r.Notified, cause) || slices.Contains(r.NoticesRefused, cause)
}

// Archived reports whether the message's bytes are durably archived.
func (r *Record) Archived() bool { return r.ArchiveKey != "" && r.SHA256 != "" }

// Delivered reports whether every recipient has the message: each one
// accepted this copy or, as a suppressed duplicate, another copy.
func (r *Record) Delivered() bool {
	if len(r.Recipients) == 0 {
		return false
	}
	for _, rc := range r.Recipients {
		if !rc.Status.Done() {
			return false
		}
	}
	return true
}

// Deleted reports whether the POP3 server confirmed the deletion.
func (r *Record) Deleted() bool { return !r.DeletedAt.IsZero() }

// SortRecords puts recs in List's order: by FirstSeen, then UIDL.
func SortRecords(recs []*Record) {
	slices.SortFunc(recs, func(a, b *Record) int {
		if c := a.FirstSeen.Compare(b.FirstSeen); c != 0 {
			return c
		}
		return strings.Compare(a.UIDL, b.UIDL)
	})
}

// Lease is one poller's exclusive hold on a mailbox.
type Lease interface {
	// Renew extends the lease by its TTL; it fails with ErrLeaseHeld if the
	// lease was lost (expired and taken by another owner).
	Renew(ctx context.Context) error
	// Release gives the lease up early. Releasing a lost lease is not an error.
	Release(ctx context.Context) error
}

// Ledger stores Records. Implementations: Bolt (an embedded file) and, on
// AWS, DynamoDB.
type Ledger interface {
	// Get returns the stored records among uidls for mailbox, keyed by UIDL.
	// UIDLs without a record are absent from the map.
	Get(ctx context.Context, mailbox string, uidls []string) (map[string]*Record, error)
	// Put writes the records conditionally (see the package doc), all or none.
	Put(ctx context.Context, recs ...*Record) error
	// List returns every record of mailbox, ordered by FirstSeen then UIDL.
	List(ctx context.Context, mailbox string) ([]*Record, error)
	// Lease takes the mailbox's lease for owner for ttl, or fails with ErrLeaseHeld.
	Lease(ctx context.Context, mailbox, owner string, ttl time.Duration) (Lease, error)
	// PutAccepted is Put of one record together with the duplicate-index
	// entries of the recipients that accepted it in this attempt. An entry
	// exists only if the 250 it stands for is recorded: the entries are
	// written in the same atomic write as the record (bolt) or only after
	// the record's write succeeded (DynamoDB). A record write that fails or
	// conflicts writes no entry. When the record was written but an entry
	// was not, it returns an error wrapping ErrIndexNotWritten, with
	// rec.Version incremented: the caller must treat the delivery as
	// recorded. Each entry's Mailbox and UIDL are set to rec's. An entry
	// replaces an earlier one for the same key. An entry that DuplicateKey
	// refuses is not written. With no entries it writes rec as Put does.
	// Bolt also deletes, in the same transaction, the claim for
	// (rec.MessageID, rec.Fingerprint) if (rec.Mailbox, rec.UIDL) holds it:
	// the attempt it stood for is over. DynamoDB leaves the claim to
	// expire (deleting it would cost another write).
	PutAccepted(ctx context.Context, rec *Record, accepted []Acceptance) error
	// Claim takes the delivery claim for (c.MessageID, c.Fingerprint) for
	// the record (c.Mailbox, c.UIDL) until c.Expires, in one conditional
	// write. It succeeds when no claim for the key exists, when the stored
	// one has expired (its Expires is not after c.At), when it is held by
	// the same (Mailbox, UIDL), or when takeOver is non-nil and the stored
	// claim has takeOver's Mailbox, UIDL and At (the caller found that
	// holder's attempt finished). Otherwise it writes nothing and returns
	// the stored claim and an error wrapping ErrClaimHeld. The key is
	// normalized like DuplicateKey's Message-ID; a MessageID DuplicateKey
	// refuses, or an empty Fingerprint, is an error (not ErrClaimHeld).
	// A claim never suppresses anything by itself.
	Claim(ctx context.Context, c Claim, takeOver *Claim) (Claim, error)
	// Accepted returns the duplicate-index entries of messageID for the
	// given recipients that have not expired, keyed by the recipient as
	// given. Message-IDs and recipients are compared after DuplicateKey;
	// a pair it refuses is never found.
	Accepted(ctx context.Context, messageID string, recipients []string) (map[string]Acceptance, error)
	// Close releases the store.
	Close() error
}
