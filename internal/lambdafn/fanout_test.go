package lambdafn_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/popconnector/popconnector/internal/ledger/dynamoledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// The real bootstrap under the AWS Lambda Runtime Interface Emulator,
// configured only through its environment, against versitygw (S3),
// DynamoDB Local, moto's SQS, Dovecot and smtp-sink: the scheduled,
// retrieve-now and SQS events of both modes, and the fan-out of many
// mailboxes through several workers.

const fanPassword = "Fan-pop-Pa55-5eed"

// fanRig is many mailboxes of one Dovecot, their configuration in S3,
// and a job queue on moto.
type fanRig struct {
	*rig
	moto     *testenv.Moto
	sqs      *sqs.Client
	queueURL string
	queueARN string
	bin      string
	source   string // s3://bucket/key of the configuration
	boxes    []string
	perBox   int
	// fnTimeout is the function timeout of the functions started next
	// (default 120 s).
	fnTimeout time.Duration
}

// newFanRig makes n mailboxes fan0000... of perBox messages each, plus
// the mailboxes named in broken, whose password is wrong.
func newFanRig(t testing.TB, srv *awsServers, moto *testenv.Moto, bin string, n, perBox int, broken ...string) *fanRig {
	t.Helper()
	rigSeq.mu.Lock()
	rigSeq.n++
	seq := rigSeq.n
	rigSeq.mu.Unlock()
	f := &fanRig{rig: &rig{t: t, srv: srv, dir: t.TempDir(), table: fmt.Sprintf("popconn-fan-%d", seq), prefix: fmt.Sprintf("fan%d/eml", seq)},
		moto: moto, sqs: moto.SQSClient(t, func(o *sqs.Options) { o.Region = srv.gw.Region }), bin: bin, perBox: perBox}
	users := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("fan%04d", i)
		f.boxes = append(f.boxes, id)
		users[id] = fanPassword
	}
	for _, id := range broken {
		users[id] = fanPassword
	}
	f.dove = testenv.StartDovecot(t, testenv.DovecotOptions{Users: users})
	f.sink = testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{TLS: f.dove.CA})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := dynamoledger.CreateTable(ctx, f.dynamo(), f.table); err != nil {
		t.Fatalf("create table: %v", err)
	}
	srv.aws.setParam("/popconn/fan", fanPassword)
	srv.aws.setParam("/popconn/fan-wrong", "not-the-password")
	for _, id := range f.boxes {
		for j := range perBox {
			f.dove.Deliver(t, id, fanMessage(id, j))
		}
	}
	for _, id := range broken {
		f.dove.Deliver(t, id, fanMessage(id, 0))
	}
	port := f.sink.Addr[strings.LastIndexByte(f.sink.Addr, ':')+1:]
	var b strings.Builder
	fmt.Fprintf(&b, "postmaster: postmaster@corp.example\nparallel_mailboxes: 4\ndelivery: {host: localhost, port: %s, tls: starttls, ca_file: \"%s\", timeout: 10s}\nlog: {level: info}\nmailboxes:\n", port, f.dove.CA.CertFile)
	box := func(id, secret string) {
		fmt.Fprintf(&b, "  - {id: %s, server: \"%s\", tls: implicit, ca_file: \"%s\", server_name: localhost, username: %s, password: \"%s\", deliver_to: [%s@corp.example]}\n",
			id, f.dove.TLSAddr, f.dove.CA.CertFile, id, secret, id)
	}
	for _, id := range f.boxes {
		box(id, "ssm:/popconn/fan")
	}
	for _, id := range broken {
		box(id, "ssm:/popconn/fan-wrong")
	}
	key := strings.TrimSuffix(f.prefix, "/eml") + "/config/popconn.yaml"
	f.putObject(key, b.String())
	f.source = "s3://" + srv.gw.Bucket + "/" + key
	return f
}

func fanMessage(box string, j int) []byte {
	return []byte(fmt.Sprintf("From: sender@isp.example\r\nTo: %s@isp.example\r\nSubject: fan-out %d\r\nMessage-ID: <%s.%d@isp.example>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nBody of message %d of %s.\r\n", box, j, box, j, j, box))
}

// function starts one Lambda function (one container) under the RIE with
// the rig's environment plus extra.
func (f *fanRig) function(name string, extra map[string]string) *testenv.LambdaRIE {
	f.t.Helper()
	env := functionEnv(f.rig, f.source)
	env["AWS_ENDPOINT_URL_SQS"] = f.moto.Endpoint
	env["AWS_LAMBDA_FUNCTION_NAME"] = name
	env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = "256"
	for k, v := range extra {
		env[k] = v
	}
	timeout := f.fnTimeout
	if timeout == 0 {
		timeout = 120 * time.Second
	}
	return testenv.StartLambdaRIE(f.t, testenv.LambdaRIEOptions{Bootstrap: f.bin, Env: env, Timeout: timeout})
}

// workers starts n worker functions and the mapping that feeds them.
func (f *fanRig) workers(n int, batch int32, visibility time.Duration) (*esm, []*testenv.LambdaRIE) {
	e := &esm{sqs: f.sqs, queueURL: f.queueURL, queueARN: f.queueARN, region: f.srv.gw.Region, batch: batch, visibility: visibility}
	var fns []*testenv.LambdaRIE
	for i := range n {
		w := f.function(fmt.Sprintf("popconn-worker-%d", i), nil)
		fns = append(fns, w)
		e.workers = append(e.workers, w.Invoke)
	}
	return e, fns
}

func invokeJSON(t testing.TB, fn *testenv.LambdaRIE, payload []byte, into any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fn.Timeout+time.Minute)
	defer cancel()
	out, err := fn.Invoke(ctx, payload)
	if err != nil {
		t.Fatalf("invoke: %v\nfunction log tail:\n%s", err, tail(fn.Logs(), 4000))
	}
	if err := json.Unmarshal(out, into); err != nil {
		t.Fatalf("response %q: %v", out, err)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// dispatchResponse is the part of a dispatcher's Summary the tests read.
type dispatchResponse struct {
	Trigger    string `json:"trigger"`
	Dispatched int    `json:"dispatched"`
}

type pollResponse struct {
	Trigger   string `json:"trigger"`
	Mailboxes []struct {
		Mailbox   string `json:"mailbox"`
		Delivered int    `json:"delivered"`
		Deleted   int    `json:"deleted"`
		Error     string `json:"error"`
	} `json:"mailboxes"`
	Failed int `json:"failed"`
}

type batchResponse struct {
	BatchItemFailures []struct {
		ItemIdentifier string `json:"itemIdentifier"`
	} `json:"batchItemFailures"`
}

// logLines are the function's JSON log lines that have msg.
func logLines(t testing.TB, out []byte, msg string) []map[string]any {
	var found []map[string]any
	for _, line := range strings.Split(string(out), "\n") {
		var d map[string]any
		if json.Unmarshal([]byte(line), &d) == nil && d["msg"] == msg {
			found = append(found, d)
		}
	}
	return found
}

func fanOutMailboxes(t testing.TB, def int) int {
	if v := os.Getenv("POPCONN_FANOUT_MAILBOXES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("POPCONN_FANOUT_MAILBOXES=%q: want a positive number", v)
		}
		return n
	}
	return def
}
