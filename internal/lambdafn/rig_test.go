package lambdafn_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/popconnector/popconnector/internal/archive/s3archive"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/lambdafn"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/dynamoledger"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// Known secrets: every output is searched for them.
const (
	salesPassword   = "Sales-pop-Pa55-c0ffee"
	supportPassword = "Support-pop-Pa55-beef"
)

// awsServers are the slow-starting servers shared by the subtests of one
// test function: versitygw (S3) and DynamoDB Local. Each subtest uses its
// own table and key prefix.
type awsServers struct {
	gw  *testenv.VersityGW
	ddb *testenv.DynamoDBLocal
	aws *scriptedAWS // SSM and Secrets Manager (scripted; no local server exists)
}

func startAWSServers(t testing.TB) *awsServers {
	t.Helper()
	s := &awsServers{gw: testenv.StartVersityGW(t), ddb: testenv.StartDynamoDBLocal(t), aws: startScriptedAWS(t)}
	s.aws.setParam("/popconn/sales", salesPassword)
	s.aws.setSecret("popconn/support", `{"username":"support","password":"`+supportPassword+`"}`)
	return s
}

// rig is one scenario: its own Dovecot, smtp-sink, ledger table and
// archive prefix, on the shared AWS servers.
type rig struct {
	t       testing.TB
	srv     *awsServers
	dove    *testenv.Dovecot
	sink    *testenv.SMTPSink
	dir     string
	table   string
	prefix  string
	cfgPath string
	cfgYAML string
}

type rigOptions struct {
	sinkArgs        []string      // extra smtp-sink arguments (e.g. -w N)
	deliveryTimeout time.Duration // default 10s
	inFlight        int           // deliveries_in_flight; 0: popconn's default
}

var rigSeq struct {
	mu sync.Mutex
	n  int
}

func newRig(t testing.TB, srv *awsServers, o rigOptions) *rig {
	t.Helper()
	rigSeq.mu.Lock()
	rigSeq.n++
	n := rigSeq.n
	rigSeq.mu.Unlock()
	r := &rig{t: t, srv: srv, dir: t.TempDir(), table: fmt.Sprintf("popconn-test-%d", n), prefix: fmt.Sprintf("run%d/eml", n)}
	r.dove = testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"sales": salesPassword, "support": supportPassword}})
	r.sink = testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{TLS: r.dove.CA, ExtraArgs: o.sinkArgs})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := dynamoledger.CreateTable(ctx, r.dynamo(), r.table); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if o.deliveryTimeout == 0 {
		o.deliveryTimeout = 10 * time.Second
	}
	port := r.sink.Addr[strings.LastIndexByte(r.sink.Addr, ':')+1:]
	ca := r.dove.CA.CertFile
	mbox := func(id, pass string, extra string) string {
		return fmt.Sprintf(`  - {id: %s, server: "%s", tls: implicit, ca_file: "%s", server_name: localhost, username: %s, password: "%s", deliver_to: [%s@corp.example]%s}
`, id, r.dove.TLSAddr, ca, id, pass, id, extra)
	}
	// The archive and ledger sections point nowhere usable: AWS mode must
	// ignore them.
	inFlight := ""
	if o.inFlight > 0 {
		inFlight = fmt.Sprintf("deliveries_in_flight: %d\n", o.inFlight)
	}
	r.cfgYAML = fmt.Sprintf(`postmaster: postmaster@corp.example
parallel_mailboxes: 2
%sdelivery: {host: localhost, port: %s, tls: starttls, ca_file: "%s", timeout: %s}
archive: {dir: /nonexistent/popconn-archive}
ledger: {path: /nonexistent/popconn-ledger.db}
log: {level: debug}
mailboxes:
%s%s%s`, inFlight, port, ca, o.deliveryTimeout,
		mbox("sales", "ssm:/popconn/sales", ""),
		mbox("support", "secretsmanager:popconn/support#password", ""),
		mbox("old", "ssm:/popconn/old", ", enabled: false"))
	r.cfgPath = filepath.Join(r.dir, "popconn.yaml")
	if err := os.WriteFile(r.cfgPath, []byte(r.cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) dynamo() *dynamodb.Client {
	return r.srv.ddb.Client(r.t)
}

func (r *rig) s3() *s3.Client { return r.srv.gw.Client(r.t) }

func (r *rig) env() lambdafn.Env {
	return lambdafn.Env{ArchiveBucket: r.srv.gw.Bucket, ArchivePrefix: r.prefix, LedgerTable: r.table}
}

// fn is one Lambda container: its own clients, its own caches.
type fn struct {
	*lambdafn.Function
	out *syncBuffer
}

// newFunction builds a Function the way functions/poller does, with
// clients pointed at the local servers.
func (r *rig) newFunction(source string, reserve time.Duration) *fn {
	r.t.Helper()
	return r.newFunctionWith(fnOptions{source: source, reserve: reserve})
}

type fnOptions struct {
	source    string
	reserve   time.Duration
	crash     *connectortest.Crash // wraps the stores: the invocation dies at its trigger
	ledgerNow func() time.Time     // the ledger's clock (lease expiry); nil = time.Now
}

func (r *rig) newFunctionWith(o fnOptions) *fn {
	r.t.Helper()
	if o.source == "" {
		o.source = "file:" + r.cfgPath
	}
	s3c := r.s3()
	stores, err := lambdafn.AWSStores(r.env(), s3c, r.dynamo())
	if err != nil {
		r.t.Fatal(err)
	}
	if o.ledgerNow != nil {
		stores.Ledger = dynamoledger.New(r.dynamo(), dynamoledger.Options{Table: r.table, Now: o.ledgerNow})
	}
	if o.crash != nil {
		stores.Archive, stores.Ledger = o.crash.Archive(stores.Archive), o.crash.Ledger(stores.Ledger)
	}
	out := &syncBuffer{}
	ssmc := r.srv.aws.ssmClient()
	f, err := lambdafn.New(lambdafn.Options{
		ConfigSource:   o.source,
		Loader:         lambdafn.ConfigLoader{S3: s3c, SSM: ssmc},
		Stores:         stores,
		SecretsManager: r.srv.aws.secretsClient(),
		SSM:            ssmc,
		Reserve:        o.reserve,
		Stdout:         out,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		for _, secret := range []string{salesPassword, supportPassword} {
			if strings.Contains(out.String(), secret) {
				r.t.Errorf("a POP3 password appears in the function's output")
			}
		}
	})
	return &fn{Function: f, out: out}
}

// invoke runs the handler the way the Lambda runtime does: JSON payload
// in, JSON out, with a Lambda context and a deadline.
func invoke(t *testing.T, f *fn, payload []byte, reqID string, timeout time.Duration) (*lambdafn.Summary, error) {
	t.Helper()
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: reqID})
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := lambda.NewHandler(f.Handle).Invoke(ctx, payload)
	if err != nil {
		return nil, err
	}
	var s lambdafn.Summary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("response %s: %v", out, err)
	}
	return &s, nil
}

func (r *rig) mailbox(s *lambdafn.Summary, id string) lambdafn.MailboxSummary {
	r.t.Helper()
	for _, m := range s.Mailboxes {
		if m.Mailbox == id {
			return m
		}
	}
	r.t.Fatalf("summary has no mailbox %s: %+v", id, s)
	return lambdafn.MailboxSummary{}
}

// served returns what Dovecot sends for each message of user (RETR,
// dot-unstuffed), by UIDL, read with a session that deletes nothing.
func (r *rig) served(user, pass string) map[string][]byte {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pop3.Dial(ctx, pop3.Options{Addr: r.dove.TLSAddr, TLS: tlsmode.Implicit,
		TLSConfig: &tls.Config{RootCAs: r.dove.CA.Pool, ServerName: "localhost"}, Timeout: 10 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(ctx, user, pass); err != nil {
		r.t.Fatal(err)
	}
	list, err := c.ListAll(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, m := range list {
		rc, err := c.Retr(ctx, m.Num)
		if err != nil {
			r.t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			r.t.Fatal(err)
		}
		out[m.UID] = b
	}
	if err := c.Quit(ctx); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// putObject stores body under key in the test bucket.
func (r *rig) putObject(key, body string) {
	r.t.Helper()
	if _, err := r.s3().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(r.srv.gw.Bucket), Key: aws.String(key), Body: strings.NewReader(body),
	}); err != nil {
		r.t.Fatal(err)
	}
}

// records lists the ledger of one mailbox.
func (r *rig) records(mailbox string) []*ledger.Record {
	r.t.Helper()
	recs, err := dynamoledger.New(r.dynamo(), dynamoledger.Options{Table: r.table}).List(context.Background(), mailbox)
	if err != nil {
		r.t.Fatal(err)
	}
	return recs
}

// object reads an archived message straight from the S3 bucket.
func (r *rig) object(key string) []byte {
	r.t.Helper()
	objKey := s3archive.New(r.s3(), s3archive.Options{Bucket: r.srv.gw.Bucket, Prefix: r.prefix}).ObjectKey(key)
	if !strings.HasPrefix(objKey, r.prefix+"/") {
		r.t.Fatalf("object key %q lacks the prefix %q", objKey, r.prefix)
	}
	out, err := r.s3().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(r.srv.gw.Bucket), Key: aws.String(objKey)})
	if err != nil {
		r.t.Fatalf("GetObject %s: %v", objKey, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func message(i int, subject string) []byte {
	return []byte(fmt.Sprintf("From: sender%d@example.org\r\nTo: sales@isp.example\r\nSubject: %s %d\r\nMessage-ID: <m%d.%s@example.org>\r\n\r\nBody of %d.\r\n", i, subject, i, i, strings.ReplaceAll(subject, " ", "-"), i))
}

// deliveredOnce checks that the sink received each Message-ID exactly
// once and returns how many messages it holds.
func deliveredOnce(t *testing.T, msgs []testenv.Received) int {
	t.Helper()
	seen := map[string]int{}
	for _, m := range msgs {
		id := headerValue(m.Data, "Message-ID")
		seen[id]++
		if seen[id] > 1 {
			t.Errorf("%s delivered %d times", id, seen[id])
		}
	}
	return len(msgs)
}

func headerValue(msg []byte, name string) string {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(head), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

// jsonLines decodes every line of out, failing on one that is not JSON.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("output line is not JSON: %q", line)
		}
		docs = append(docs, d)
	}
	return docs
}

// emfLines returns the EMF documents (those with an _aws key).
func emfLines(t *testing.T, out string) []map[string]any {
	var emf []map[string]any
	for _, d := range jsonLines(t, out) {
		if _, ok := d["_aws"]; ok {
			emf = append(emf, d)
		}
	}
	return emf
}
