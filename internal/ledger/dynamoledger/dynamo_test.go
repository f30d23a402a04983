package dynamoledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/ledgertest"
	"github.com/popconnector/popconnector/internal/testenv"
)

// env is one DynamoDB Local shared by the subtests of a test function;
// every subtest works on a table of its own.
type env struct {
	local  *testenv.DynamoDBLocal
	client *dynamodb.Client
}

var tableSeq atomic.Int64

// fastRetry keeps the client's retries but without the SDK's backoff of up
// to 20 s and its retry quota, so fault tests run in milliseconds.
func fastRetry(o *dynamodb.Options) {
	o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
		so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
		so.RateLimiter = ratelimit.None
	})
}

// table creates a fresh table and returns its name.
func (e *env) table(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("ledger-%d", tableSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := CreateTable(ctx, e.client, name); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	return name
}

// ledger returns a Ledger on a fresh table.
func (e *env) ledger(t *testing.T, opts Options) *Ledger {
	t.Helper()
	opts.Table = e.table(t)
	l := New(e.client, opts)
	t.Cleanup(func() { l.Close() })
	return l
}

func bg() context.Context { return context.Background() }

func rec(mailbox, uidl string) *ledger.Record {
	at := time.Date(2024, 5, 17, 8, 30, 0, 0, time.UTC)
	return &ledger.Record{
		Mailbox: mailbox, UIDL: uidl, FirstSeen: at, Size: 2048,
		ArchiveKey: mailbox + "/2024/05/17/" + uidl + ".eml", SHA256: strings.Repeat("cd", 32), ArchivedAt: at,
		MessageID: uidl + "@example.com", Sender: "sender@example.org",
		Recipients: []ledger.Recipient{{Address: "rcpt@example.com", Status: ledger.Pending}},
	}
}

// getItem reads an item's raw attributes.
func (e *env) getItem(t *testing.T, table, pk, sk string) map[string]types.AttributeValue {
	t.Helper()
	out, err := e.client.GetItem(bg(), &dynamodb.GetItemInput{
		TableName: aws.String(table),
		Key: map[string]types.AttributeValue{
			attrPK: &types.AttributeValueMemberS{Value: pk},
			attrSK: &types.AttributeValueMemberS{Value: sk},
		},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("GetItem: %v", err)
	}
	return out.Item
}

func TestDynamoDB(t *testing.T) {
	local := testenv.StartDynamoDBLocal(t)
	t.Logf("DynamoDB Local started in %v", local.StartTime.Round(time.Millisecond))
	e := &env{local: local, client: local.Client(t)}

	t.Run("Contract", func(t *testing.T) {
		ledgertest.Run(t, func(t *testing.T) ledger.Ledger { return e.ledger(t, Options{}) })
	})
	t.Run("ConcurrentPutsSameVersion", e.testConcurrentPutsSameVersion)
	t.Run("TransactionAllOrNone", e.testTransactionAllOrNone)
	t.Run("PutLimit", e.testPutLimit)
	t.Run("GetChunksAndDuplicates", e.testGetChunks)
	t.Run("ListPages", e.testListPages)
	t.Run("Faults", e.testFaults)
	t.Run("LostAnswer", e.testLostAnswer)
	t.Run("PutAcceptedOrder", e.testPutAcceptedOrder)
	t.Run("TransactionConflictRetried", e.testTransactionConflictRetried)
	t.Run("UnprocessedKeys", e.testUnprocessedKeys)
	t.Run("ContextEndsRetries", e.testContextEndsRetries)
	t.Run("LeaseContention", e.testLeaseContention)
	t.Run("LeaseClock", e.testLeaseClock)
	t.Run("RecordTTL", e.testRecordTTL)
	t.Run("Tables", e.testTables)
	t.Run("Capacity", e.testCapacity)
	t.Run("ClaimItem", e.testClaimItem)
	t.Run("ClaimOutlivesPutAccepted", e.testClaimOutlivesPutAccepted)
	t.Run("ClaimLostAnswer", e.testClaimLostAnswer)
	t.Run("ClaimHeldWithoutItem", e.testClaimHeldWithoutItem)
	t.Run("FixtureEabc1cd", e.testFixture)
}

// Two pollers that read the same state race to record it: exactly one
// wins, the other gets ErrConflict, for a create and for updates.
func (e *env) testConcurrentPutsSameVersion(t *testing.T) {
	l := e.ledger(t, Options{})
	other := New(e.client, Options{Table: l.table}) // a second poller
	for round := range 10 {
		uidl := fmt.Sprintf("race-%d", round)
		base := rec("box", uidl)
		if round%2 == 1 {
			if err := l.Put(bg(), base); err != nil {
				t.Fatal(err)
			}
		}
		a, b := *base, *base
		a.Attempts, b.Attempts = 1, 2
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		for i, w := range []struct {
			l *Ledger
			r *ledger.Record
		}{{l, &a}, {other, &b}} {
			wg.Go(func() {
				<-start
				errs[i] = w.l.Put(bg(), w.r)
			})
		}
		close(start)
		wg.Wait()
		var won, lost int
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, ledger.ErrConflict):
				lost++
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if won != 1 || lost != 1 {
			t.Fatalf("round %d (from version %d): %d won, %d conflicts; want 1 and 1 (%v)", round, base.Version, won, lost, errs)
		}
		got, err := l.Get(bg(), "box", []string{uidl})
		if err != nil {
			t.Fatal(err)
		}
		winner := &a
		if errs[0] != nil {
			winner = &b
		}
		if g := got[uidl]; g.Version != base.Version+1 || g.Attempts != winner.Attempts {
			t.Fatalf("round %d: stored version %d attempts %d, want %d and the winner's %d", round, g.Version, g.Attempts, base.Version+1, winner.Attempts)
		}
	}
}

// One failed condition among many records cancels the whole transaction,
// whichever position it has, and the error names the record.
func (e *env) testTransactionAllOrNone(t *testing.T) {
	l := e.ledger(t, Options{})
	existing := rec("box", "existing")
	if err := l.Put(bg(), existing); err != nil {
		t.Fatal(err)
	}
	for _, pos := range []int{0, 12, 24} {
		var recs []*ledger.Record
		for i := range 25 {
			recs = append(recs, rec("box", fmt.Sprintf("p%d-%02d", pos, i)))
		}
		stale := rec("box", "existing") // Version 0, but the record exists
		recs[pos] = stale
		err := l.Put(bg(), recs...)
		if !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("stale record at %d: Put = %v, want ErrConflict", pos, err)
		}
		if !strings.Contains(err.Error(), `UIDL "existing": stored version 1, writer read version 0`) {
			t.Errorf("conflict error does not name the record: %v", err)
		}
		list, err := l.List(bg(), "box")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Fatalf("stale record at %d: %d records stored, want only the existing one", pos, len(list))
		}
		for _, r := range recs {
			if r.Version != 0 {
				t.Fatalf("caller's Version changed by a failed Put")
			}
		}
	}
	// And without the stale record all 25 commit in one request.
	var recs []*ledger.Record
	for i := range 25 {
		recs = append(recs, rec(fmt.Sprintf("box%d", i%3), fmt.Sprintf("ok-%02d", i)))
	}
	l.ResetStats()
	if err := l.Put(bg(), recs...); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Calls["TransactWriteItems"] != 1 || len(s.Calls) != 1 {
		t.Fatalf("calls for a 25-record Put: %v, want one TransactWriteItems", s.Calls)
	}
}

func (e *env) testPutLimit(t *testing.T) {
	l := e.ledger(t, Options{})
	mk := func(n int) []*ledger.Record {
		var recs []*ledger.Record
		for i := range n {
			recs = append(recs, rec("box", fmt.Sprintf("n%d-%03d", n, i)))
		}
		return recs
	}
	err := l.Put(bg(), mk(MaxPut+1)...)
	if err == nil || errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("Put of %d records = %v, want a plain error", MaxPut+1, err)
	}
	if err := l.Put(bg(), mk(MaxPut)...); err != nil {
		t.Fatalf("Put of %d records: %v", MaxPut, err)
	}
	list, err := l.List(bg(), "box")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != MaxPut {
		t.Fatalf("%d records stored, want %d", len(list), MaxPut)
	}
}

// Get splits into BatchGetItem requests of 100 keys and ignores duplicate,
// empty and impossible UIDLs.
func (e *env) testGetChunks(t *testing.T) {
	l := e.ledger(t, Options{})
	var uidls []string
	for chunk := range 2 {
		var recs []*ledger.Record
		for i := range 75 {
			u := fmt.Sprintf("m%03d", chunk*75+i)
			recs = append(recs, rec("box", u))
			uidls = append(uidls, u)
		}
		if err := l.Put(bg(), recs...); err != nil {
			t.Fatal(err)
		}
	}
	ask := append([]string{}, uidls...)
	for i := range 100 {
		ask = append(ask, fmt.Sprintf("missing-%d", i))
	}
	ask = append(ask, uidls[:10]...) // duplicates
	ask = append(ask, "", strings.Repeat("x", 2000))
	l.ResetStats()
	m, err := l.Get(bg(), "box", ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != len(uidls) {
		t.Fatalf("Get = %d records, want %d", len(m), len(uidls))
	}
	for _, u := range uidls {
		if m[u] == nil || m[u].UIDL != u {
			t.Fatalf("record %s missing or misfiled", u)
		}
	}
	if got := l.Stats().Calls["BatchGetItem"]; got != 3 {
		t.Fatalf("BatchGetItem calls for 250 distinct keys = %d, want 3", got)
	}
}

// List follows Query's pagination (1 MB pages).
func (e *env) testListPages(t *testing.T) {
	l := e.ledger(t, Options{})
	const n = 12
	for i := range n {
		r := rec("box", fmt.Sprintf("big-%02d", i))
		r.FirstSeen = r.FirstSeen.Add(time.Duration(n-i) * time.Second) // reverse of key order
		r.LastError = strings.Repeat("e", 150<<10)
		if err := l.Put(bg(), r); err != nil {
			t.Fatal(err)
		}
	}
	l.ResetStats()
	list, err := l.List(bg(), "box")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("List = %d records, want %d", len(list), n)
	}
	for i, r := range list {
		if want := fmt.Sprintf("big-%02d", n-1-i); r.UIDL != want {
			t.Fatalf("List[%d] = %s, want %s (FirstSeen order)", i, r.UIDL, want)
		}
	}
	if got := l.Stats().Calls["Query"]; got < 2 {
		t.Fatalf("Query calls for 1.8 MB of records = %d, want at least 2 pages", got)
	}
}

// Two pollers with their own clients race for one lease: one gets it.
func (e *env) testLeaseContention(t *testing.T) {
	table := e.table(t)
	a := New(e.local.Client(t), Options{Table: table})
	b := New(e.local.Client(t), Options{Table: table})
	for round := range 10 {
		mailbox := fmt.Sprintf("box-%d", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		leases := make([]ledger.Lease, 2)
		errs := make([]error, 2)
		for i, p := range []*Ledger{a, b} {
			wg.Go(func() {
				<-start
				leases[i], errs[i] = p.Lease(bg(), mailbox, fmt.Sprintf("poller-%d", i), time.Minute)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: both pollers hold the lease", round)
				}
				winner = i
			case !errors.Is(err, ledger.ErrLeaseHeld):
				t.Fatalf("round %d: Lease = %v, want ErrLeaseHeld", round, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody got the lease: %v", round, errs)
		}
		loser := 1 - winner
		if want := fmt.Sprintf("held by %q", fmt.Sprintf("poller-%d", winner)); !strings.Contains(errs[loser].Error(), want) {
			t.Errorf("loser's error %q does not say %s", errs[loser], want)
		}
		if err := leases[winner].Renew(bg()); err != nil {
			t.Fatalf("Renew by the holder: %v", err)
		}
		if err := leases[winner].Release(bg()); err != nil {
			t.Fatal(err)
		}
		// Released: the other poller gets it now.
		if _, err := []*Ledger{a, b}[loser].Lease(bg(), mailbox, fmt.Sprintf("poller-%d", loser), time.Minute); err != nil {
			t.Fatalf("Lease after release: %v", err)
		}
	}
}

// The lease compares expiry with Options.Now; a hold broken by another
// poller's take-and-release is reported as lost.
func (e *env) testLeaseClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l := e.ledger(t, Options{Now: clock})

	a, err := l.Lease(bg(), "box", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	item := e.getItem(t, l.table, pkOf("box"), skLease)
	if got, want := numberAttr(item, attrExpires), now.Add(time.Minute).UnixMilli(); got != want {
		t.Fatalf("expires = %d, want %d", got, want)
	}
	if got, want := numberAttr(item, attrTTL), now.Add(time.Minute+leaseItemTTL).Unix(); got != want {
		t.Fatalf("lease ttl = %d, want %d", got, want)
	}
	advance(59 * time.Second)
	if _, err := l.Lease(bg(), "box", "b", time.Minute); !errors.Is(err, ledger.ErrLeaseHeld) {
		t.Fatalf("Lease before expiry = %v, want ErrLeaseHeld", err)
	}
	advance(2 * time.Second)
	// Expired but not taken: the holder may still renew.
	if err := a.Renew(bg()); err != nil {
		t.Fatalf("Renew of an expired, untaken lease: %v", err)
	}
	advance(61 * time.Second)
	b, err := l.Lease(bg(), "box", "b", time.Minute)
	if err != nil {
		t.Fatalf("Lease after expiry: %v", err)
	}
	if err := b.Release(bg()); err != nil {
		t.Fatal(err)
	}
	// b took and released a's lease: a's hold was broken although nobody
	// holds the lease now.
	err = a.Renew(bg())
	if !errors.Is(err, ledger.ErrLeaseHeld) || !strings.Contains(err.Error(), "lease gone") {
		t.Fatalf("Renew after another poller took and released = %v, want ErrLeaseHeld (lease gone)", err)
	}
	if err := a.Release(bg()); err != nil {
		t.Fatalf("Release of a lost lease: %v", err)
	}
}

// Deleted records carry ttl = DeletedAt + RecordTTL; others none.
func (e *env) testRecordTTL(t *testing.T) {
	ctx := bg()
	for _, c := range []struct {
		name string
		ttl  time.Duration
		want func(deletedAt time.Time) int64
	}{
		{"default", 0, func(d time.Time) int64 { return ttlAt(d.Add(ledger.DefaultRecordRetention)) }},
		{"one day", 24 * time.Hour, func(d time.Time) int64 { return ttlAt(d.Add(24 * time.Hour)) }},
		{"off", -1, func(time.Time) int64 { return 0 }},
	} {
		l := e.ledger(t, Options{RecordTTL: c.ttl})
		r := rec("box", "m")
		if err := l.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		if _, has := e.getItem(t, l.table, pkOf("box"), skOf("m"))[attrTTL]; has {
			t.Fatalf("%s: ttl set on a record that is not deleted", c.name)
		}
		r.DeletedAt = time.Now().UTC()
		if err := l.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		item := e.getItem(t, l.table, pkOf("box"), skOf("m"))
		_, has := item[attrTTL]
		want := c.want(r.DeletedAt)
		if got := numberAttr(item, attrTTL); got != want || has != (want != 0) {
			t.Fatalf("%s: ttl = %d (present %v), want %d", c.name, got, has, want)
		}
		desc, err := e.client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(l.table)})
		if err != nil {
			t.Fatal(err)
		}
		if d := desc.TimeToLiveDescription; d == nil || aws.ToString(d.AttributeName) != attrTTL || d.TimeToLiveStatus != types.TimeToLiveStatusEnabled {
			t.Fatalf("%s: table TTL = %+v, want enabled on %q", c.name, d, attrTTL)
		}
	}
}

func (e *env) testTables(t *testing.T) {
	ctx := bg()
	name := e.table(t)
	if err := CreateTable(ctx, e.client, name); err != nil {
		t.Fatalf("CreateTable of an existing table: %v", err)
	}
	if err := CheckTable(ctx, e.client, name); err != nil {
		t.Fatalf("CheckTable: %v", err)
	}
	var notFound *types.ResourceNotFoundException
	if err := CheckTable(ctx, e.client, "no-such-table"); !errors.As(err, &notFound) {
		t.Fatalf("CheckTable of a missing table = %v, want ResourceNotFoundException", err)
	}
	_, err := e.client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String("wrong-design"),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func(context.Context, *dynamodb.Client, string) error{CheckTable, CreateTable} {
		if err := f(ctx, e.client, "wrong-design"); !errors.Is(err, ErrTableDesign) {
			t.Fatalf("on a table keyed by id: %v, want ErrTableDesign", err)
		}
	}
}
