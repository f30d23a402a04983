package lambdafn_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/archive/s3archive"
	"github.com/popconnector/popconnector/internal/lambdafn"
	"github.com/popconnector/popconnector/internal/ledger/dynamoledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// apiCounter is an aws-sdk-go-v2 middleware that counts every request
// attempt sent (retries included: AWS bills each), by service and
// operation. It sits at the end of the Finalize step, after the retry
// middleware, so it sees each attempt once.
type apiCounter struct {
	mu    sync.Mutex
	calls map[string]int64 // "S3 PutObject", "DynamoDB Query", ...
}

func newAPICounter() *apiCounter { return &apiCounter{calls: map[string]int64{}} }

func (c *apiCounter) add(stack *middleware.Stack) error {
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("popconnCountRequests",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			op := awsmiddleware.GetServiceID(ctx) + " " + awsmiddleware.GetOperationName(ctx)
			c.mu.Lock()
			c.calls[op]++
			c.mu.Unlock()
			return next.HandleFinalize(ctx, in)
		}), middleware.After)
}

func (c *apiCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.calls))
	for k, v := range c.calls {
		out[k] = v
	}
	return out
}

func (c *apiCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = map[string]int64{}
}

// s3ReadOps are the S3 requests billed at the GET rate; every other S3
// request popconn makes (PUT, COPY, POST: single PUT, multipart create,
// parts, complete, the metadata copy) is billed at the PUT rate. DELETE is
// free.
var s3ReadOps = map[string]bool{"GetObject": true, "HeadObject": true}

// costRig is one Dovecot with the given users, an smtp-sink, a ledger table
// and an archive prefix on the shared AWS servers, and a Function whose S3
// and DynamoDB clients count their requests and whose ledger asks for the
// consumed capacity of each.
type costRig struct {
	dove    *testenv.Dovecot
	sink    *testenv.SMTPSink
	counter *apiCounter
	ledger  *dynamoledger.Ledger
	fn      *lambdafn.Function
	out     *countingWriter
}

type countingWriter struct {
	mu sync.Mutex
	n  int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.n += int64(len(p))
	w.mu.Unlock()
	return len(p), nil
}

func (w *countingWriter) bytes() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

const costPassword = "Cost-pop-Pa55-feed"

var costSeq struct {
	mu sync.Mutex
	n  int
}

// newCostRig configures mailboxes m0000.. for users of the same names,
// each delivering to recipients addresses, polled parallel at a time.
func newCostRig(b testing.TB, srv *awsServers, mailboxes, recipients, parallel int) *costRig {
	b.Helper()
	costSeq.mu.Lock()
	costSeq.n++
	n := costSeq.n
	costSeq.mu.Unlock()
	users := map[string]string{}
	var ids []string
	for i := range mailboxes {
		id := fmt.Sprintf("m%04d", i)
		users[id] = costPassword
		ids = append(ids, id)
	}
	r := &costRig{counter: newAPICounter(), out: &countingWriter{}}
	r.dove = testenv.StartDovecot(b, testenv.DovecotOptions{Users: users, ExtraConf: "auth_verbose = no\n"})
	r.sink = testenv.StartSMTPSink(b, testenv.SMTPSinkOptions{})
	dir := b.TempDir()
	passFile := filepath.Join(dir, "pop-pass")
	if err := os.WriteFile(passFile, []byte(costPassword+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	table, prefix := fmt.Sprintf("popconn-cost-%d", n), fmt.Sprintf("cost%d/eml", n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := dynamoledger.CreateTable(ctx, srv.ddb.Client(b), table); err != nil {
		b.Fatalf("create table: %v", err)
	}
	var rcpts []string
	for j := range recipients {
		rcpts = append(rcpts, fmt.Sprintf("user%d@corp.example", j))
	}
	port := r.sink.Addr[strings.LastIndexByte(r.sink.Addr, ':')+1:]
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `postmaster: postmaster@corp.example
parallel_mailboxes: %d
delivery: {host: 127.0.0.1, port: %s, tls: none, timeout: 60s}
log: {level: info}
mailboxes:
`, parallel, port)
	for _, id := range ids {
		fmt.Fprintf(&cfg, "  - {id: %s, server: %q, tls: none, allow_plaintext_login: true, username: %s, password: \"file:%s\", deliver_to: [%s], max_messages_per_poll: 0, max_bytes_per_poll: 0}\n",
			id, r.dove.Addr, id, passFile, strings.Join(rcpts, ", "))
	}
	cfgPath := filepath.Join(dir, "popconn.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	s3c := srv.gw.Client(b, func(o *s3.Options) { o.APIOptions = append(o.APIOptions, r.counter.add) })
	ddb := srv.ddb.Client(b, func(o *dynamodb.Options) { o.APIOptions = append(o.APIOptions, r.counter.add) })
	arc := s3archive.New(s3c, s3archive.Options{Bucket: srv.gw.Bucket, Prefix: prefix})
	if err := arc.Err(); err != nil {
		b.Fatal(err)
	}
	r.ledger = dynamoledger.New(ddb, dynamoledger.Options{Table: table, CountCapacity: true})
	fn, err := lambdafn.New(lambdafn.Options{
		ConfigSource: "file:" + cfgPath,
		Stores:       app.Stores{Archive: arc, Ledger: r.ledger},
		Stdout:       r.out,
	})
	if err != nil {
		b.Fatal(err)
	}
	r.fn = fn
	return r
}

// invoke runs one invocation as the Lambda runtime would and fails unless
// every mailbox succeeded.
func (r *costRig) invoke(b testing.TB, payload []byte) *lambdafn.Summary {
	b.Helper()
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: fmt.Sprintf("cost-%d", time.Now().UnixNano())})
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	out, err := lambda.NewHandler(r.fn.Handle).Invoke(ctx, payload)
	if err != nil {
		b.Fatalf("invoke: %v", err)
	}
	var s lambdafn.Summary
	if err := json.Unmarshal(out, &s); err != nil {
		b.Fatalf("response %s: %v", out, err)
	}
	for _, m := range s.Mailboxes {
		if m.Error != "" || m.Busy || m.Stopped != "" {
			b.Fatalf("mailbox %s: %+v", m.Mailbox, m)
		}
	}
	return &s
}

// costMessage is a deterministic message of size octets (at most 2 fewer)
// as stored, with CRLF line ends, so also as served: a header and
// 76-character lines of a base64-like alphabet, never starting with ".".
func costMessage(idx int, size int) []byte {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "From: <sender%d@isp.example>\r\nTo: <mailbox@isp.example>\r\nSubject: cost benchmark message %d\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <cost-%d-%d@bench.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", idx, idx, idx, size)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	x := uint64(idx)*0x9E3779B97F4A7C15 | 1
	for buf.Len() < size {
		n := min(76, size-buf.Len()-2)
		if n < 1 {
			break // the message ends at most 2 octets short of size
		}
		for range n {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			buf.WriteByte(alphabet[x&63])
		}
		buf.WriteString("\r\n")
	}
	return buf.Bytes()
}

// usage is what a stretch of work cost in requests, capacity and log bytes.
type usage struct {
	calls    map[string]int64
	wcu, rcu float64
	logBytes int64
}

func (r *costRig) reset() {
	r.counter.reset()
	r.ledger.ResetStats()
}

func (r *costRig) usage(logStart int64) usage {
	st := r.ledger.Stats()
	return usage{calls: r.counter.snapshot(), wcu: st.WriteUnits, rcu: st.ReadUnits, logBytes: r.out.bytes() - logStart}
}

func (u usage) sum(filter func(op string) bool) float64 {
	var n int64
	for op, v := range u.calls {
		if filter(op) {
			n += v
		}
	}
	return float64(n)
}

func (u usage) ddbRequests() float64 {
	return u.sum(func(op string) bool { return strings.HasPrefix(op, "DynamoDB ") })
}
func (u usage) ddbWrites() float64 {
	return u.sum(func(op string) bool {
		return strings.HasPrefix(op, "DynamoDB ") && !strings.HasSuffix(op, " Query") && !strings.HasSuffix(op, " GetItem") && !strings.HasSuffix(op, " BatchGetItem")
	})
}
func (u usage) s3Writes() float64 {
	return u.sum(func(op string) bool {
		name, ok := strings.CutPrefix(op, "S3 ")
		return ok && !s3ReadOps[name] && !strings.HasPrefix(name, "Delete")
	})
}
func (u usage) s3Reads() float64 {
	return u.sum(func(op string) bool { name, ok := strings.CutPrefix(op, "S3 "); return ok && s3ReadOps[name] })
}

func (u usage) describe() string {
	ops := make([]string, 0, len(u.calls))
	for op, n := range u.calls {
		ops = append(ops, fmt.Sprintf("%s %d", op, n))
	}
	sort.Strings(ops)
	return fmt.Sprintf("%s; %.0f WCU, %.1f RCU; %d log bytes", strings.Join(ops, ", "), u.wcu, u.rcu, u.logBytes)
}

// BenchmarkAWSCostPerMessage runs the Lambda handler (S3 archive on
// versitygw, DynamoDB ledger on DynamoDB Local, Dovecot, smtp-sink) and
// reports what one delivered message costs in AWS requests: per-poll
// requests (lease, list, release) are measured on an empty mailbox first
// and subtracted, then each iteration polls a mailbox of batch messages.
// Metrics per message: DynamoDB requests, write requests, WCU and RCU as
// DynamoDB Local reports them (ReturnConsumedCapacity TOTAL; it sizes
// PutItem as DynamoDB does), S3 requests billed at the PUT and at the GET
// rate, and bytes written to stdout (CloudWatch Logs ingestion). The
// fixed per-poll figures are logged.
//
//	POPCONN_INTEGRATION=1 go test -run '^$' -bench AWSCostPerMessage -benchtime 1x ./internal/lambdafn
func BenchmarkAWSCostPerMessage(b *testing.B) {
	srv := startAWSServers(b)
	for _, size := range []int{20_000, 1_000_000, 10_000_000} {
		for _, recipients := range []int{1, 3} {
			b.Run(fmt.Sprintf("size=%s/recipients=%d", humanSize(size), recipients), func(b *testing.B) {
				batch := 10
				if size >= 10_000_000 {
					batch = 2
				}
				r := newCostRig(b, srv, 1, recipients, 1)
				ev := []byte(`{"mailboxes":["m0000"]}`)
				// The first invocation loads the configuration; measure
				// a poll of the empty mailbox after it.
				r.invoke(b, ev)
				r.reset()
				logStart := r.out.bytes()
				r.invoke(b, ev)
				empty := r.usage(logStart)
				b.Logf("per poll of an empty mailbox: %s", empty.describe())

				msgs := make([][]byte, batch)
				for i := range msgs {
					msgs[i] = costMessage(i, size)
				}
				var total usage
				total.calls = map[string]int64{}
				sinkBefore := len(r.sink.Messages(b))
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					for _, m := range msgs {
						r.dove.Deliver(b, "m0000", m)
					}
					r.reset()
					logStart := r.out.bytes()
					b.StartTimer()
					s := r.invoke(b, ev)
					b.StopTimer()
					if got := s.Mailboxes[0].Delivered; got != batch {
						b.Fatalf("delivered %d of %d: %+v", got, batch, s.Mailboxes[0])
					}
					if left := r.dove.Count(b, "m0000"); left != 0 {
						b.Fatalf("%d messages left on the server", left)
					}
					u := r.usage(logStart)
					for op, n := range u.calls {
						total.calls[op] += n
					}
					total.wcu += u.wcu
					total.rcu += u.rcu
					total.logBytes += u.logBytes
					b.StartTimer()
				}
				b.StopTimer()
				if got := len(r.sink.Messages(b)) - sinkBefore; got != b.N*batch {
					b.Fatalf("smtp-sink received %d messages, want %d", got, b.N*batch)
				}
				// The ledger keeps deleted messages' records until their
				// TTL (7 days by default), and every poll's Query reads
				// them all.
				r.reset()
				logStart = r.out.bytes()
				r.invoke(b, ev)
				kept := r.usage(logStart)
				b.Logf("per poll of the emptied mailbox, %d records kept: %s", b.N*batch, kept.describe())
				b.ReportMetric(kept.rcu/float64(b.N*batch), "list-RCU/kept-record")

				polls := float64(b.N)
				n := polls * float64(batch)
				per := func(tot, fixed float64) float64 { return (tot - polls*fixed) / n }
				b.Logf("%d polls of %d messages: %s", b.N, batch, total.describe())
				b.ReportMetric(per(total.ddbRequests(), empty.ddbRequests()), "ddb-req/msg")
				b.ReportMetric(per(total.ddbWrites(), empty.ddbWrites()), "ddb-write-req/msg")
				b.ReportMetric(per(total.wcu, empty.wcu), "WCU/msg")
				b.ReportMetric(per(total.rcu, empty.rcu), "RCU/msg")
				b.ReportMetric(per(total.s3Writes(), empty.s3Writes()), "s3-put-class/msg")
				b.ReportMetric(per(total.s3Reads(), empty.s3Reads()), "s3-get-class/msg")
				b.ReportMetric(per(float64(total.logBytes), float64(empty.logBytes)), "log-B/msg")
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/n, "handler-ms/msg")
			})
		}
	}
}

func humanSize(n int) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%dMB", n/1_000_000)
	default:
		return fmt.Sprintf("%dkB", n/1000)
	}
}

// BenchmarkHandlerMailboxes times one scheduled invocation of the Lambda
// handler over 100 mailboxes of three 20 kB messages each, against the
// local servers, at several parallel_mailboxes settings.
//
//	POPCONN_INTEGRATION=1 go test -run '^$' -bench HandlerMailboxes -benchtime 3x ./internal/lambdafn
func BenchmarkHandlerMailboxes(b *testing.B) {
	const mailboxes, perMailbox = 100, 3
	srv := startAWSServers(b)
	ev, err := os.ReadFile("../../events/scheduled.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, parallel := range []int{4, 16} {
		b.Run(fmt.Sprintf("mailboxes=%d/parallel=%d", mailboxes, parallel), func(b *testing.B) {
			r := newCostRig(b, srv, mailboxes, 1, parallel)
			r.invoke(b, ev) // loads the configuration
			// What a scheduled poll of idle mailboxes costs, per mailbox.
			r.reset()
			logStart := r.out.bytes()
			idleStart := time.Now()
			r.invoke(b, ev)
			idleWall := time.Since(idleStart)
			idle := r.usage(logStart)
			b.Logf("idle poll of %d mailboxes: %v; %s", mailboxes, idleWall.Round(time.Millisecond), idle.describe())
			var cpu time.Duration // this process's CPU time in the timed invocations
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for i := range mailboxes {
					for j := range perMailbox {
						r.dove.Deliver(b, fmt.Sprintf("m%04d", i), costMessage(j, 20_000))
					}
				}
				cpuBefore := processCPU(b)
				b.StartTimer()
				s := r.invoke(b, ev)
				b.StopTimer()
				cpu += processCPU(b) - cpuBefore
				delivered := 0
				for _, m := range s.Mailboxes {
					delivered += m.Delivered
				}
				if delivered != mailboxes*perMailbox {
					b.Fatalf("delivered %d of %d", delivered, mailboxes*perMailbox)
				}
				b.StartTimer()
			}
			b.StopTimer()
			per := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(1000*per/mailboxes, "ms/mailbox")
			b.ReportMetric(mailboxes*perMailbox/per, "msg/s")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N*mailboxes), "cpu-ms/mailbox")
			b.ReportMetric(idle.ddbWrites()/mailboxes, "idle-ddb-write-req/mailbox")
			b.ReportMetric(float64(idle.logBytes)/mailboxes, "idle-log-B/mailbox")
			b.ReportMetric(float64(idleWall.Milliseconds())/mailboxes, "idle-ms/mailbox")
		})
	}
}

// processCPU is the user+system CPU time this process has used (the
// handler runs in-process; the servers are other processes).
func processCPU(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
