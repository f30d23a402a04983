package lambdafn_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// scriptedAWS is a minimal in-process stand-in for Systems Manager
// GetParameter and Secrets Manager GetSecretValue, speaking their JSON
// protocol (awsJson1_1: POST / with X-Amz-Target). No local server exists
// for either service, so this scripted server is the only way to run the
// resolver code through the real SDK clients (serialisation, error
// decoding). It answers only those two operations, checks only what the
// code under test must send (WithDecryption), and does not check
// signatures.
type scriptedAWS struct {
	URL string

	mu      sync.Mutex
	params  map[string]string // SSM parameter name -> value
	secrets map[string]string // secret id -> SecretString
	binary  map[string][]byte // secret id -> SecretBinary
	calls   map[string]int    // "Target name" -> count
}

func startScriptedAWS(t testing.TB) *scriptedAWS {
	t.Helper()
	s := &scriptedAWS{params: map[string]string{}, secrets: map[string]string{}, binary: map[string][]byte{}, calls: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	s.URL = "http://" + l.Addr().String()
	return s
}

func (s *scriptedAWS) setParam(name, v string)       { s.mu.Lock(); s.params[name] = v; s.mu.Unlock() }
func (s *scriptedAWS) setSecret(id, v string)        { s.mu.Lock(); s.secrets[id] = v; s.mu.Unlock() }
func (s *scriptedAWS) setBinary(id string, v []byte) { s.mu.Lock(); s.binary[id] = v; s.mu.Unlock() }

func (s *scriptedAWS) count(target, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[target+" "+name]
}

func (s *scriptedAWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name           string
		WithDecryption *bool
		SecretId       string
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		awsError(w, "SerializationException", "bad JSON")
		return
	}
	target := r.Header.Get("X-Amz-Target")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch target {
	case "AmazonSSM.GetParameter":
		s.calls[target+" "+in.Name]++
		if in.WithDecryption == nil || !*in.WithDecryption {
			awsError(w, "ValidationException", "test server: WithDecryption must be true")
			return
		}
		v, ok := s.params[in.Name]
		if !ok {
			awsError(w, "ParameterNotFound", "")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"Parameter": map[string]any{
			"Name": in.Name, "Type": "SecureString", "Value": v, "Version": 1,
		}})
	case "secretsmanager.GetSecretValue":
		s.calls[target+" "+in.SecretId]++
		out := map[string]any{"ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:" + in.SecretId, "Name": in.SecretId, "VersionId": "v1"}
		if v, ok := s.secrets[in.SecretId]; ok {
			out["SecretString"] = v
		} else if b, ok := s.binary[in.SecretId]; ok {
			out["SecretBinary"] = base64.StdEncoding.EncodeToString(b)
		} else {
			awsError(w, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
			return
		}
		json.NewEncoder(w).Encode(out)
	default:
		awsError(w, "UnknownOperationException", fmt.Sprintf("test server does not script %q", target))
	}
}

func awsError(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

var testCreds = credentials.NewStaticCredentialsProvider("AKIDTEST", "test-secret-key", "")

func (s *scriptedAWS) ssmClient() *ssm.Client {
	return ssm.New(ssm.Options{Region: "eu-west-1", BaseEndpoint: aws.String(s.URL), Credentials: testCreds, RetryMaxAttempts: 1})
}

func (s *scriptedAWS) secretsClient() *secretsmanager.Client {
	return secretsmanager.New(secretsmanager.Options{Region: "eu-west-1", BaseEndpoint: aws.String(s.URL), Credentials: testCreds, RetryMaxAttempts: 1})
}
