package dynamoledger

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
)

// tagNames returns the first element of each field's tag key of struct type t.
func tagNames(t reflect.Type, key string) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get(key), ",")
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// A field added to ledger.Record or ledger.Recipient must get its attribute
// here, or records would silently lose it on the way through DynamoDB.
func TestItemMirrorsRecord(t *testing.T) {
	for _, c := range []struct {
		record, item reflect.Type
		extra        []string // attributes that are not Record fields
	}{
		{reflect.TypeFor[ledger.Record](), reflect.TypeFor[recordItem](), []string{attrPK, attrSK, attrTTL, attrWriteID}},
		{reflect.TypeFor[ledger.Recipient](), reflect.TypeFor[recipientItem](), nil},
		{reflect.TypeFor[ledger.Failure](), reflect.TypeFor[failureItem](), nil},
	} {
		want := append(tagNames(c.record, "json"), c.extra...)
		slices.Sort(want)
		got := tagNames(c.item, "dynamodbav")
		if !slices.Equal(got, want) {
			t.Errorf("%s attributes %v\nwant %s fields + %v = %v", c.item, got, c.record, c.extra, want)
		}
	}
}

// fullRecord sets every field of a Record to a non-zero value.
func fullRecord() *ledger.Record {
	cest := time.FixedZone("CEST", 2*60*60)
	t0 := time.Date(2024, 5, 17, 8, 30, 15, 123456789, time.UTC)
	return &ledger.Record{
		Mailbox: "user@example.com", UIDL: "uidl#with:odd/chars~",
		FirstSeen: t0, Size: 150 << 20,
		ArchiveKey: "user@example.com/2024/05/17/x.eml", SHA256: strings.Repeat("ab", 32), ArchivedAt: t0.In(cest),
		MessageID: "x@example.com", MessageIDAdded: true, Sender: "s@example.org",
		Needs8BitMIME: true, NeedsSMTPUTF8: true,
		Recipients: []ledger.Recipient{
			{Address: "a@example.com", Status: ledger.Accepted, Code: 250, Enhanced: "2.0.0", Reply: "ok", At: t0.Add(time.Second)},
			{Address: "b@example.com", Status: ledger.Rejected, Code: 550, Enhanced: "5.1.1", Reply: "no such user", At: t0.In(cest),
				Failure: &ledger.Failure{Op: "rcpt", Code: 550, Enhanced: "5.1.1", Temporary: true, Local: true, Message: "no such user"}},
			{Address: "c@example.com", Status: ledger.Deferred, Failure: &ledger.Failure{}},
		},
		Attempts: 3, LastAttempt: t0.Add(time.Minute), NextAttempt: t0.Add(time.Hour),
		LastError: "550 5.1.1 no such user", GaveUp: true,
		NextRefetch: t0.Add(2 * time.Hour).In(cest), NextNotice: t0.Add(3 * time.Hour), TooLargeLimit: 35 << 20,
		RecipientSource: "Delivered-To", TraceHops: 2,
		Disposition: ledger.DispositionBadmail, DispositionReason: "gave up", DispositionAt: t0.Add(90 * time.Minute).In(cest),
		BadmailKey: "badmail/user@example.com/2024/05/17/x.eml", Notified: []string{"badmail", "spam"},
		ListSize: 150<<20 - 2, Held: "listed 10 octets, sent 9", HeldFetches: 2, NoticesRefused: []string{"spam"},
		Fingerprint: "v1:" + strings.Repeat("0f", 32),
		DeletedAt:   t0.Add(2 * time.Hour).In(cest), SupersededAt: t0.Add(3 * time.Hour).In(cest),
		Version: 7,
	}
}

func TestItemRoundTrip(t *testing.T) {
	full := fullRecord()
	// Every field is set, so a field the encoding drops shows as a
	// difference below.
	for _, v := range []reflect.Value{reflect.ValueOf(*full), reflect.ValueOf(full.Recipients[1]), reflect.ValueOf(*full.Recipients[1].Failure)} {
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Fatalf("fullRecord leaves %s.%s zero", v.Type(), v.Type().Field(i).Name)
			}
		}
	}
	empty := &ledger.Record{Mailbox: "m", UIDL: "u", Version: 1}
	for _, r := range []*ledger.Record{full, empty} {
		av, err := encodeRecord(r, r.Version, "token", DefaultRecordTTL)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeRecord(av)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(r)
		got, _ := json.Marshal(back)
		if string(got) != string(want) {
			t.Errorf("round trip:\n got %s\nwant %s", got, want)
		}
		if stringAttr(av, attrWriteID) != "token" {
			t.Errorf("write_id = %q", stringAttr(av, attrWriteID))
		}
	}
	// Zero values are left out, so a fresh record's item stays small.
	av, _ := encodeRecord(empty, 1, "token", DefaultRecordTTL)
	var names []string
	for k := range av {
		names = append(names, k)
	}
	slices.Sort(names)
	if want := []string{"mailbox", "pk", "size", "sk", "uidl", "version", "write_id"}; !slices.Equal(names, want) {
		t.Errorf("attributes of an empty record = %v, want %v", names, want)
	}
}

func TestItemTTL(t *testing.T) {
	deleted := fullRecord()
	for _, c := range []struct {
		name string
		rec  *ledger.Record
		ttl  time.Duration
		want int64
	}{
		// Rounded up to the second: DeletedAt has nanoseconds.
		{"deleted", deleted, 90 * 24 * time.Hour, deleted.DeletedAt.Add(90*24*time.Hour).Unix() + 1},
		{"deleted, short TTL", deleted, time.Hour, deleted.DeletedAt.Add(time.Hour).Unix() + 1},
		{"deleted on the second", &ledger.Record{Mailbox: "m", UIDL: "u", DeletedAt: time.Unix(1_780_000_000, 0)}, time.Hour, 1_780_000_000 + 3600},
		{"deleted, TTL off", deleted, -1, 0},
		{"not deleted", &ledger.Record{Mailbox: "m", UIDL: "u"}, time.Hour, 0},
	} {
		av, err := encodeRecord(c.rec, 1, "t", c.ttl)
		if err != nil {
			t.Fatal(err)
		}
		_, has := av[attrTTL]
		if got := numberAttr(av, attrTTL); got != c.want || has != (c.want != 0) {
			t.Errorf("%s: ttl = %d (present %v), want %d", c.name, got, has, c.want)
		}
	}
}

func TestDecodeRejectsDamagedItems(t *testing.T) {
	good, err := encodeRecord(fullRecord(), 1, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		change func(map[string]types.AttributeValue)
	}{
		{"key does not match uidl", func(av map[string]types.AttributeValue) {
			av["uidl"] = &types.AttributeValueMemberS{Value: "other"}
		}},
		{"bad time", func(av map[string]types.AttributeValue) {
			av["first_seen"] = &types.AttributeValueMemberS{Value: "yesterday"}
		}},
		{"wrong type", func(av map[string]types.AttributeValue) {
			av["size"] = &types.AttributeValueMemberS{Value: "big"}
		}},
	} {
		av := make(map[string]types.AttributeValue, len(good))
		for k, v := range good {
			av[k] = v
		}
		c.change(av)
		if r, err := decodeRecord(av); err == nil {
			t.Errorf("%s: decoded as %+v, want an error", c.name, r)
		}
	}
}
