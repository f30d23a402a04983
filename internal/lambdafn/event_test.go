package lambdafn_test

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/lambdafn"
)

func TestEventDecoding(t *testing.T) {
	scheduled, err := os.ReadFile("../../events/scheduled.json")
	if err != nil {
		t.Fatal(err)
	}
	retrieveNow, err := os.ReadFile("../../events/retrieve-now.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		payload   string
		trigger   lambdafn.Trigger
		mailboxes []string
		errHas    string // "" = must decode
	}{
		{"EventBridge sample", string(scheduled), lambdafn.TriggerSchedule, nil, ""},
		{"retrieve-now sample", string(retrieveNow), lambdafn.TriggerManual, []string{"sales"}, ""},
		{"Scheduler default input", `{}`, lambdafn.TriggerSchedule, nil, ""},
		{"several, repeats dropped", `{"mailboxes":["b","a","b"]}`, lambdafn.TriggerManual, []string{"b", "a"}, ""},
		{"empty list", `{"mailboxes":[]}`, "", nil, "empty"},
		{"not a list", `{"mailboxes":"sales"}`, "", nil, "list of mailbox ids"},
		{"extra key", `{"mailboxes":["sales"],"force":true}`, "", nil, `"force"`},
		{"other EventBridge event", `{"detail-type":"Object Created","source":"aws.s3","detail":{}}`, "", nil, `"Object Created"`},
		{"unknown shape", `{"key1":"value1"}`, "", nil, `"key1"`},
		{"array", `["sales"]`, "", nil, "not a JSON object"},
		{"null", `null`, "", nil, "empty payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev lambdafn.Event
			err := json.Unmarshal([]byte(tt.payload), &ev)
			if tt.errHas != "" {
				if !errors.Is(err, lambdafn.ErrBadEvent) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want ErrBadEvent mentioning %s", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Trigger != tt.trigger || !slices.Equal(ev.Mailboxes, tt.mailboxes) {
				t.Fatalf("got %s %q, want %s %q", ev.Trigger, ev.Mailboxes, tt.trigger, tt.mailboxes)
			}
		})
	}
	var ev lambdafn.Event
	if err := json.Unmarshal(scheduled, &ev); err != nil || ev.Schedule == nil || ev.Schedule.Source != "aws.events" || ev.Schedule.Time.IsZero() {
		t.Fatalf("scheduled event not kept: %+v, %v", ev.Schedule, err)
	}
}

func TestEnvFromGetenv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	e, err := lambdafn.EnvFromGetenv(env(map[string]string{
		"POPCONN_ARCHIVE_BUCKET": "mail-archive", "POPCONN_LEDGER_TABLE": "popconn-ledger",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if e.ConfigSource != lambdafn.DefaultConfigSource || e.MetricsNamespace != lambdafn.DefaultMetricsNamespace ||
		e.Reserve != lambdafn.DefaultReserve || e.ArchivePrefix != "" || e.S3PathStyle || e.RecordRetention != 0 {
		t.Fatalf("defaults: %+v", e)
	}
	e, err = lambdafn.EnvFromGetenv(env(map[string]string{
		"POPCONN_CONFIG": "ssm:/popconn/config", "POPCONN_ARCHIVE_BUCKET": "b", "POPCONN_ARCHIVE_PREFIX": "eml/",
		"POPCONN_LEDGER_TABLE": "t", "POPCONN_DEADLINE_RESERVE": "20s", "POPCONN_S3_PATH_STYLE": "true",
		"POPCONN_METRICS_NAMESPACE": "Mail", "POPCONN_LEDGER_RECORD_RETENTION": "24h",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if e.ConfigSource != "ssm:/popconn/config" || e.ArchivePrefix != "eml/" || e.Reserve.Seconds() != 20 || !e.S3PathStyle || e.MetricsNamespace != "Mail" || e.RecordRetention.Hours() != 24 {
		t.Fatalf("set: %+v", e)
	}
	// Every problem at once.
	_, err = lambdafn.EnvFromGetenv(env(map[string]string{"POPCONN_DEADLINE_RESERVE": "soon", "POPCONN_S3_PATH_STYLE": "maybe", "POPCONN_LEDGER_RECORD_RETENTION": "5m"}))
	for _, want := range []string{"POPCONN_ARCHIVE_BUCKET", "POPCONN_LEDGER_TABLE", "POPCONN_DEADLINE_RESERVE", "POPCONN_S3_PATH_STYLE", "POPCONN_LEDGER_RECORD_RETENTION"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
