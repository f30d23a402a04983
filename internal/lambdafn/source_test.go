package lambdafn_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/lambdafn"
)

const minimalYAML = `postmaster: postmaster@corp.example
delivery: {host: exchange.corp.example}
archive: {dir: /nonexistent/ignored}
mailboxes:
  - {id: sales, server: pop.isp.example, username: sales, password: "ssm:/popconn/sales", deliver_to: [sales@corp.example]}
`

// The configuration sources that need no S3 server (s3:// is exercised
// against versitygw in TestHandler).
func TestConfigLoader(t *testing.T) {
	aws := startScriptedAWS(t)
	aws.setParam("/popconn/config", minimalYAML)
	aws.setParam("/popconn/broken", "postmaster: [\n")
	path := filepath.Join(t.TempDir(), "popconn.yaml")
	if err := os.WriteFile(path, []byte(minimalYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	l := lambdafn.ConfigLoader{SSM: aws.ssmClient()}
	tests := []struct {
		source string
		errHas string
	}{
		{"file:" + path, ""},
		{"ssm:/popconn/config", ""},
		{"ssm:/popconn/missing", "ParameterNotFound"},
		{"ssm:/popconn/broken", "ssm:/popconn/broken"},
		{"file:/nonexistent/popconn.yaml", "/nonexistent/popconn.yaml"},
		{"", "/var/task/popconn.yaml"}, // the bundled default, absent here
		{"s3://bucket-only", "want s3://bucket/key"},
		{"s3://b/key", "no S3 client"},
		{"https://example.com/popconn.yaml", "want file:/path, s3://bucket/key or ssm:/parameter/name"},
		{"file:", "needs a path"},
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			cfg, err := l.Load(context.Background(), tt.source)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Mailboxes) != 1 || cfg.Mailboxes[0].ID != "sales" || cfg.Mailboxes[0].Server != "pop.isp.example:995" {
				t.Fatalf("parsed %+v", cfg.Mailboxes)
			}
		})
	}
}

func TestNewNeedsStores(t *testing.T) {
	if _, err := lambdafn.New(lambdafn.Options{}); err == nil || !strings.Contains(err.Error(), "archive and a ledger") {
		t.Fatalf("New without stores: %v", err)
	}
}
