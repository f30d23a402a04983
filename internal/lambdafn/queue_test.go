package lambdafn

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/smithy-go"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
)

func TestQueueEventDecoding(t *testing.T) {
	sample, err := os.ReadFile("../../events/sqs-jobs.json")
	if err != nil {
		t.Fatal(err)
	}
	record := func(id, body string) string {
		b, _ := json.Marshal(events.SQSMessage{MessageId: id, Body: body, EventSource: "aws:sqs"})
		return string(b)
	}
	tests := []struct {
		name    string
		payload string
		want    []string // per record: mailboxes joined by ",", or "err:<text>"
		errHas  string   // the whole event is refused
	}{
		{"sample", string(sample), []string{"sales"}, ""},
		{"two jobs", `{"Records":[` + record("1", `{"mailboxes":["a"],"tick":"2026-12-04T10:00:00Z"}`) + `,` +
			record("2", `{"mailboxes":["b","c"],"tick":"2026-12-04T10:00:00Z"}`) + `]}`, []string{"a", "b,c"}, ""},
		{"unreadable body is the job's error, not the event's", `{"Records":[` + record("1", `not json`) + `]}`, []string{"err:job body"}, ""},
		{"a job naming nothing", `{"Records":[` + record("1", `{"mailboxes":[]}`) + `]}`, []string{"err:no mailbox"}, ""},
		{"empty Records", `{"Records":[]}`, nil, "empty"},
		{"an S3 notification", `{"Records":[{"eventSource":"aws:s3","messageId":"x"}]}`, nil, `"aws:s3"`},
		{"extra key", `{"Records":[],"x":1}`, nil, `"x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev Event
			err := json.Unmarshal([]byte(tt.payload), &ev)
			if tt.errHas != "" {
				if !errors.Is(err, ErrBadEvent) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want ErrBadEvent mentioning %s", err, tt.errHas)
				}
				return
			}
			if err != nil || ev.Trigger != TriggerQueue {
				t.Fatalf("trigger %q, err %v", ev.Trigger, err)
			}
			var got []string
			for _, j := range ev.Jobs {
				if j.Err != nil {
					got = append(got, "err:"+j.Err.Error())
					continue
				}
				got = append(got, strings.Join(j.Job.Mailboxes, ","))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("jobs %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] && !(strings.HasPrefix(tt.want[i], "err:") && strings.Contains(got[i], tt.want[i][4:])) {
					t.Errorf("job %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestInfrastructureFault(t *testing.T) {
	op := func(service string, err error) error {
		return fmt.Errorf("mailbox sales: ledger: %w", &smithy.OperationError{ServiceID: service, OperationName: "PutItem", Err: err})
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"DynamoDB unreachable", op("DynamoDB", errors.New("dial tcp: connection refused")), true},
		{"S3 access denied", op("S3", errors.New("AccessDenied")), true},
		{"a panic recovered in the pipeline", fmt.Errorf("%w in mailbox sales: nil map", connector.ErrInternal), true},
		{"wrong POP3 password", errors.New("mailbox sales: pop3: -ERR [AUTH] Authentication failed."), false},
		{"POP3 server down", errors.New("mailbox sales: dial tcp 127.0.0.1:995: connection refused"), false},
		{"secret not readable (SSM)", op("SSM", errors.New("ParameterNotFound")), false},
		{"lease held: busy", op("DynamoDB", ledger.ErrLeaseHeld), false},
		{"another writer's version", op("DynamoDB", ledger.ErrConflict), false},
	}
	for _, tt := range tests {
		if got := infrastructureFault(tt.err); got != tt.want {
			t.Errorf("%s: infrastructureFault = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestQueueIdentifiers(t *testing.T) {
	tick := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		mailbox   string
		wantGroup string // "" = a digest
	}{
		{"sales", "sales"},
		{"info@contoso.example", "info@contoso.example"},
		{"with space", ""},
		{strings.Repeat("x", 129), ""},
		{"ünïcode", ""},
	}
	for _, tt := range tests {
		g := groupID(tt.mailbox)
		if tt.wantGroup != "" && g != tt.wantGroup {
			t.Errorf("groupID(%q) = %q, want %q", tt.mailbox, g, tt.wantGroup)
		}
		if tt.wantGroup == "" && (!strings.HasPrefix(g, "sha256-") || len(g) > 128) {
			t.Errorf("groupID(%q) = %q, want a digest SQS accepts", tt.mailbox, g)
		}
		d := deduplicationID(tt.mailbox, tick)
		if len(d) != 64 || d != deduplicationID(tt.mailbox, tick.In(time.FixedZone("x", 3600))) {
			t.Errorf("deduplicationID(%q) = %q: want 64 hex digits, the same for the same instant", tt.mailbox, d)
		}
		if d == deduplicationID(tt.mailbox, tick.Add(5*time.Minute)) {
			t.Errorf("deduplicationID(%q) is the same for two ticks", tt.mailbox)
		}
	}
	if tickOf(Event{Trigger: TriggerSchedule}, tick.Add(42*time.Second)) != tick {
		t.Error("a {} schedule event's tick is not its minute")
	}
}

func TestQueueResponseShape(t *testing.T) {
	tests := []struct {
		sum  Summary
		want string
	}{
		{Summary{Trigger: TriggerQueue, Mailboxes: []MailboxSummary{{Mailbox: "a"}}}, `{"batchItemFailures":[]}`},
		{Summary{Trigger: TriggerQueue, BatchItemFailures: []events.SQSBatchItemFailure{{ItemIdentifier: "m1"}}}, `{"batchItemFailures":[{"itemIdentifier":"m1"}]}`},
		{Summary{Trigger: TriggerManual, Mailboxes: []MailboxSummary{}}, `{"trigger":"manual","mailboxes":[],"failed":0,"stopped":0,"busy":0}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(&tt.sum)
		if err != nil || string(b) != tt.want {
			t.Errorf("%s: %s (%v), want %s", tt.sum.Trigger, b, err, tt.want)
		}
	}
}
