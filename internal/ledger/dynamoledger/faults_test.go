package dynamoledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/popconnector/popconnector/internal/ledger"
)

// fault is what faultTransport does with one request instead of passing
// it through.
type fault struct {
	status int    // answer with this status and body, without forwarding
	body   string //
	err    error  // fail with this transport error, without forwarding
	// after forwards the request (so it takes effect), then discards the
	// answer and fails with err or status/body: a lost answer.
	after bool
	// rewrite forwards the request and replaces the answer's body with
	// rewrite(request body, answer body).
	rewrite func(req, resp []byte) []byte
	// hang blocks until the request's context ends.
	hang bool
}

// faultTransport sits between the SDK and DynamoDB Local: plan says, for
// the nth request (1-based) of operation op, which fault to stage; the
// zero fault passes the request through.
type faultTransport struct {
	base http.RoundTripper
	plan func(op string, n int) fault

	mu       sync.Mutex
	calls    map[string]int
	statuses map[string][]int // statuses DynamoDB Local answered, by op
}

func newFaultTransport(plan func(op string, n int) fault) *faultTransport {
	return &faultTransport{base: http.DefaultTransport, plan: plan, calls: map[string]int{}, statuses: map[string][]int{}}
}

// reset installs plan and zeroes the counters.
func (ft *faultTransport) reset(plan func(op string, n int) fault) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.plan = plan
	ft.calls = map[string]int{}
	ft.statuses = map[string][]int{}
}

func (ft *faultTransport) count(op string) int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.calls[op]
}

func (ft *faultTransport) answered(op string) []int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([]int(nil), ft.statuses[op]...)
}

// timeoutError looks like a network timeout (net.Error).
type timeoutError struct{}

func (timeoutError) Error() string   { return "injected i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func apiError(status int, code string) fault {
	return fault{status: status, body: fmt.Sprintf(`{"__type":"com.amazonaws.dynamodb.v20120810#%s","message":"injected %s"}`, code, code)}
}

func (ft *faultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	op := req.Header.Get("X-Amz-Target")
	op = op[strings.LastIndexByte(op, '.')+1:]
	ft.mu.Lock()
	ft.calls[op]++
	n := ft.calls[op]
	plan := ft.plan
	ft.mu.Unlock()
	var f fault
	if plan != nil {
		f = plan(op, n)
	}
	var reqBody []byte
	if req.Body != nil {
		var err error
		if reqBody, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	canned := func(status int, body []byte) *http.Response {
		return &http.Response{
			StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Type": {"application/x-amz-json-1.0"}, "X-Amzn-Requestid": {"injected"}},
			Body:          io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)),
			Request:       req,
		}
	}
	switch {
	case f.hang:
		<-req.Context().Done()
		return nil, req.Context().Err()
	case !f.after && f.err != nil:
		return nil, f.err
	case !f.after && f.status != 0:
		return canned(f.status, []byte(f.body)), nil
	}
	resp, err := ft.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	ft.mu.Lock()
	ft.statuses[op] = append(ft.statuses[op], resp.StatusCode)
	ft.mu.Unlock()
	switch {
	case f.after:
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if f.err != nil {
			return nil, f.err
		}
		return canned(f.status, []byte(f.body)), nil
	case f.rewrite != nil:
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		return canned(resp.StatusCode, f.rewrite(reqBody, body)), nil
	}
	return resp, nil
}

// faultLedger returns a Ledger on a fresh table whose requests pass
// through ft, with fast client retries.
func (e *env) faultLedger(t *testing.T, ft *faultTransport, opts Options) *Ledger {
	t.Helper()
	opts.Table = e.table(t)
	client := e.local.Client(t, fastRetry, func(o *dynamodb.Options) {
		o.HTTPClient = &http.Client{Transport: ft}
	})
	return New(client, opts)
}

// firstN stages f for the first n requests of op.
func firstN(op string, n int, f fault) func(string, int) fault {
	return func(o string, i int) fault {
		if o == op && i <= n {
			return f
		}
		return fault{}
	}
}

// Throttling, 5xx answers and timeouts are retried; when they persist the
// error says what happened and is never a conflict.
func (e *env) testFaults(t *testing.T) {
	faults := []struct {
		name string
		f    fault
		want string // in the error when it persists
	}{
		{"ThrottlingException", apiError(400, "ThrottlingException"), "ThrottlingException"},
		{"ProvisionedThroughputExceeded", apiError(400, "ProvisionedThroughputExceededException"), "ProvisionedThroughputExceededException"},
		{"500", apiError(500, "InternalServerError"), "StatusCode: 500"},
		{"503", fault{status: 503, body: "Service Unavailable"}, "StatusCode: 503"},
		{"timeout", fault{err: timeoutError{}}, "injected i/o timeout"},
	}
	ops := []struct {
		name, op string
		prepare  func(t *testing.T, l *Ledger) // before faults start
		run      func(l *Ledger, i int) error
	}{
		{"Put", "PutItem", nil, func(l *Ledger, i int) error {
			return l.Put(bg(), rec("box", fmt.Sprintf("put-%d", i)))
		}},
		{"PutTransaction", "TransactWriteItems", nil, func(l *Ledger, i int) error {
			return l.Put(bg(), rec("box", fmt.Sprintf("tx-%d-a", i)), rec("box", fmt.Sprintf("tx-%d-b", i)))
		}},
		{"Get", "BatchGetItem", func(t *testing.T, l *Ledger) {
			if err := l.Put(bg(), rec("box", "stored")); err != nil {
				t.Fatal(err)
			}
		}, func(l *Ledger, i int) error {
			m, err := l.Get(bg(), "box", []string{"stored"})
			if err == nil && m["stored"] == nil {
				err = errors.New("record not found")
			}
			return err
		}},
		{"List", "Query", nil, func(l *Ledger, i int) error {
			_, err := l.List(bg(), "box")
			return err
		}},
		{"Lease", "PutItem", nil, func(l *Ledger, i int) error {
			_, err := l.Lease(bg(), fmt.Sprintf("box-%d", i), "poller", time.Minute)
			return err
		}},
		{"Claim", "PutItem", nil, func(l *Ledger, i int) error {
			_, err := l.Claim(bg(), testClaim(fmt.Sprintf("id-%d@example.com", i), "box", "u1", time.Now()), nil)
			return err
		}},
	}
	for _, op := range ops {
		for _, fc := range faults {
			t.Run(op.name+"/"+fc.name, func(t *testing.T) {
				ft := newFaultTransport(nil)
				l := e.faultLedger(t, ft, Options{})
				if op.prepare != nil {
					op.prepare(t, l)
				}
				// Transient: the first two attempts fail, the third succeeds.
				ft.reset(firstN(op.op, 2, fc.f))
				if err := op.run(l, 1); err != nil {
					t.Fatalf("with 2 transient faults: %v", err)
				}
				if got := ft.count(op.op); got != 3 {
					t.Fatalf("%s requests = %d, want 3", op.op, got)
				}
				// Persistent: every attempt fails.
				ft.reset(firstN(op.op, 1<<30, fc.f))
				err := op.run(l, 2)
				switch {
				case err == nil:
					t.Fatalf("with persistent faults: no error")
				case errors.Is(err, ledger.ErrConflict), errors.Is(err, ledger.ErrLeaseHeld), errors.Is(err, ledger.ErrClaimHeld):
					t.Fatalf("persistent %s reported as %v", fc.name, err)
				case !strings.Contains(err.Error(), fc.want):
					t.Fatalf("error %q does not say %q", err, fc.want)
				}
				if got := ft.count(op.op); got != DefaultMaxAttempts {
					t.Fatalf("%s requests with persistent faults = %d, want %d (MaxAttempts)", op.op, got, DefaultMaxAttempts)
				}
			})
		}
	}
}

// An attempt whose write landed but whose answer was lost is retried; the
// retry must report success, not a conflict with itself.
func (e *env) testLostAnswer(t *testing.T) {
	for _, c := range []struct {
		name, op string
		f        fault
		recs     func() []*ledger.Record
		update   bool // write version 1 first, lose the answer of the update
	}{
		{"PutItem create, timeout", "PutItem", fault{after: true, err: timeoutError{}}, func() []*ledger.Record { return []*ledger.Record{rec("box", "a")} }, false},
		{"PutItem update, 500", "PutItem", fault{after: true, status: 500, body: `{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}`}, func() []*ledger.Record { return []*ledger.Record{rec("box", "a")} }, true},
		{"TransactWriteItems, timeout", "TransactWriteItems", fault{after: true, err: timeoutError{}}, func() []*ledger.Record { return []*ledger.Record{rec("box", "a"), rec("box", "b")} }, false},
		{"TransactWriteItems update, 500", "TransactWriteItems", fault{after: true, status: 500, body: `{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}`}, func() []*ledger.Record { return []*ledger.Record{rec("box", "a"), rec("box", "b")} }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ft := newFaultTransport(nil)
			l := e.faultLedger(t, ft, Options{})
			recs := c.recs()
			want := int64(1)
			if c.update {
				if err := l.Put(bg(), recs...); err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					r.Attempts = 5
				}
				want = 2
			}
			ft.reset(firstN(c.op, 1, c.f))
			l.ResetStats()
			if err := l.Put(bg(), recs...); err != nil {
				t.Fatalf("Put whose first answer was lost: %v", err)
			}
			if s := l.Stats(); s.Calls[c.op] != 1 || s.ItemsWritten[c.op] != int64(len(recs)) {
				t.Fatalf("Stats: calls %v, items written %v; want 1 call writing %d", s.Calls, s.ItemsWritten, len(recs))
			}
			answered := ft.answered(c.op)
			t.Logf("%s answers from DynamoDB Local: %v (first one discarded)", c.op, answered)
			if len(answered) != 2 {
				t.Fatalf("%d requests reached DynamoDB Local, want 2 (the lost one and the retry)", len(answered))
			}
			got, err := l.Get(bg(), "box", []string{"a", "b"})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.Version != want || got[r.UIDL].Version != want || (c.update && got[r.UIDL].Attempts != 5) {
					t.Fatalf("record %s: caller version %d, stored %+v; want version %d", r.UIDL, r.Version, got[r.UIDL], want)
				}
			}
		})
	}
}

func cancelledTransaction(reasons ...string) fault {
	var rs []string
	for _, r := range reasons {
		rs = append(rs, fmt.Sprintf(`{"Code":%q}`, r))
	}
	return fault{status: 400, body: fmt.Sprintf(
		`{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [%s]","CancellationReasons":[%s]}`,
		strings.Join(reasons, ", "), strings.Join(rs, ","))}
}

// Transaction conflicts (DynamoDB Local cannot stage them) are retried by
// the ledger; other cancellation reasons are not.
func (e *env) testTransactionConflictRetried(t *testing.T) {
	two := func(i int) []*ledger.Record {
		return []*ledger.Record{rec("box", fmt.Sprintf("%d-a", i)), rec("box", fmt.Sprintf("%d-b", i))}
	}
	for _, c := range []struct {
		name, op  string
		f         fault
		n         int // faulty requests
		recs      []*ledger.Record
		wantErr   string // "" = success
		wantCalls int
	}{
		{"cancelled: TransactionConflict", "TransactWriteItems", cancelledTransaction("None", "TransactionConflict"), 2, two(0), "", 3},
		{"cancelled: ThrottlingError", "TransactWriteItems", cancelledTransaction("ThrottlingError", "None"), 2, two(1), "", 3},
		{"cancelled: TransactionConflict, persistent", "TransactWriteItems", cancelledTransaction("TransactionConflict", "None"), 1 << 30, two(2), "TransactionCanceledException", DefaultMaxAttempts},
		{"cancelled: ValidationError", "TransactWriteItems", cancelledTransaction("None", "ValidationError"), 1, two(3), "ValidationError", 1},
		{"PutItem: TransactionConflictException", "PutItem", apiError(400, "TransactionConflictException"), 2, []*ledger.Record{rec("box", "4")}, "", 3},
		{"PutItem: TransactionConflictException, persistent", "PutItem", apiError(400, "TransactionConflictException"), 1 << 30, []*ledger.Record{rec("box", "5")}, "TransactionConflictException", DefaultMaxAttempts},
	} {
		t.Run(c.name, func(t *testing.T) {
			ft := newFaultTransport(firstN(c.op, c.n, c.f))
			l := e.faultLedger(t, ft, Options{})
			err := l.Put(bg(), c.recs...)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("Put: %v", err)
			case c.wantErr != "" && (err == nil || errors.Is(err, ledger.ErrConflict) || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("Put = %v, want a non-conflict error saying %s", err, c.wantErr)
			}
			if got := ft.count(c.op); got != c.wantCalls {
				t.Fatalf("%s requests = %d, want %d", c.op, got, c.wantCalls)
			}
			if got := l.Stats().Calls[c.op]; got != int64(c.wantCalls) {
				t.Fatalf("Stats: %d %s calls, want %d (each retry by the ledger is a call)", got, c.op, c.wantCalls)
			}
		})
	}
}

// unprocessAll answers a BatchGetItem with nothing read and every key
// unprocessed, as DynamoDB does under throttling.
func unprocessAll(req, _ []byte) []byte {
	var in struct {
		RequestItems json.RawMessage
	}
	if err := json.Unmarshal(req, &in); err != nil {
		panic(err)
	}
	return []byte(`{"Responses":{},"UnprocessedKeys":` + string(in.RequestItems) + `}`)
}

// dripOne passes on the first item DynamoDB Local read and returns the
// others' keys as unprocessed: progress of one item per request.
func dripOne(_, resp []byte) []byte {
	var out struct {
		Responses map[string][]map[string]json.RawMessage
	}
	if err := json.Unmarshal(resp, &out); err != nil {
		panic(err)
	}
	kept := map[string][]map[string]json.RawMessage{}
	unprocessed := map[string]map[string]any{}
	for table, items := range out.Responses {
		if len(items) == 0 {
			continue
		}
		kept[table] = items[:1]
		var keys []map[string]json.RawMessage
		for _, it := range items[1:] {
			keys = append(keys, map[string]json.RawMessage{attrPK: it[attrPK], attrSK: it[attrSK]})
		}
		if len(keys) > 0 {
			unprocessed[table] = map[string]any{"Keys": keys, "ConsistentRead": true}
		}
	}
	b, err := json.Marshal(map[string]any{"Responses": kept, "UnprocessedKeys": unprocessed})
	if err != nil {
		panic(err)
	}
	return b
}

func (e *env) testUnprocessedKeys(t *testing.T) {
	uidls := []string{"1", "2", "3", "4", "5"}
	for _, c := range []struct {
		name      string
		plan      func(string, int) fault
		wantErr   string
		wantCalls int
	}{
		{"all unprocessed twice", firstN("BatchGetItem", 2, fault{rewrite: unprocessAll}), "", 3},
		{"one item per request", firstN("BatchGetItem", 1<<30, fault{rewrite: dripOne}), "", 5},
		{"never processed", firstN("BatchGetItem", 1<<30, fault{rewrite: unprocessAll}), "5 keys still unprocessed", DefaultMaxAttempts},
	} {
		t.Run(c.name, func(t *testing.T) {
			ft := newFaultTransport(nil)
			l := e.faultLedger(t, ft, Options{})
			var recs []*ledger.Record
			for _, u := range uidls {
				recs = append(recs, rec("box", u))
			}
			if err := l.Put(bg(), recs...); err != nil {
				t.Fatal(err)
			}
			ft.reset(c.plan)
			m, err := l.Get(bg(), "box", uidls)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Get = %v, want an error saying %q", err, c.wantErr)
				}
			} else if err != nil || len(m) != len(uidls) {
				t.Fatalf("Get = %d records, %v; want %d", len(m), err, len(uidls))
			}
			if got := ft.count("BatchGetItem"); got != c.wantCalls {
				t.Fatalf("BatchGetItem requests = %d, want %d", got, c.wantCalls)
			}
		})
	}
}

// A hanging server or a long retry sequence ends with ctx.
func (e *env) testContextEndsRetries(t *testing.T) {
	for _, c := range []struct {
		name string
		plan func(string, int) fault
		run  func(ctx context.Context, l *Ledger) error
	}{
		{"PutItem hangs", firstN("PutItem", 1<<30, fault{hang: true}), func(ctx context.Context, l *Ledger) error {
			return l.Put(ctx, rec("box", "x"))
		}},
		{"Query hangs", firstN("Query", 1<<30, fault{hang: true}), func(ctx context.Context, l *Ledger) error {
			_, err := l.List(ctx, "box")
			return err
		}},
		{"unprocessed keys", firstN("BatchGetItem", 1<<30, fault{rewrite: unprocessAll}), func(ctx context.Context, l *Ledger) error {
			_, err := l.Get(ctx, "box", []string{"x"})
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ft := newFaultTransport(c.plan)
			// Many attempts, so only ctx can end the unprocessed-keys loop in time.
			l := e.faultLedger(t, ft, Options{MaxAttempts: 1000})
			ctx, cancel := context.WithTimeout(bg(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := c.run(ctx, l)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error = %v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("returned %v after the deadline", d)
			}
		})
	}
}

// PutAccepted writes the record first and the duplicate-index entries
// after it: a failed record write writes no entry; an entry that fails
// after the record leaves the record standing and says so with
// ledger.ErrIndexNotWritten; a lost answer of the record's PutItem is
// recognised as its own write, and the entries follow.
func (e *env) testPutAcceptedOrder(t *testing.T) {
	internal := apiError(500, "InternalServerError")
	// The record's PutItem is request 1; the entries' follow in order.
	from := func(first, last int, f fault) func(string, int) fault {
		return func(op string, n int) fault {
			if op == "PutItem" && n >= first && n <= last {
				return f
			}
			return fault{}
		}
	}
	const never = 1 << 30
	for _, c := range []struct {
		name       string
		plan       func(string, int) fault
		wantErr    error // nil: success; else errors.Is
		wantSaid   string
		recorded   bool     // the record is stored, rec.Version 1
		indexed    []string // recipients found by Accepted afterwards
		wantPutReq int      // PutItem requests sent
	}{
		{"entry throttled twice", from(2, 3, apiError(400, "ThrottlingException")), nil, "", true, []string{"a@example.com", "b@example.com"}, 5},
		{"entry fails for good", from(2, never, internal), ledger.ErrIndexNotWritten, "no entry for a@example.com, b@example.com (record stored as version 1)", true, nil, 1 + DefaultMaxAttempts},
		{"second entry fails for good", from(3, never, internal), ledger.ErrIndexNotWritten, "no entry for b@example.com (record stored as version 1)", true, []string{"a@example.com"}, 2 + DefaultMaxAttempts},
		{"record fails for good", from(1, never, internal), nil, "StatusCode: 500", false, nil, DefaultMaxAttempts},
		{"record's answer lost", from(1, 1, fault{after: true, err: timeoutError{}}), nil, "", true, []string{"a@example.com", "b@example.com"}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			ft := newFaultTransport(nil)
			l := e.faultLedger(t, ft, Options{})
			r := rec("box", "u1")
			exp := time.Now().Add(time.Hour)
			var acc []ledger.Acceptance
			for _, to := range []string{"a@example.com", "b@example.com"} {
				acc = append(acc, ledger.Acceptance{MessageID: r.MessageID, Recipient: to, At: exp.Add(-time.Minute), Expires: exp})
			}
			ft.reset(c.plan)
			err := l.PutAccepted(bg(), r, acc)
			puts := ft.count("PutItem")
			ft.reset(nil)
			switch {
			case c.wantSaid == "" && err != nil:
				t.Fatalf("PutAccepted: %v", err)
			case c.wantSaid != "" && (err == nil || !strings.Contains(err.Error(), c.wantSaid)):
				t.Fatalf("PutAccepted = %v, want an error saying %q", err, c.wantSaid)
			case c.wantErr != nil && !errors.Is(err, c.wantErr):
				t.Fatalf("PutAccepted = %v, want it to wrap %v", err, c.wantErr)
			case c.wantErr == nil && errors.Is(err, ledger.ErrIndexNotWritten):
				t.Fatalf("PutAccepted = %v: reports an entry missing although the record is not written", err)
			case errors.Is(err, ledger.ErrConflict):
				t.Fatalf("PutAccepted = %v: reported as a conflict", err)
			}
			if puts != c.wantPutReq {
				t.Errorf("PutItem requests = %d, want %d", puts, c.wantPutReq)
			}
			stored, gerr := l.Get(bg(), "box", []string{"u1"})
			if gerr != nil {
				t.Fatal(gerr)
			}
			wantVersion := int64(0)
			if c.recorded {
				wantVersion = 1
			}
			if r.Version != wantVersion || (c.recorded != (stored["u1"] != nil)) || (c.recorded && stored["u1"].Version != 1) {
				t.Fatalf("caller's Version %d, stored %+v; want recorded=%v", r.Version, stored["u1"], c.recorded)
			}
			found, aerr := l.Accepted(bg(), r.MessageID, []string{"a@example.com", "b@example.com"})
			if aerr != nil {
				t.Fatal(aerr)
			}
			if len(found) != len(c.indexed) {
				t.Fatalf("Accepted = %v, want entries for %v", found, c.indexed)
			}
			for _, to := range c.indexed {
				if a, ok := found[to]; !ok || a.UIDL != "u1" {
					t.Errorf("entry for %s: %+v, %v", to, a, ok)
				}
			}
		})
	}
}
