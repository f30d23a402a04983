package dynamoledger

import (
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
)

// Key attributes and prefixes; see the package doc.
const (
	attrPK      = "pk"
	attrSK      = "sk"
	attrVersion = "version"
	attrWriteID = "write_id"
	attrTTL     = "ttl"
	attrOwner   = "owner"
	attrExpires = "expires"

	pkPrefix  = "MB#"
	skPrefix  = "MSG#"
	skLease   = "LEASE"
	maxPKSize = 2048 // DynamoDB's limit on a partition key value, bytes
	maxSKSize = 1024 // and on a sort key value
)

// recordItem mirrors ledger.Record as DynamoDB attributes. Times are
// RFC 3339 strings with nanoseconds and the writer's UTC offset, as in the
// record's JSON, so a record reads back exactly as written. item_test.go
// checks that every field of ledger.Record has its attribute here.
type recordItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`

	Mailbox string `dynamodbav:"mailbox"`
	UIDL    string `dynamodbav:"uidl"`

	FirstSeen string `dynamodbav:"first_seen,omitempty"`
	Size      int64  `dynamodbav:"size"`

	ArchiveKey string `dynamodbav:"archive_key,omitempty"`
	SHA256     string `dynamodbav:"sha256,omitempty"`
	ArchivedAt string `dynamodbav:"archived_at,omitempty"`

	Fingerprint string `dynamodbav:"fingerprint,omitempty"`

	MessageID      string `dynamodbav:"message_id,omitempty"`
	MessageIDAdded bool   `dynamodbav:"message_id_added,omitempty"`
	Sender         string `dynamodbav:"sender,omitempty"`
	Needs8BitMIME  bool   `dynamodbav:"needs_8bitmime,omitempty"`
	NeedsSMTPUTF8  bool   `dynamodbav:"needs_smtputf8,omitempty"`

	Recipients  []recipientItem `dynamodbav:"recipients,omitempty"`
	Attempts    int             `dynamodbav:"attempts,omitempty"`
	LastAttempt string          `dynamodbav:"last_attempt,omitempty"`
	NextAttempt string          `dynamodbav:"next_attempt,omitempty"`
	LastError   string          `dynamodbav:"last_error,omitempty"`
	GaveUp      bool            `dynamodbav:"gave_up,omitempty"`

	NextRefetch   string `dynamodbav:"next_refetch,omitempty"`
	NextNotice    string `dynamodbav:"next_notice,omitempty"`
	TooLargeLimit int64  `dynamodbav:"too_large_limit,omitempty"`

	RecipientSource   string   `dynamodbav:"recipient_source,omitempty"`
	TraceHops         int      `dynamodbav:"trace_hops,omitempty"`
	Disposition       string   `dynamodbav:"disposition,omitempty"`
	DispositionReason string   `dynamodbav:"disposition_reason,omitempty"`
	DispositionAt     string   `dynamodbav:"disposition_at,omitempty"`
	BadmailKey        string   `dynamodbav:"badmail_key,omitempty"`
	ListSize          int64    `dynamodbav:"list_size,omitempty"`
	Held              string   `dynamodbav:"held,omitempty"`
	Notified          []string `dynamodbav:"notified,omitempty"`
	HeldFetches       int      `dynamodbav:"held_fetches,omitempty"`
	NoticesRefused    []string `dynamodbav:"notices_refused,omitempty"`

	DeletedAt    string `dynamodbav:"deleted_at,omitempty"`
	SupersededAt string `dynamodbav:"superseded_at,omitempty"`

	Version int64  `dynamodbav:"version"`
	WriteID string `dynamodbav:"write_id"`
	TTL     int64  `dynamodbav:"ttl,omitempty"`
}

// recipientItem mirrors ledger.Recipient.
type recipientItem struct {
	Address  string `dynamodbav:"address"`
	Status   string `dynamodbav:"status"`
	Code     int    `dynamodbav:"code,omitempty"`
	Enhanced string `dynamodbav:"enhanced,omitempty"`
	Reply    string `dynamodbav:"reply,omitempty"`
	At       string `dynamodbav:"at,omitempty"`
	// Failure is a nested map; absent when the recipient has none.
	Failure *failureItem `dynamodbav:"failure,omitempty"`
}

// failureItem mirrors ledger.Failure (the same fields, so the two convert
// into each other). Zero attributes are left out; an empty Failure is
// still stored, as an empty map, and reads back as non-nil.
type failureItem struct {
	Op        string `dynamodbav:"op,omitempty"`
	Code      int    `dynamodbav:"code,omitempty"`
	Enhanced  string `dynamodbav:"enhanced,omitempty"`
	Temporary bool   `dynamodbav:"temporary,omitempty"`
	Local     bool   `dynamodbav:"local,omitempty"`
	Message   string `dynamodbav:"message,omitempty"`
}

func pkOf(mailbox string) string { return pkPrefix + mailbox }
func skOf(uidl string) string    { return skPrefix + uidl }

func keyOf(mailbox, uidl string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrPK: &types.AttributeValueMemberS{Value: pkOf(mailbox)},
		attrSK: &types.AttributeValueMemberS{Value: skOf(uidl)},
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("attribute %s: %w", field, err)
	}
	return t, nil
}

// encodeRecord returns the item that stores r as Version version, written
// by the Put with token writeID. recordTTL > 0 sets the ttl attribute of a
// deleted record.
func encodeRecord(r *ledger.Record, version int64, writeID string, recordTTL time.Duration) (map[string]types.AttributeValue, error) {
	it := recordItem{
		PK:                pkOf(r.Mailbox),
		SK:                skOf(r.UIDL),
		Mailbox:           r.Mailbox,
		UIDL:              r.UIDL,
		FirstSeen:         formatTime(r.FirstSeen),
		Size:              r.Size,
		ArchiveKey:        r.ArchiveKey,
		SHA256:            r.SHA256,
		ArchivedAt:        formatTime(r.ArchivedAt),
		Fingerprint:       r.Fingerprint,
		MessageID:         r.MessageID,
		MessageIDAdded:    r.MessageIDAdded,
		Sender:            r.Sender,
		Needs8BitMIME:     r.Needs8BitMIME,
		NeedsSMTPUTF8:     r.NeedsSMTPUTF8,
		Attempts:          r.Attempts,
		LastAttempt:       formatTime(r.LastAttempt),
		NextAttempt:       formatTime(r.NextAttempt),
		LastError:         r.LastError,
		GaveUp:            r.GaveUp,
		NextRefetch:       formatTime(r.NextRefetch),
		NextNotice:        formatTime(r.NextNotice),
		TooLargeLimit:     r.TooLargeLimit,
		RecipientSource:   r.RecipientSource,
		TraceHops:         r.TraceHops,
		Disposition:       string(r.Disposition),
		DispositionReason: r.DispositionReason,
		DispositionAt:     formatTime(r.DispositionAt),
		BadmailKey:        r.BadmailKey,
		ListSize:          r.ListSize,
		Held:              r.Held,
		Notified:          r.Notified,
		HeldFetches:       r.HeldFetches,
		NoticesRefused:    r.NoticesRefused,
		DeletedAt:         formatTime(r.DeletedAt),
		SupersededAt:      formatTime(r.SupersededAt),
		Version:           version,
		WriteID:           writeID,
	}
	for _, rc := range r.Recipients {
		it.Recipients = append(it.Recipients, recipientItem{
			Address:  rc.Address,
			Status:   string(rc.Status),
			Code:     rc.Code,
			Enhanced: rc.Enhanced,
			Reply:    rc.Reply,
			At:       formatTime(rc.At),
			Failure:  (*failureItem)(rc.Failure),
		})
	}
	if !r.DeletedAt.IsZero() && recordTTL > 0 {
		// Rounded up: DynamoDB never removes a record before its retention.
		it.TTL = ttlAt(r.DeletedAt.Add(recordTTL))
	}
	return attributevalue.MarshalMap(it)
}

// decodeRecord turns a record item back into a Record, upgraded
// (ledger.Record.Upgrade) as every read returns it.
func decodeRecord(av map[string]types.AttributeValue) (*ledger.Record, error) {
	var it recordItem
	if err := attributevalue.UnmarshalMap(av, &it); err != nil {
		return nil, err
	}
	if it.PK != pkOf(it.Mailbox) || it.SK != skOf(it.UIDL) {
		return nil, fmt.Errorf("key %q/%q does not match mailbox %q and UIDL %q", it.PK, it.SK, it.Mailbox, it.UIDL)
	}
	r := &ledger.Record{
		Mailbox:           it.Mailbox,
		UIDL:              it.UIDL,
		Size:              it.Size,
		ArchiveKey:        it.ArchiveKey,
		SHA256:            it.SHA256,
		Fingerprint:       it.Fingerprint,
		MessageID:         it.MessageID,
		MessageIDAdded:    it.MessageIDAdded,
		Sender:            it.Sender,
		Needs8BitMIME:     it.Needs8BitMIME,
		NeedsSMTPUTF8:     it.NeedsSMTPUTF8,
		Attempts:          it.Attempts,
		LastError:         it.LastError,
		GaveUp:            it.GaveUp,
		TooLargeLimit:     it.TooLargeLimit,
		RecipientSource:   it.RecipientSource,
		TraceHops:         it.TraceHops,
		Disposition:       ledger.Disposition(it.Disposition),
		DispositionReason: it.DispositionReason,
		BadmailKey:        it.BadmailKey,
		ListSize:          it.ListSize,
		Held:              it.Held,
		Notified:          it.Notified,
		HeldFetches:       it.HeldFetches,
		NoticesRefused:    it.NoticesRefused,
		Version:           it.Version,
	}
	var err error
	for _, f := range []struct {
		name string
		s    string
		t    *time.Time
	}{
		{"first_seen", it.FirstSeen, &r.FirstSeen},
		{"archived_at", it.ArchivedAt, &r.ArchivedAt},
		{"last_attempt", it.LastAttempt, &r.LastAttempt},
		{"next_attempt", it.NextAttempt, &r.NextAttempt},
		{"next_refetch", it.NextRefetch, &r.NextRefetch},
		{"next_notice", it.NextNotice, &r.NextNotice},
		{"deleted_at", it.DeletedAt, &r.DeletedAt},
		{"superseded_at", it.SupersededAt, &r.SupersededAt},
		{"disposition_at", it.DispositionAt, &r.DispositionAt},
	} {
		if *f.t, err = parseTime(f.name, f.s); err != nil {
			return nil, err
		}
	}
	for i, rc := range it.Recipients {
		at, err := parseTime("recipients["+strconv.Itoa(i)+"].at", rc.At)
		if err != nil {
			return nil, err
		}
		r.Recipients = append(r.Recipients, ledger.Recipient{
			Address:  rc.Address,
			Status:   ledger.RecipientStatus(rc.Status),
			Code:     rc.Code,
			Enhanced: rc.Enhanced,
			Reply:    rc.Reply,
			At:       at,
			Failure:  (*ledger.Failure)(rc.Failure),
		})
	}
	r.Upgrade()
	return r, nil
}

// stringAttr returns the string attribute name of av, or "".
func stringAttr(av map[string]types.AttributeValue, name string) string {
	if s, ok := av[name].(*types.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

// numberAttr returns the integer attribute name of av, or 0.
func numberAttr(av map[string]types.AttributeValue, name string) int64 {
	if n, ok := av[name].(*types.AttributeValueMemberN); ok {
		v, err := strconv.ParseInt(n.Value, 10, 64)
		if err == nil {
			return v
		}
	}
	return 0
}

// ttlAt is the ttl attribute for an item that stops counting at t: epoch
// seconds, rounded up, so DynamoDB never removes it before t.
func ttlAt(t time.Time) int64 {
	ttl := t.Unix()
	if t.After(time.Unix(ttl, 0)) {
		ttl++
	}
	return ttl
}

func numberValue(v int64) *types.AttributeValueMemberN {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}
