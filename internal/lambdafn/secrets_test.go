package lambdafn_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/lambdafn"
)

// The ssm: and secretsmanager: resolvers through the real SDK clients,
// against the scripted JSON-protocol server (no local server exists for
// these services).
func TestAWSResolvers(t *testing.T) {
	const value = "Pop3-Pa55-{\"quoted\"}-7f"
	aws := startScriptedAWS(t)
	aws.setParam("/popconn/sales", value)
	aws.setSecret("popconn/plain", value)
	aws.setSecret("popconn/json", `{"username":"sales","password":"`+strings.ReplaceAll(value, `"`, `\"`)+`","port":995}`)
	aws.setSecret("popconn/notjson", "xq-not-json-"+value)
	aws.setBinary("popconn/binary", []byte(value))

	tests := []struct {
		ref    string
		want   string
		errHas string
	}{
		{"ssm:/popconn/sales", value, ""},
		{"secretsmanager:popconn/plain", value, ""},
		{"secretsmanager:popconn/json#password", value, ""},
		{"secretsmanager:popconn/binary", value, ""},
		{"ssm:/popconn/missing", "", "ParameterNotFound"},
		{"secretsmanager:popconn/missing", "", "ResourceNotFoundException"},
		{"secretsmanager:popconn/json#nokey", "", `no key "nokey"`},
		{"secretsmanager:popconn/json#port", "", "not a string"},
		{"secretsmanager:popconn/notjson#password", "", "not a JSON object"},
		{"secretsmanager:popconn/plain#", "", "not a secret reference"},
	}
	secrets := config.NewSecrets()
	lambdafn.RegisterAWSResolvers(secrets, aws.secretsClient(), aws.ssmClient())
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := secrets.Resolve(context.Background(), config.SecretRef(tt.ref))
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want one mentioning %s", err, tt.errHas)
				}
				if strings.Contains(err.Error(), value) || strings.Contains(err.Error(), "xq-") {
					t.Fatalf("the error shows the secret: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
	// SDK error types survive the wrapping.
	_, err := secrets.Resolve(context.Background(), config.SecretRef("ssm:/popconn/missing2"))
	var nf *types.ParameterNotFound
	if !errors.As(err, &nf) {
		t.Errorf("ParameterNotFound not reachable with errors.As: %v", err)
	}
	// Fetched once, then cached for the life of the Secrets (the container).
	for i := 0; i < 3; i++ {
		if _, err := secrets.Resolve(context.Background(), config.SecretRef("ssm:/popconn/sales")); err != nil {
			t.Fatal(err)
		}
	}
	if n := aws.count("AmazonSSM.GetParameter", "/popconn/sales"); n != 1 {
		t.Errorf("GetParameter called %d times, want 1 (cached)", n)
	}
	// Without clients the schemes stay unregistered: a clear error.
	bare := config.NewSecrets()
	lambdafn.RegisterAWSResolvers(bare, nil, nil)
	if _, err := bare.Resolve(context.Background(), config.SecretRef("ssm:/x")); !errors.Is(err, config.ErrUnknownScheme) {
		t.Errorf("no SSM client: %v", err)
	}
}
