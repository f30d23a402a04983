package main

// The Lambda mode: `popconn-bench lambda` (make bench-lambda), the Lambda
// row of issue 12. The real handler (lambdafn.Function, in this process)
// polls one mailbox of 50 × 20 kB from the bench's Dovecot and relays it to
// smtp-sink, each behind a delay proxy at --rtt (20 ms), with its archive
// on versitygw (S3, over TLS) and its ledger on DynamoDB Local, each behind
// a delay proxy at --aws-rtt (4 ms). Local mode (`popconn run --once`,
// archive folder and bbolt ledger) runs on the same mailbox through the
// same mail proxies, interleaved with it, for the comparison.
//
// What is recorded, per run:
//   - every AWS operation the handler calls, by an aws-sdk-go-v2
//     middleware at the front of the Initialize step of the bench's S3 and
//     DynamoDB clients: name, start and end as the caller waits for it
//     (retries included; attempts are counted apart);
//   - every chunk the POP3 and SMTP proxies forward (delay.go's observer):
//     when it was read and when written; on the SMTP client-to-server side,
//     where each message's final "." passes, which dates its delivery.
//
// What is computed (series.go has the definition of "in series"):
//   - wall time per message: the whole invocation (or popconn run) over
//     the messages, and the steady state: from the end (final "." written
//     to the sink) of the ⌈10%⌉th message to that of the last but ⌈10%⌉,
//     over the messages that ended in between (40 of 50);
//   - in that steady state: AWS requests per message by operation, those in
//     series (the mail links carried no byte for the whole request) and
//     their time, the stall time (link-idle time with an AWS request
//     outstanding) and all link-idle time, per message.
//
// Checks, as in the other modes: the handler's summary says every message
// was delivered and deleted, smtp-sink counted every one (with --verify:
// each exactly once, bodies as seeded), the maildir is empty, the archive
// holds every message.
//
// What it cannot do: the emulators are not AWS. versitygw writes a file
// and DynamoDB Local a JVM's memory, both on this machine's CPU, so a
// request's service time is theirs plus --aws-rtt; real S3 PUT latency is
// tens of milliseconds. The measure of "in series" is a stand-in for the
// critical path (see series.go).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"

	"github.com/popconnector/popconnector/internal/lambdafn"
	"github.com/popconnector/popconnector/internal/ledger/dynamoledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

const (
	modeLambda = "lambda"
	modeLocal  = "local"
)

type lambdaOptions struct {
	popconn  string
	rtt      time.Duration // POP3 and SMTP
	awsRTT   time.Duration // S3 and DynamoDB
	workload Workload
	tls      bool
	reps     int
	out      string
	workdir  string
	timeout  time.Duration
	verify   bool
	timeline string // directory for each run's timeline CSV, "" for none
}

func parseLambdaOptions(args []string) (*lambdaOptions, error) {
	fs := flag.NewFlagSet("bench lambda", flag.ContinueOnError)
	o := &lambdaOptions{}
	fs.StringVar(&o.popconn, "popconn", "bin/popconn", "the popconn binary for the local-mode row")
	fs.DurationVar(&o.rtt, "rtt", 20*time.Millisecond, "round trip added to POP3 and SMTP (delay proxies)")
	fs.DurationVar(&o.awsRTT, "aws-rtt", 4*time.Millisecond, "round trip added to S3 (versitygw) and DynamoDB Local (delay proxies)")
	count := fs.Int("messages", 50, "messages in the mailbox")
	size := fs.Int64("size", 20_000, "served octets per message")
	fs.BoolVar(&o.tls, "tls", false, "POP3S instead of plain POP3")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of each mode (interleaved)")
	fs.StringVar(&o.out, "out", "bench-results-lambda.md", "markdown results file; a .json with every run is written beside it")
	fs.StringVar(&o.workdir, "workdir", "", "where servers and runs keep their files (default: a new temporary directory)")
	fs.DurationVar(&o.timeout, "run-timeout", 15*time.Minute, "limit for one run (the invocation's deadline)")
	fs.BoolVar(&o.verify, "verify", false, "let smtp-sink dump every message and check each arrived once with its seeded body (slower sink)")
	fs.StringVar(&o.timeline, "timeline", "", "diagnostics: write each run's recorded spans (AWS operations, link chunks, message ends) as CSV into this directory")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.rtt <= 0 || o.awsRTT < 0 {
		return nil, fmt.Errorf("--rtt must be above 0 (the link observation needs the mail proxies) and --aws-rtt at least 0")
	}
	if *count < 3 || *size < 2000 || o.reps < 1 {
		return nil, fmt.Errorf("--messages at least 3, --size at least 2000, --reps at least 1")
	}
	o.workload = Workload{Name: "l", Count: *count, Size: *size}
	return o, nil
}

func lambdaMain(args []string) int {
	o, err := parseLambdaOptions(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench lambda: %v\n", err)
		return 2
	}
	return inSession("bench lambda", "make bench-lambda installs what is needed (and infra/install-deps.sh versitygw and DynamoDB Local)", func(s *testenv.Session) int { return runLambdaBench(s, o) })
}

// lambdaRig is the servers of the Lambda mode and the proxies in front of
// them, with what the proxies and clients record.
type lambdaRig struct {
	s        *testenv.Session
	o        *lambdaOptions
	e        *env // Dovecot and smtp-sink, and local mode's runs
	gw       *testenv.VersityGW
	ddb      *testenv.DynamoDBLocal
	s3Addr   string // the delay proxy in front of versitygw
	ddbAddr  string // ... and in front of DynamoDB Local
	popAddr  string // the delay proxy in front of Dovecot
	sinkAddr string // ... and in front of smtp-sink
	links    *linkRecorder
	calls    *awsRecorder
}

func runLambdaBench(s *testenv.Session, o *lambdaOptions) int {
	self, err := os.Executable()
	if err != nil {
		s.Fatal(err)
	}
	popconn, workdir := popconnAndWorkdir(s, o.popconn, o.workdir)
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		s.Fatalf("GNU time: %v (run infra/bench/install.sh)", err)
	}
	r := &lambdaRig{s: s, o: o, links: &linkRecorder{}, calls: &awsRecorder{}}
	fmt.Fprintf(os.Stderr, "bench lambda: starting Dovecot, smtp-sink, versitygw and DynamoDB Local\n")
	r.e = newEnv(s, "host", workerConfig{Popconn: popconn, Sink: sinkSMTPSink, Self: self, Workdir: workdir, Verify: o.verify, Timeout: o.timeout})
	r.gw = testenv.StartVersityGW(s)
	r.ddb = testenv.StartDynamoDBLocal(s)

	proxy := func(target string, rtt time.Duration, observe func(ChunkEvent)) *DelayProxy {
		p, err := StartDelayProxy(target, rtt)
		if err != nil {
			s.Fatalf("delay proxy: %v", err)
		}
		s.Cleanup(func() { p.Close() })
		p.SetObserver(observe)
		return p
	}
	r.s3Addr = proxy(r.gw.Addr, o.awsRTT, nil).Addr()
	r.ddbAddr = proxy(strings.TrimPrefix(r.ddb.Endpoint, "http://"), o.awsRTT, nil).Addr()
	pop := r.e.dove.Addr
	if o.tls {
		pop = r.e.dove.TLSAddr
	}
	popProxy := proxy(pop, o.rtt, r.links.observer(false))
	sinkProxy := proxy(r.e.sinkAddr, o.rtt, r.links.observer(true))
	r.popAddr, r.sinkAddr = popProxy.Addr(), sinkProxy.Addr()
	// Local mode's runs (env.Run) go through the same two proxies: via()
	// finds them under their targets.
	r.e.proxies[pop], r.e.proxies[r.e.sinkAddr] = popProxy, sinkProxy

	rep := &lambdaReport{
		Started:  time.Now().UTC(),
		Machine:  machineInfo(workdir),
		Versions: append(withoutFetchmail(versions(popconn, "", "")), versionInfo{"versitygw", testenv.VersityGWVersion}),
		Workload: o.workload,
		TLS:      o.tls,
		RTT:      o.rtt.String(),
		AWSRTT:   o.awsRTT.String(),
		Reps:     o.reps,
		Settings: benchSettings(),
	}
	runID := 0
	for rep_ := 0; rep_ < o.reps; rep_++ {
		modes := []string{modeLambda, modeLocal}
		if rep_%2 == 1 {
			modes = []string{modeLocal, modeLambda}
		}
		for _, mode := range modes {
			runID++
			fmt.Fprintf(os.Stderr, "bench lambda: %s, %s, rep %d/%d ... ", mode, o.workload.Describe(), rep_+1, o.reps)
			var res LambdaResult
			if mode == modeLambda {
				res = r.runLambda(runID)
			} else {
				res = r.runLocal(runID)
			}
			res.Rep = rep_ + 1
			rep.Results = append(rep.Results, res)
			if res.Err != "" {
				fmt.Fprintln(os.Stderr, "FAILED")
				rep.write(o.out)
				s.Fatalf("%s: %s", mode, res.Err)
			}
			fmt.Fprintf(os.Stderr, "%.2fs wall, %.1f ms/message in the steady state, %.2f AWS requests in series per message (load %.2f)\n",
				res.WallSec, res.SteadyMSPerMsg(), res.perMsg(float64(res.Series.InSeries)), res.Load1)
			rep.write(o.out)
		}
	}
	rep.Finished = time.Now().UTC()
	rep.Machine.LoadEnd = loadavg()
	rep.write(o.out)
	fmt.Print(rep.tables())
	fmt.Fprintf(os.Stderr, "bench lambda: results written to %s (and %s)\n", o.out, jsonName(o.out))
	return 0
}

// benchSettings are the POPCONN_BENCH_* settings both modes' configurations
// take from the environment (popconnGlobalConfig).
func benchSettings() string {
	var out []string
	for _, k := range []string{"POPCONN_BENCH_DELIVERIES_IN_FLIGHT", "POPCONN_BENCH_POP3_PIPELINE_DEPTH"} {
		if v := os.Getenv(k); v != "" {
			out = append(out, k+"="+v)
		}
	}
	if len(out) == 0 {
		return "popconn's defaults"
	}
	return strings.Join(out, ", ")
}

// LambdaResult is one run of one mode.
type LambdaResult struct {
	Mode     string
	Rep      int
	RunID    int
	Messages int
	// WallSec is the whole run: the handler's invocation (warm: the
	// configuration was loaded by an invocation on the empty mailbox
	// before), or `popconn run --once` from exec to exit.
	WallSec float64
	// SteadySec spans the steady state; SteadyMessages ended in it.
	SteadySec      float64
	SteadyMessages int
	// Calls counts the AWS operations of the whole invocation by name;
	// Attempts the HTTP attempts they made (more than the operations
	// when the SDK retried).
	Calls    map[string]int `json:",omitempty"`
	Attempts int            `json:",omitempty"`
	// Series is the in-series analysis of the steady state (for local
	// mode only its idle time means something).
	Series seriesStats
	// Turnarounds counts the SMTP sessions' turnarounds (linkRecorder)
	// that ended in the steady state; TurnaroundSec is their sum.
	Turnarounds   int
	TurnaroundSec float64
	// InTurnaround counts the AWS requests wholly inside those
	// turnarounds (callsWithin), by operation in InTurnaroundByOp.
	InTurnaround     int
	InTurnaroundByOp map[string]int `json:",omitempty"`
	Load1            float64
	// Checks.
	SinkGot      int
	LeftOnServer int
	Archived     int
	Err          string `json:",omitempty"`
}

func (r LambdaResult) perMsg(x float64) float64 {
	if r.SteadyMessages == 0 {
		return 0
	}
	return x / float64(r.SteadyMessages)
}

// SteadyMSPerMsg is the steady state's wall time per message in ms.
func (r LambdaResult) SteadyMSPerMsg() float64 { return r.perMsg(1000 * r.SteadySec) }

func perTurnaround(r LambdaResult, n int) float64 {
	if r.Turnarounds == 0 {
		return 0
	}
	return float64(n) / float64(r.Turnarounds)
}

func msPer(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / 1000 / float64(n)
}

// analyse fills the steady-state figures from what the recorders hold.
func (r *lambdaRig) analyse(res *LambdaResult) error {
	ends, busy, turnarounds := r.links.snapshot()
	if len(ends) != res.Messages {
		return fmt.Errorf("the SMTP proxy saw %d final dots, want %d", len(ends), res.Messages)
	}
	w, n, ok := steadyWindow(ends)
	if !ok {
		return fmt.Errorf("no steady state in %d messages", len(ends))
	}
	calls, _ := r.calls.snapshot(r.links.origin())
	res.SteadySec, res.SteadyMessages = w.len().Seconds(), n
	res.Series = seriesOnCriticalPath(w, busy, calls)
	var steadyTurns []span
	for _, t := range turnarounds {
		if t.End > w.Start && t.End <= w.End {
			steadyTurns = append(steadyTurns, t)
			res.TurnaroundSec += t.len().Seconds()
		}
	}
	res.Turnarounds = len(steadyTurns)
	res.InTurnaround, res.InTurnaroundByOp = callsWithin(steadyTurns, calls)
	if r.o.timeline != "" {
		return writeTimeline(filepath.Join(r.o.timeline, fmt.Sprintf("run-%d-%s.csv", res.RunID, res.Mode)), w, ends, busy, calls)
	}
	return nil
}

// writeTimeline writes what a run recorded, one span a line, in ms from the
// run's origin: kind (window, end, link, or the AWS operation), start, end.
func writeTimeline(path string, w span, ends []time.Duration, busy []span, calls []awsCall) error {
	var b strings.Builder
	b.WriteString("kind,start_ms,end_ms\n")
	row := func(kind string, s span) {
		fmt.Fprintf(&b, "%s,%.3f,%.3f\n", kind, float64(s.Start.Microseconds())/1000, float64(s.End.Microseconds())/1000)
	}
	row("window", w)
	for _, e := range ends {
		row("end", span{e, e})
	}
	for _, s := range union(busy) {
		row("link", s)
	}
	for _, c := range calls {
		row(c.Op, c.span)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// runLambda polls the seeded mailbox with a new Function (a new container)
// on a new ledger table and archive prefix: an invocation on the empty
// mailbox first (configuration loaded, connections open), then the
// measured one, as EventBridge would invoke it.
func (r *lambdaRig) runLambda(runID int) (res LambdaResult) {
	wl := r.o.workload
	res = LambdaResult{Mode: modeLambda, RunID: runID, Messages: wl.Count}
	fail := func(format string, args ...any) LambdaResult {
		res.Err = fmt.Sprintf(format, args...)
		return res
	}
	runDir, err := os.MkdirTemp(r.e.cfg.Workdir, fmt.Sprintf("run-%d-lambda-", runID))
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(runDir)
	table, prefix := fmt.Sprintf("popconn-bench-%d", runID), fmt.Sprintf("run%d/eml", runID)
	// The SDK's default transport settings, as functions/poller gets them
	// (10 idle connections per host), loopback only; S3's trusts the
	// gateway's CA.
	ddbTr, s3Tr := awshttp.NewBuildableClient().GetTransport(), awshttp.NewBuildableClient().GetTransport()
	ddbTr.Proxy, s3Tr.Proxy = nil, nil
	s3Tr.TLSClientConfig = r.gw.Transport().TLSClientConfig
	defer ddbTr.CloseIdleConnections()
	defer s3Tr.CloseIdleConnections()
	ddb := r.ddb.Client(r.s, func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String("http://" + r.ddbAddr)
		o.HTTPClient = &http.Client{Transport: ddbTr}
		o.APIOptions = append(o.APIOptions, r.calls.middleware("DynamoDB"))
	})
	s3c := r.gw.Client(r.s, func(o *s3.Options) {
		o.BaseEndpoint = aws.String("https://" + r.s3Addr)
		o.HTTPClient = &http.Client{Transport: s3Tr}
		o.APIOptions = append(o.APIOptions, r.calls.middleware("S3"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err = dynamoledger.CreateTable(ctx, ddb, table)
	cancel()
	if err != nil {
		return fail("create table %s: %v", table, err)
	}
	stores, err := lambdafn.AWSStores(lambdafn.Env{ArchiveBucket: r.gw.Bucket, ArchivePrefix: prefix, LedgerTable: table}, s3c, ddb)
	if err != nil {
		return fail("%v", err)
	}
	// The archive and ledger sections are local mode's; AWS mode ignores them.
	cfg := popconnConfig(r.popAddr, r.sinkAddr, r.o.tls, r.e.dove.CA.CertFile, r.e.passFile, "/nonexistent/popconn-archive", "/nonexistent/popconn-ledger.db")
	cfgFile := filepath.Join(runDir, "popconn.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return fail("%v", err)
	}
	logFile := filepath.Join(runDir, "output.txt")
	out, err := os.Create(logFile)
	if err != nil {
		return fail("%v", err)
	}
	defer out.Close()
	tail := func() string { return tailFile(logFile, 15) }
	fn, err := lambdafn.New(lambdafn.Options{ConfigSource: "file:" + cfgFile, Stores: stores, Stdout: out})
	if err != nil {
		return fail("%v", err)
	}
	md := r.e.dove.Maildir(r.e.user)
	if err := resetMaildir(md); err != nil {
		return fail("empty the mailbox: %v", err)
	}
	if _, err := r.invoke(fn, fmt.Sprintf("bench-%d-warm", runID), 0); err != nil {
		return fail("warm-up invocation: %v%s", err, tail())
	}
	job := Job{Tool: "popconn (Lambda handler)", Workload: wl, TLS: r.o.tls, RTT: r.o.rtt, RunID: runID}
	if err := r.e.prepare(job); err != nil {
		return fail("seed mailbox: %v", err)
	}
	sinkBefore, err := r.e.sink.Messages()
	if err != nil {
		return fail("smtp-sink counter: %v", err)
	}
	res.Load1 = load1()
	r.links.reset()
	r.calls.reset()
	start := time.Now()
	sum, err := r.invoke(fn, fmt.Sprintf("bench-%d", runID), wl.Count)
	res.WallSec = time.Since(start).Seconds()
	if err != nil {
		return fail("invocation: %v%s", err, tail())
	}
	_, attempts := r.calls.snapshot(start)
	res.Calls, res.Attempts = r.calls.byOp(), attempts
	if err := r.check(&res, job, sinkBefore, func() (int, error) { return r.archived(prefix) }); err != nil {
		return fail("%v%s", err, tail())
	}
	if sum.Mailboxes[0].Deleted != wl.Count {
		return fail("the handler deleted %d of %d messages", sum.Mailboxes[0].Deleted, wl.Count)
	}
	if err := r.analyse(&res); err != nil {
		return fail("%v", err)
	}
	return res
}

// scheduledEvent is what EventBridge sends on a schedule
// (events/scheduled.json).
const scheduledEvent = `{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-22T12:00:00Z","region":"eu-west-1","resources":["arn:aws:events:eu-west-1:123456789012:rule/popconn-poll-every-5-minutes"],"detail":{}}`

// invoke runs one invocation as the Lambda runtime does (JSON in, JSON
// out, a Lambda context with a deadline) and fails unless the one mailbox
// delivered want messages without error.
func (r *lambdaRig) invoke(fn *lambdafn.Function, reqID string, want int) (*lambdafn.Summary, error) {
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: reqID})
	ctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	defer cancel()
	out, err := lambda.NewHandler(fn.Handle).Invoke(ctx, []byte(scheduledEvent))
	if err != nil {
		return nil, err
	}
	var sum lambdafn.Summary
	if err := json.Unmarshal(out, &sum); err != nil {
		return nil, fmt.Errorf("response %s: %w", out, err)
	}
	if len(sum.Mailboxes) != 1 {
		return nil, fmt.Errorf("summary of %d mailboxes, want 1: %s", len(sum.Mailboxes), out)
	}
	if m := sum.Mailboxes[0]; m.Error != "" || m.Busy || m.Stopped != "" || m.Delivered != want {
		return nil, fmt.Errorf("mailbox delivered %d of %d: %s", m.Delivered, want, out)
	}
	return &sum, nil
}

// archived counts the objects under prefix in the bucket.
func (r *lambdaRig) archived(prefix string) (n int, err error) {
	err = testenv.Guard(func() {
		for _, f := range r.gw.ObjectFiles(r.s) {
			if strings.HasPrefix(f, prefix+"/") {
				n++
			}
		}
	})
	return n, err
}

// check is the checks every mode's run passes: smtp-sink counted each
// message (with --verify: each once, as seeded), the maildir is empty, the
// archive holds each message.
func (r *lambdaRig) check(res *LambdaResult, job Job, sinkBefore int, archived func() (int, error)) error {
	var err error
	if res.SinkGot, err = sinkReceived(r.e.sink, sinkBefore, res.Messages); err != nil {
		return fmt.Errorf("smtp-sink counter: %w", err)
	}
	if res.LeftOnServer, err = maildirCount(r.e.dove.Maildir(r.e.user)); err != nil {
		return fmt.Errorf("count maildir: %w", err)
	}
	if res.Archived, err = archived(); err != nil {
		return fmt.Errorf("count archive: %w", err)
	}
	switch {
	case res.LeftOnServer != 0:
		return fmt.Errorf("%d of %d messages left on the POP3 server", res.LeftOnServer, res.Messages)
	case res.SinkGot != res.Messages:
		return fmt.Errorf("smtp-sink received %d messages, want %d", res.SinkGot, res.Messages)
	case res.Archived != res.Messages:
		return fmt.Errorf("archive holds %d messages, want %d", res.Archived, res.Messages)
	}
	if r.e.dumpSink != nil {
		return r.e.verifyDumps(job)
	}
	return nil
}

// runLocal is `popconn run --once` in local mode on the same mailbox
// through the same proxies (env.Run, with its checks).
func (r *lambdaRig) runLocal(runID int) LambdaResult {
	r.links.reset()
	job := Job{Tool: toolPopconn, Workload: r.o.workload, TLS: r.o.tls, RTT: r.o.rtt, RunID: runID}
	er := r.e.Run(job)
	res := LambdaResult{Mode: modeLocal, RunID: runID, Messages: job.Workload.Count, WallSec: er.WallSec, Load1: er.Load1,
		SinkGot: er.SinkGot, LeftOnServer: er.LeftOnServer, Archived: er.Archived, Err: er.Err}
	if res.Err == "" {
		if err := r.analyse(&res); err != nil {
			res.Err = err.Error()
		}
	}
	return res
}

// --- recorders ---

// linkRecorder collects the busy spans of the POP3 and SMTP links and the
// moments messages' final dots reach the sink, as offsets from its origin
// (the last reset).
//
// It also times each SMTP session's turnarounds: from the moment the reply
// to a message's final "." reached popconn to the session's next command.
// That is the delivery slot's time off the wire between two transactions
// (recording the delivery, waiting for the next message): unlike the
// link-idle time it does not vanish when other sessions keep the link busy.
type linkRecorder struct {
	mu          sync.Mutex
	t0          time.Time
	busy        []span
	ends        []time.Duration
	dots        finalDots
	sessions    map[uint64]*smtpSession
	turnarounds []span
}

// smtpSession is where one SMTP connection stands in its transactions.
type smtpSession struct {
	dotSent bool          // a final "." went out; its reply has not come
	replied bool          // the reply came at replyAt; no command since
	replyAt time.Duration // when the reply reached popconn
}

func (l *linkRecorder) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t0, l.busy, l.ends, l.dots = time.Now(), nil, nil, finalDots{}
	l.sessions, l.turnarounds = map[uint64]*smtpSession{}, nil
}

func (l *linkRecorder) origin() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t0
}

// observer is the delay proxy hook of the POP3 link, or with smtp of the
// SMTP link.
func (l *linkRecorder) observer(smtp bool) func(ChunkEvent) {
	return func(ev ChunkEvent) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.t0.IsZero() {
			return
		}
		read, written := ev.Read.Sub(l.t0), ev.Written.Sub(l.t0)
		l.busy = append(l.busy, span{read, written})
		if !smtp {
			return
		}
		st := l.sessions[ev.Conn]
		if st == nil {
			st = &smtpSession{}
			l.sessions[ev.Conn] = st
		}
		if !ev.Upstream {
			if st.dotSent {
				st.dotSent, st.replied, st.replyAt = false, true, written
			}
			return
		}
		if st.replied {
			l.turnarounds = append(l.turnarounds, span{st.replyAt, read})
			st.replied = false
		}
		for range l.dots.scan(ev.Conn, ev.Data) {
			l.ends = append(l.ends, written)
			st.dotSent = true
		}
	}
}

func (l *linkRecorder) snapshot() (ends []time.Duration, busy, turnarounds []span) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Duration(nil), l.ends...), append([]span(nil), l.busy...), append([]span(nil), l.turnarounds...)
}

// finalDots finds the end of each message's DATA ("\r\n.\r\n") in the
// client-to-server bytes of SMTP connections, across chunk boundaries. The
// bench's messages have no line starting with ".", so the sequence appears
// nowhere else; BDAT, which has no final dot, is not used by smtp-sink.
type finalDots struct {
	tail map[uint64][]byte // the last 4 octets seen per connection
}

const endOfData = "\r\n.\r\n"

// scan returns how many message ends data completes on conn.
func (f *finalDots) scan(conn uint64, data []byte) int {
	if f.tail == nil {
		f.tail = map[uint64][]byte{}
	}
	buf := append(f.tail[conn], data...)
	n := strings.Count(string(buf), endOfData) // the tail is shorter than a match: none is counted twice
	keep := min(len(buf), len(endOfData)-1)
	f.tail[conn] = append([]byte(nil), buf[len(buf)-keep:]...)
	return n
}

// steadyWindow is the steady state of a run whose messages ended at ends:
// from the ⌈n/10⌉th end to the (n-⌈n/10⌉)th, and how many messages ended
// after its start up to its end. ok is false without such a message.
func steadyWindow(ends []time.Duration) (w span, messages int, ok bool) {
	e := append([]time.Duration(nil), ends...)
	sort.Slice(e, func(i, j int) bool { return e[i] < e[j] })
	n := len(e)
	k := (n + 9) / 10
	if n-2*k < 1 {
		return span{}, 0, false
	}
	return span{e[k-1], e[n-k-1]}, n - 2*k, true
}

// awsRecorder records every AWS operation of the clients it is added to.
type awsRecorder struct {
	mu       sync.Mutex
	calls    []recordedCall
	attempts int
}

type recordedCall struct {
	op         string
	start, end time.Time
}

func (a *awsRecorder) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls, a.attempts = nil, 0
}

// middleware is an APIOptions entry for a client of service: it times each
// operation from the front of the Initialize step (so serialization,
// signing, retries and the response's decoding are inside), and counts
// each HTTP attempt at the end of the Finalize step (after the retry
// middleware).
func (a *awsRecorder) middleware(service string) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		op := service + " " + stack.ID()
		err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("popconnBenchTime",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				start := time.Now()
				out, md, err := next.HandleInitialize(ctx, in)
				end := time.Now()
				a.mu.Lock()
				a.calls = append(a.calls, recordedCall{op, start, end})
				a.mu.Unlock()
				return out, md, err
			}), middleware.Before)
		if err != nil {
			return err
		}
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("popconnBenchAttempts",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				a.mu.Lock()
				a.attempts++
				a.mu.Unlock()
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
	}
}

// snapshot returns the calls as offsets from origin, and the attempts.
func (a *awsRecorder) snapshot(origin time.Time) ([]awsCall, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]awsCall, 0, len(a.calls))
	for _, c := range a.calls {
		out = append(out, awsCall{Op: c.op, span: span{c.start.Sub(origin), c.end.Sub(origin)}})
	}
	return out, a.attempts
}

func (a *awsRecorder) byOp() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for _, c := range a.calls {
		out[c.op]++
	}
	return out
}

// --- report ---

type lambdaReport struct {
	Started, Finished time.Time
	Machine           machine
	Versions          []versionInfo
	Workload          Workload
	TLS               bool
	RTT, AWSRTT       string
	Reps              int
	Settings          string
	Results           []LambdaResult
}

func (r *lambdaReport) byMode(mode string) []LambdaResult {
	var out []LambdaResult
	for _, res := range r.Results {
		if res.Mode == mode && res.Err == "" {
			out = append(out, res)
		}
	}
	return out
}

func medianOf(rs []LambdaResult, f func(LambdaResult) float64) float64 {
	var xs []float64
	for _, res := range rs {
		xs = append(xs, f(res))
	}
	return median(xs)
}

// tables renders the medians per mode and the AWS operations per message.
func (r *lambdaReport) tables() string {
	var b strings.Builder
	b.WriteString("| mode | runs | wall s, whole run | ms/message, whole run | ms/message, steady state | AWS requests/message | in series/message | in-series ms/message | AWS stall ms/message | link-idle ms/message | SMTP turnaround ms (mean) | AWS requests per turnaround |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, mode := range []string{modeLambda, modeLocal} {
		rs := r.byMode(mode)
		if len(rs) == 0 {
			continue
		}
		wall := medianOf(rs, func(x LambdaResult) float64 { return x.WallSec })
		name := "Lambda handler (S3 + DynamoDB at " + r.AWSRTT + ")"
		aws := fmt.Sprintf("%.2f | %.2f | %.2f | %.2f",
			medianOf(rs, func(x LambdaResult) float64 { return x.perMsg(float64(x.Series.Calls)) }),
			medianOf(rs, func(x LambdaResult) float64 { return x.perMsg(float64(x.Series.InSeries)) }),
			medianOf(rs, func(x LambdaResult) float64 { return msPer(x.Series.InSeriesTime, x.SteadyMessages) }),
			medianOf(rs, func(x LambdaResult) float64 { return msPer(x.Series.StallTime, x.SteadyMessages) }))
		if mode == modeLocal {
			name, aws = "local mode (`popconn run --once`, folder + bbolt)", "– | – | – | –"
		}
		perTurn := fmt.Sprintf("%.2f", medianOf(rs, func(x LambdaResult) float64 { return perTurnaround(x, x.InTurnaround) }))
		if mode == modeLocal {
			perTurn = "–"
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f | %.1f | %.1f | %s | %.1f | %.1f | %s |\n", name, len(rs), wall, 1000*wall/float64(r.Workload.Count),
			medianOf(rs, LambdaResult.SteadyMSPerMsg), aws,
			medianOf(rs, func(x LambdaResult) float64 { return msPer(x.Series.IdleTime, x.SteadyMessages) }),
			medianOf(rs, func(x LambdaResult) float64 {
				if x.Turnarounds == 0 {
					return 0
				}
				return 1000 * x.TurnaroundSec / float64(x.Turnarounds)
			}), perTurn)
	}
	rs := r.byMode(modeLambda)
	if len(rs) == 0 {
		return b.String()
	}
	ops := map[string]bool{}
	for _, res := range rs {
		for op := range res.Calls {
			ops[op] = true
		}
	}
	var names []string
	for op := range ops {
		names = append(names, op)
	}
	sort.Strings(names)
	b.WriteString("\n| AWS operation (Lambda handler) | per message, whole invocation | per message, steady state | in series per message, steady state | per SMTP turnaround, steady state |\n|---|---:|---:|---:|---:|\n")
	for _, op := range names {
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f |\n", op,
			medianOf(rs, func(x LambdaResult) float64 { return float64(x.Calls[op]) / float64(x.Messages) }),
			medianOf(rs, func(x LambdaResult) float64 { return x.perMsg(float64(x.Series.ByOp[op])) }),
			medianOf(rs, func(x LambdaResult) float64 { return x.perMsg(float64(x.Series.InSeriesByOp[op])) }),
			medianOf(rs, func(x LambdaResult) float64 { return perTurnaround(x, x.InTurnaroundByOp[op]) }))
	}
	var retried []string
	for _, res := range rs {
		n := 0
		for _, c := range res.Calls {
			n += c
		}
		if res.Attempts != n {
			retried = append(retried, fmt.Sprintf("run %d: %d attempts for %d operations", res.RunID, res.Attempts, n))
		}
	}
	if len(retried) > 0 {
		fmt.Fprintf(&b, "\nThe SDK retried: %s.\n", strings.Join(retried, "; "))
	}
	return b.String()
}

func (r *lambdaReport) write(path string) {
	var b strings.Builder
	b.WriteString("## The Lambda handler beside local mode (generated by `make bench-lambda`)\n\n")
	fmt.Fprintf(&b, "Run %s – %s UTC, %d repetition(s) per mode, interleaved; medians.\n\n", r.Started.Format("2006-01-02 15:04"), r.Finished.Format("15:04"), r.Reps)
	writeMachine(&b, r.Machine, r.Versions)
	fmt.Fprintf(&b, "- Mailbox: %s (deterministic, freshly seeded), %s POP3 from a private Dovecot, relayed to smtp-sink (no TLS, one recipient); both behind delay proxies at %s RTT (infra/bench/delay.go).\n", r.Workload.Describe(), transport(r.TLS), r.RTT)
	fmt.Fprintf(&b, "- Lambda handler: lambdafn.Function in the bench's process, invoked with an EventBridge Scheduled Event after a warm-up invocation on the empty mailbox (a warm container); archive on versitygw (HTTPS), ledger on DynamoDB Local, each behind a delay proxy at %s RTT; a new table and key prefix per run. Local mode: `popconn run --once` (archive folder and bbolt ledger, fsync), wall time from exec to exit.\n", r.AWSRTT)
	fmt.Fprintf(&b, "- Settings of both configurations: %s.\n", r.Settings)
	b.WriteString("- Steady state: from the moment the ⌈10%⌉th message's final \".\" reached the sink to that of the last but ⌈10%⌉ (for 50 messages: the 5th to the 45th, 40 messages); per-message figures in it are over the messages that ended inside it.\n")
	b.WriteString("- In series: an AWS request during whose whole span neither the POP3 nor the SMTP link carried a byte (a link carries a chunk from the moment its proxy reads it to the moment it writes it on, RTT/2 later), i.e. the mail pipeline stood still while it ran. In-series ms: the sum of those requests' durations. AWS stall: the link-idle time with at least one AWS request outstanding, each instant once. Link-idle: all time in the steady state with neither link carrying a byte (waiting on AWS, disk, CPU). A measured stand-in for \"on the critical path\": a link busy with another message's bytes hides a wait (with several deliveries in flight the links are rarely idle, so this measure finds little by construction), and idle time for another reason during a request counts against the request.\n")
	b.WriteString("- SMTP turnaround: per SMTP session, from the moment the reply to a message's final \".\" reached popconn to that session's next command, mean over the turnarounds ending in the steady state: the delivery slot's time off the wire between transactions (recording the delivery, waiting for the next message). It does not vanish when other sessions keep the link busy; its excess over local mode's is a per-slot cost of the Lambda stores. AWS requests per turnaround: those wholly inside a turnaround, over the turnarounds; with one session in flight, the requests the delivery slot waited through between two transactions; with several, an upper bound (a request inside one session's turnaround may be on another message's behalf).\n")
	b.WriteString("- Steady-state counts are requests that started in the window over messages that ended in it: the archive stage runs ahead of delivery (S3 PutObject shows fewer than 1 per message), and the records written after the session's deletes fall after the window (PutItem shows about 1 fewer than over the whole invocation).\n")
	b.WriteString("- Checked after every run: every message delivered (the handler's summary), smtp-sink counted each one, the maildir is empty, the archive holds each message.\n\n")
	b.WriteString(r.tables())
	var failed []string
	for _, res := range r.Results {
		if res.Err != "" {
			failed = append(failed, fmt.Sprintf("%s, run %d: %s", res.Mode, res.RunID, res.Err))
		}
	}
	writeResults("bench lambda", path, &b, failed, r)
}
