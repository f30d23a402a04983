package lambdafn_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/dynamoledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// A global mailbox's message to 5,000 local recipients, with
// Exchange-length replies, on the DynamoDB ledger: the record no longer
// holds every recipient's reply inline (an item is at most 400 KB), so
// the delivery is recorded, the message deleted, and the next poll sends
// nothing again.
func TestLargeRecipientListDeliveredOnce(t *testing.T) {
	const n = 5000
	srv := startAWSServers(t)
	rigSeq.mu.Lock()
	rigSeq.n++
	seq := rigSeq.n
	rigSeq.mu.Unlock()
	r := &rig{t: t, srv: srv, dir: t.TempDir(), table: fmt.Sprintf("popconn-big-%d", seq), prefix: fmt.Sprintf("big%d/eml", seq)}
	r.dove = testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"all": salesPassword}})
	// smtp-sink answers every RCPT and the end of data with 250; -R
	// would not lengthen them, so the length comes from the reply of
	// the DATA stage being recorded for every recipient.
	r.sink = testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{TLS: r.dove.CA})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := dynamoledger.CreateTable(ctx, r.dynamo(), r.table); err != nil {
		t.Fatal(err)
	}
	var msg strings.Builder
	for i := range n {
		fmt.Fprintf(&msg, "Delivered-To: user%04d@corp.example\r\n", i)
	}
	msg.WriteString("From: news@isp.example\r\nTo: undisclosed-recipients:;\r\nSubject: to everyone\r\nMessage-ID: <everyone-1@isp.example>\r\n\r\nOne message, five thousand readers.\r\n")
	r.dove.Deliver(t, "all", []byte(msg.String()))
	port := r.sink.Addr[strings.LastIndexByte(r.sink.Addr, ':')+1:]
	r.cfgYAML = fmt.Sprintf(`postmaster: postmaster@corp.example
delivery: {host: localhost, port: %s, tls: starttls, ca_file: "%s", timeout: 60s}
mailboxes:
  - {id: all, server: "%s", tls: implicit, ca_file: "%s", server_name: localhost, username: all, password: "ssm:/popconn/sales",
     type: global, global: {local_domains: [corp.example], header_order: [Delivered-To]}}
`, port, r.dove.CA.CertFile, r.dove.TLSAddr, r.dove.CA.CertFile)
	key := fmt.Sprintf("big%d/config/popconn.yaml", seq)
	r.putObject(key, r.cfgYAML)
	f := r.newFunction("s3://"+srv.gw.Bucket+"/"+key, time.Second)

	sum, err := invoke(t, f, []byte(`{"mailboxes":["all"]}`), "req-big-1", 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if m := r.mailbox(sum, "all"); m.Error != "" || m.Delivered != 1 || m.Deleted != 1 {
		t.Fatalf("first poll: %+v, want the message delivered and deleted\n%s", m, tail([]byte(f.out.String()), 3000))
	}
	got := r.sink.WaitFor(t, 1, 30*time.Second)
	if len(got) != 1 || len(got[0].To) != n {
		t.Fatalf("sink: %d messages, %d recipients; want 1 message to %d", len(got), len(got[0].To), n)
	}
	led := dynamoledger.New(r.dynamo(), dynamoledger.Options{Table: r.table})
	hist, err := led.History(context.Background(), "all")
	if err != nil || len(hist) != 1 {
		t.Fatalf("history: %d records, %v; want the one deleted record", len(hist), err)
	}
	rec := hist[0]
	accepted := 0
	for _, rc := range rec.Recipients {
		if rc.Status == ledger.Accepted {
			accepted++
		}
	}
	if accepted != n || !rec.Deleted() {
		t.Fatalf("record: %d of %d recipients accepted, deleted %v", accepted, len(rec.Recipients), rec.Deleted())
	}
	if live := r.records("all"); len(live) != 0 {
		t.Errorf("%d live records after the deletion, want none", len(live))
	}
	if n := r.dove.Count(t, "all"); n != 0 {
		t.Errorf("the server still holds %d messages", n)
	}
	sum, err = invoke(t, f, []byte(`{"mailboxes":["all"]}`), "req-big-2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if m := r.mailbox(sum, "all"); m.Error != "" || m.Delivered != 0 || m.Fetched != 0 {
		t.Errorf("second poll: %+v, want nothing to do", m)
	}
	if got := r.sink.Messages(t); len(got) != 1 {
		t.Errorf("sink holds %d messages after the second poll, want 1", len(got))
	}
}
