package dynamoledger

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
)

const (
	// DefaultRecordTTL is how long a deleted message's record is kept
	// after its DeletedAt when Options.RecordTTL is zero: the ledger's
	// one default, ledger.DefaultRecordRetention. Every poll's List reads
	// every record the mailbox keeps (one Query), so the retention sets
	// the read cost: measured 0.2-0.3 read units per kept record per
	// poll, a week of records at a 5-minute schedule is 2,016 reads each.
	DefaultRecordTTL = ledger.DefaultRecordRetention
	// DefaultMaxAttempts is Options.MaxAttempts when zero.
	DefaultMaxAttempts = 5
	// MaxPut is the most records one Put takes (TransactWriteItems' limit).
	MaxPut = 100
	// getChunk is BatchGetItem's limit on keys per request.
	getChunk = 100
)

// Backoff of the ledger's own retries: full jitter, doubling from
// backoffBase up to backoffMax.
const (
	backoffBase = 25 * time.Millisecond
	backoffMax  = time.Second
)

// Options configure New.
type Options struct {
	// Table is the table's name (required).
	Table string
	// RecordTTL is how long after its DeletedAt a record is kept: the ttl
	// attribute of a deleted record (rounded up to the second). Zero means
	// DefaultRecordTTL; negative writes no ttl attribute (records are kept
	// for ever).
	RecordTTL time.Duration
	// Now is the clock for leases; nil means time.Now.
	Now func() time.Time
	// MaxAttempts is how often one request is tried in all before its
	// error is returned: by the client's retryer for throttling, 5xx,
	// timeouts and connection errors (it is passed as the per-operation
	// RetryMaxAttempts), by the ledger for transaction conflicts and
	// unprocessed keys. Zero means DefaultMaxAttempts.
	MaxAttempts int
	// CountCapacity asks DynamoDB for the consumed capacity of every
	// request (ReturnConsumedCapacity TOTAL) and adds it up in Stats.
	CountCapacity bool
}

// Ledger is a DynamoDB-backed ledger.Ledger. It is safe for concurrent use.
type Ledger struct {
	client      *dynamodb.Client
	table       string
	recordTTL   time.Duration
	now         func() time.Time
	maxAttempts int
	capacity    types.ReturnConsumedCapacity

	mu    sync.Mutex
	stats Stats
}

var _ ledger.Ledger = (*Ledger)(nil)

// New returns a Ledger on table opts.Table through client. It sends no
// request; see CheckTable and CreateTable.
func New(client *dynamodb.Client, opts Options) *Ledger {
	l := &Ledger{
		client:      client,
		table:       opts.Table,
		recordTTL:   opts.RecordTTL,
		now:         opts.Now,
		maxAttempts: opts.MaxAttempts,
		capacity:    types.ReturnConsumedCapacityNone,
		stats:       Stats{Calls: map[string]int64{}, ItemsWritten: map[string]int64{}},
	}
	if l.recordTTL == 0 {
		l.recordTTL = DefaultRecordTTL
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.maxAttempts <= 0 {
		l.maxAttempts = DefaultMaxAttempts
	}
	if opts.CountCapacity {
		l.capacity = types.ReturnConsumedCapacityTotal
	}
	return l
}

// Close does nothing: the client belongs to the caller.
func (l *Ledger) Close() error { return nil }

// Stats counts what a Ledger sent.
type Stats struct {
	// Calls counts API calls by operation name (PutItem, TransactWriteItems,
	// BatchGetItem, GetItem, Query, UpdateItem, DeleteItem). The client's retries
	// within one call are not counted again; the ledger's own are.
	Calls map[string]int64
	// ItemsWritten counts the items (records, lease, index and claim items) that
	// successful calls wrote or deleted, by operation name. DynamoDB bills
	// an item of a TransactWriteItems as two writes.
	ItemsWritten map[string]int64
	// ReadUnits and WriteUnits add up the capacity DynamoDB reported for
	// successful calls, with Options.CountCapacity. (DynamoDB Local
	// misreports TransactWriteItems: four times one item's units whatever
	// the number of items.)
	ReadUnits, WriteUnits float64
}

// Stats returns a copy of the counters.
func (l *Ledger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Calls = maps.Clone(l.stats.Calls)
	s.ItemsWritten = maps.Clone(l.stats.ItemsWritten)
	return s
}

// ResetStats zeroes the counters.
func (l *Ledger) ResetStats() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats = Stats{Calls: map[string]int64{}, ItemsWritten: map[string]int64{}}
}

// count records one call of op, the items it wrote (0 for reads and
// failed calls) and the capacity it consumed.
func (l *Ledger) count(op string, written int, cc ...types.ConsumedCapacity) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.Calls[op]++
	if written > 0 {
		l.stats.ItemsWritten[op] += int64(written)
	}
	read := op == "BatchGetItem" || op == "Query" || op == "GetItem"
	for _, c := range cc {
		if c.CapacityUnits == nil {
			continue
		}
		if read {
			l.stats.ReadUnits += *c.CapacityUnits
		} else {
			l.stats.WriteUnits += *c.CapacityUnits
		}
	}
}

func one(c *types.ConsumedCapacity) []types.ConsumedCapacity {
	if c == nil {
		return nil
	}
	return []types.ConsumedCapacity{*c}
}

// opts are the per-call client options: the attempt limit.
func (l *Ledger) opts(o *dynamodb.Options) { o.RetryMaxAttempts = l.maxAttempts }

// ready checks what every method needs before a request: a live ctx and
// a table name.
func (l *Ledger) ready(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dynamoledger: %s: %w", what, err)
	}
	if l.table == "" {
		return fmt.Errorf("dynamoledger: %s: no table name (Options.Table)", what)
	}
	return nil
}

func validMailbox(mailbox string) error {
	if mailbox == "" {
		return errors.New("dynamoledger: empty mailbox")
	}
	if len(pkPrefix)+len(mailbox) > maxPKSize {
		return fmt.Errorf("dynamoledger: mailbox name longer than %d bytes", maxPKSize-len(pkPrefix))
	}
	return nil
}

func validUIDL(uidl string) error {
	if uidl == "" {
		return errors.New("dynamoledger: empty UIDL")
	}
	if len(skPrefix)+len(uidl) > maxSKSize {
		return fmt.Errorf("dynamoledger: UIDL longer than %d bytes", maxSKSize-len(skPrefix))
	}
	return nil
}

// newToken returns 32 random hex digits: a write_id and ClientRequestToken
// (at most 36 characters).
func newToken() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b[:])
}

// sleep waits the jittered backoff before attempt (1-based) or until ctx ends.
func sleep(ctx context.Context, attempt int) error {
	d := backoffBase << min(attempt-1, 10)
	d = min(d, backoffMax)
	t := time.NewTimer(rand.N(d) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Get returns the stored records among uidls for mailbox, read with
// strongly consistent BatchGetItem requests of up to 100 keys.
func (l *Ledger) Get(ctx context.Context, mailbox string, uidls []string) (map[string]*ledger.Record, error) {
	if err := l.ready(ctx, "get"); err != nil {
		return nil, err
	}
	if err := validMailbox(mailbox); err != nil {
		return nil, err
	}
	out := make(map[string]*ledger.Record)
	seen := make(map[string]bool, len(uidls))
	var keys []map[string]types.AttributeValue
	for _, u := range uidls {
		// No record can have an empty or oversized UIDL; BatchGetItem
		// refuses duplicate keys.
		if validUIDL(u) != nil || seen[u] {
			continue
		}
		seen[u] = true
		keys = append(keys, keyOf(mailbox, u))
	}
	for chunk := range slices.Chunk(keys, getChunk) {
		if err := l.batchGet(ctx, chunk, out); err != nil {
			return nil, fmt.Errorf("dynamoledger: get %s: %w", mailbox, err)
		}
	}
	return out, nil
}

// batchGet reads keys into out, retrying UnprocessedKeys; it gives up after
// MaxAttempts requests in a row that made no progress.
func (l *Ledger) batchGet(ctx context.Context, keys []map[string]types.AttributeValue, out map[string]*ledger.Record) error {
	stalled := 0
	for len(keys) > 0 {
		res, err := l.client.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{
			RequestItems: map[string]types.KeysAndAttributes{
				l.table: {Keys: keys, ConsistentRead: aws.Bool(true)},
			},
			ReturnConsumedCapacity: l.capacity,
		}, l.opts)
		if err != nil {
			return err
		}
		l.count("BatchGetItem", 0, res.ConsumedCapacity...)
		for _, av := range res.Responses[l.table] {
			r, err := decodeRecord(av)
			if err != nil {
				return fmt.Errorf("undecodable item %s/%s: %w", stringAttr(av, attrPK), stringAttr(av, attrSK), err)
			}
			out[r.UIDL] = r
		}
		left := res.UnprocessedKeys[l.table].Keys
		if len(left) == 0 {
			return nil
		}
		if len(left) < len(keys) {
			stalled = 0
		} else if stalled++; stalled >= l.maxAttempts {
			return fmt.Errorf("%d keys still unprocessed after %d attempts (throttled)", len(left), stalled)
		}
		keys = left
		if err := sleep(ctx, stalled+1); err != nil {
			return err
		}
	}
	return nil
}

// List returns every record of mailbox, ordered by FirstSeen then UIDL,
// from strongly consistent Query pages.
func (l *Ledger) List(ctx context.Context, mailbox string) ([]*ledger.Record, error) {
	if err := l.ready(ctx, "list"); err != nil {
		return nil, err
	}
	if err := validMailbox(mailbox); err != nil {
		return nil, err
	}
	in := &dynamodb.QueryInput{
		TableName:                aws.String(l.table),
		KeyConditionExpression:   aws.String("#pk = :pk AND begins_with(#sk, :msg)"),
		ExpressionAttributeNames: map[string]string{"#pk": attrPK, "#sk": attrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk":  &types.AttributeValueMemberS{Value: pkOf(mailbox)},
			":msg": &types.AttributeValueMemberS{Value: skPrefix},
		},
		ConsistentRead:         aws.Bool(true),
		ReturnConsumedCapacity: l.capacity,
	}
	var out []*ledger.Record
	pages := dynamodb.NewQueryPaginator(l.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx, l.opts)
		if err != nil {
			return nil, fmt.Errorf("dynamoledger: list %s: %w", mailbox, err)
		}
		l.count("Query", 0, one(page.ConsumedCapacity)...)
		for _, av := range page.Items {
			r, err := decodeRecord(av)
			if err != nil {
				return nil, fmt.Errorf("dynamoledger: list %s: undecodable item %s: %w", mailbox, stringAttr(av, attrSK), err)
			}
			out = append(out, r)
		}
	}
	ledger.SortRecords(out)
	return out, nil
}

// putOp is one record of a Put, encoded before the request.
type putOp struct {
	rec  *ledger.Record
	want int64 // the Version the caller read; 0 = must not exist
	item map[string]types.AttributeValue
}

// condition returns the compare-and-swap condition of op.
func (op *putOp) condition() (expr string, names map[string]string, values map[string]types.AttributeValue) {
	if op.want == 0 {
		return "attribute_not_exists(#pk)", map[string]string{"#pk": attrPK}, nil
	}
	return "#v = :v", map[string]string{"#v": attrVersion}, map[string]types.AttributeValue{":v": numberValue(op.want)}
}

// Put writes recs conditionally and all or none: one record with a
// conditional PutItem, several with one TransactWriteItems. The callers'
// Versions are incremented only once the write succeeded.
func (l *Ledger) Put(ctx context.Context, recs ...*ledger.Record) error {
	if err := l.ready(ctx, "put"); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	if len(recs) > MaxPut {
		return fmt.Errorf("dynamoledger: put of %d records; at most %d are written at once", len(recs), MaxPut)
	}
	token := newToken()
	ops, err := l.prepare(recs, token)
	if err != nil {
		return err
	}
	if len(ops) == 1 {
		err = l.putItem(ctx, &ops[0], token)
	} else {
		err = l.transact(ctx, ops, token)
	}
	if err != nil {
		return err
	}
	for _, op := range ops {
		op.rec.Version = op.want + 1
	}
	return nil
}

// prepare checks and encodes the records of a Put written with token.
func (l *Ledger) prepare(recs []*ledger.Record, token string) ([]putOp, error) {
	ops := make([]putOp, len(recs))
	seen := make(map[[2]string]bool, len(recs))
	for i, r := range recs {
		if r == nil {
			return nil, errors.New("dynamoledger: put: nil record")
		}
		if err := validMailbox(r.Mailbox); err != nil {
			return nil, err
		}
		if err := validUIDL(r.UIDL); err != nil {
			return nil, err
		}
		if r.Version < 0 {
			return nil, fmt.Errorf("dynamoledger: put %s/%q: negative version %d", r.Mailbox, r.UIDL, r.Version)
		}
		id := [2]string{r.Mailbox, r.UIDL}
		if seen[id] {
			return nil, fmt.Errorf("dynamoledger: put: record %s/%q given twice", r.Mailbox, r.UIDL)
		}
		seen[id] = true
		item, err := encodeRecord(r, r.Version+1, token, l.recordTTL)
		if err != nil {
			return nil, fmt.Errorf("dynamoledger: put %s/%q: %w", r.Mailbox, r.UIDL, err)
		}
		ops[i] = putOp{rec: r, want: r.Version, item: item}
	}
	return ops, nil
}

// putItem writes one record with a conditional PutItem.
func (l *Ledger) putItem(ctx context.Context, op *putOp, token string) error {
	cond, names, values := op.condition()
	in := l.conditionalPut(op.item, cond, names, values)
	for attempt := 1; ; attempt++ {
		res, err := l.client.PutItem(ctx, in, l.opts)
		if err == nil {
			l.count("PutItem", 1, one(res.ConsumedCapacity)...)
			return nil
		}
		var ccf *types.ConditionalCheckFailedException
		var tc *types.TransactionConflictException
		if errors.As(err, &ccf) && stringAttr(ccf.Item, attrWriteID) == token {
			l.count("PutItem", 1)
			return nil // an attempt whose answer was lost had written it
		}
		l.count("PutItem", 0)
		switch {
		case errors.As(err, &ccf):
			return fmt.Errorf("dynamoledger: %w: %s", ledger.ErrConflict, conflictDetail(op, ccf.Item))
		case errors.As(err, &tc) && attempt < l.maxAttempts:
			// A transaction holds the item: retry.
		default:
			return fmt.Errorf("dynamoledger: put %s/%q: %w", op.rec.Mailbox, op.rec.UIDL, err)
		}
		if err := sleep(ctx, attempt); err != nil {
			return fmt.Errorf("dynamoledger: put %s/%q: %w", op.rec.Mailbox, op.rec.UIDL, err)
		}
	}
}

// conditionalPut is the PutItem of item on condition cond, which asks for
// the stored item when the condition fails (ALL_OLD): what the ledger's
// conditional writes report (a conflict, a lease's or claim's holder) or
// recognise as their own write whose answer was lost.
func (l *Ledger) conditionalPut(item map[string]types.AttributeValue, cond string, names map[string]string, values map[string]types.AttributeValue) *dynamodb.PutItemInput {
	return &dynamodb.PutItemInput{
		TableName:                           aws.String(l.table),
		Item:                                item,
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeNames:            names,
		ExpressionAttributeValues:           values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		ReturnConsumedCapacity:              l.capacity,
	}
}

// conflictDetail describes a failed condition; stored is the item as
// stored (nil when absent).
func conflictDetail(op *putOp, stored map[string]types.AttributeValue) string {
	have := "absent"
	if stored != nil {
		have = fmt.Sprintf("version %d", numberAttr(stored, attrVersion))
	}
	return fmt.Sprintf("mailbox %s UIDL %q: stored %s, writer read version %d", op.rec.Mailbox, op.rec.UIDL, have, op.want)
}

// transact writes several records with one TransactWriteItems. Its
// ClientRequestToken makes the client's retry of a transaction that had
// succeeded succeed again (within DynamoDB's 10-minute idempotency
// window). The ledger's own retries follow a definite cancellation, so
// each gets a new ClientRequestToken: DynamoDB must run it afresh, not
// answer from the cancelled one.
func (l *Ledger) transact(ctx context.Context, ops []putOp, token string) error {
	items := make([]types.TransactWriteItem, len(ops))
	for i := range ops {
		cond, names, values := ops[i].condition()
		items[i] = types.TransactWriteItem{Put: &types.Put{
			TableName:                           aws.String(l.table),
			Item:                                ops[i].item,
			ConditionExpression:                 aws.String(cond),
			ExpressionAttributeNames:            names,
			ExpressionAttributeValues:           values,
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		}}
	}
	written := len(items)
	in := &dynamodb.TransactWriteItemsInput{
		TransactItems:          items,
		ClientRequestToken:     aws.String(token),
		ReturnConsumedCapacity: l.capacity,
	}
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			in.ClientRequestToken = aws.String(newToken())
		}
		res, err := l.client.TransactWriteItems(ctx, in, l.opts)
		if err == nil {
			l.count("TransactWriteItems", written, res.ConsumedCapacity...)
			return nil
		}
		var tce *types.TransactionCanceledException
		var tc *types.TransactionConflictException
		if errors.As(err, &tce) && committed(tce, token) {
			l.count("TransactWriteItems", written)
			return nil
		}
		l.count("TransactWriteItems", 0)
		retry := false
		switch {
		case errors.As(err, &tce):
			var conflicts []string
			for i, reason := range tce.CancellationReasons {
				if aws.ToString(reason.Code) != "ConditionalCheckFailed" || i >= len(ops) {
					continue
				}
				conflicts = append(conflicts, conflictDetail(&ops[i], reason.Item))
			}
			if len(conflicts) > 0 {
				return fmt.Errorf("dynamoledger: put of %d records: %w: %s", len(ops), ledger.ErrConflict, strings.Join(conflicts, "; "))
			}
			retry = transientCancel(tce.CancellationReasons)
		case errors.As(err, &tc):
			retry = true
		}
		if !retry || attempt >= l.maxAttempts {
			return fmt.Errorf("dynamoledger: put of %d records: %w", len(ops), err)
		}
		if err := sleep(ctx, attempt); err != nil {
			return fmt.Errorf("dynamoledger: put of %d records: %w", len(ops), err)
		}
	}
}

// committed reports whether a cancelled transaction failed only because
// an earlier attempt of it, whose answer was lost, had committed: a failed
// condition found an item written with token (all or none: then all were).
// DynamoDB answers such a replay with success while the ClientRequestToken
// is fresh; this covers a replay after its 10 minutes.
func committed(tce *types.TransactionCanceledException, token string) bool {
	for _, r := range tce.CancellationReasons {
		if aws.ToString(r.Code) == "ConditionalCheckFailed" && stringAttr(r.Item, attrWriteID) == token {
			return true
		}
	}
	return false
}

// transientCancel reports whether a transaction was cancelled only for
// reasons a retry can clear: another transaction on an item, throttling.
func transientCancel(reasons []types.CancellationReason) bool {
	transient := false
	for _, r := range reasons {
		switch aws.ToString(r.Code) {
		case "", "None":
		case "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded":
			transient = true
		default:
			return false
		}
	}
	return transient
}
