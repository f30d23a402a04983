package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func TestDynamoDBLocalRoundTripAndStop(t *testing.T) {
	t.Parallel()
	d := StartDynamoDBLocal(t)
	t.Logf("DynamoDB Local started in %v (pid %d, %s)", d.StartTime, d.PID, d.Endpoint)
	if !strings.HasPrefix(d.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("Endpoint = %q, want loopback", d.Endpoint)
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(d.PID) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "java" {
		t.Fatalf("PID %d is %q (%v), want the java process itself", d.PID, comm, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := d.Client(t)
	_, err = c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String("roundtrip"),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("k"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("k"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	item := map[string]types.AttributeValue{
		"k": &types.AttributeValueMemberS{Value: "key"},
		"v": &types.AttributeValueMemberS{Value: "value"},
	}
	if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("roundtrip"), Item: item}); err != nil {
		t.Fatalf("PutItem: %v", err)
	}
	// A second client with other options sees the same table (-sharedDb).
	other := d.Client(t, func(o *dynamodb.Options) { o.Region = "eu-central-1" })
	got, err := other.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String("roundtrip"),
		Key:            map[string]types.AttributeValue{"k": &types.AttributeValueMemberS{Value: "key"}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("GetItem: %v", err)
	}
	if v, ok := got.Item["v"].(*types.AttributeValueMemberS); !ok || v.Value != "value" {
		t.Fatalf("GetItem = %v, want v=value", got.Item)
	}

	pid := d.PID
	d.Stop(t)
	d.Stop(t) // idempotent
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("DynamoDB Local pid %d still exists after Stop: %v", pid, err)
	}
	if groupHasLive(pid) {
		t.Fatalf("process group %d still has live members after Stop", pid)
	}
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(d.Endpoint, "http://"), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", d.Endpoint)
	}
}

// recordingT is a T whose Skip and Fatal end the calling goroutine like
// testing.T's do, and record what was said.
type recordingT struct {
	mu       sync.Mutex
	skipped  string
	fatal    string
	cleanups []func()
}

func (r *recordingT) Helper()                           {}
func (r *recordingT) Cleanup(f func())                  { r.cleanups = append(r.cleanups, f) }
func (r *recordingT) Errorf(format string, args ...any) { r.Fatalf(format, args...) }
func (r *recordingT) Fatal(args ...any)                 { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *recordingT) Logf(string, ...any)               {}
func (r *recordingT) TempDir() string                   { return os.TempDir() }
func (r *recordingT) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *recordingT) Skip(args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprint(args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls fn on its own goroutine, as Skip and Fatal end it.
func (r *recordingT) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestDynamoDBLocalMissingJar(t *testing.T) {
	if _, err := exec.LookPath("java"); err != nil {
		t.Skip("java not installed: StartDynamoDBLocal stops at that first")
	}
	empty := t.TempDir()
	for _, tc := range []struct {
		name, ci, integration string
		wantFail              bool
	}{
		{"optional", "", "", false},
		{"CI", "true", "", true},
		{"POPCONN_INTEGRATION", "", "1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POPCONN_DYNAMODB_LOCAL_DIR", empty)
			t.Setenv("CI", tc.ci)
			t.Setenv("POPCONN_INTEGRATION", tc.integration)
			rt := &recordingT{}
			rt.run(func() { StartDynamoDBLocal(rt) })
			msg := rt.skipped
			if tc.wantFail {
				msg = rt.fatal
			}
			if msg == "" || (rt.skipped != "" && rt.fatal != "") {
				t.Fatalf("skipped %q, failed %q; want only a %s", rt.skipped, rt.fatal, map[bool]string{false: "skip", true: "failure"}[tc.wantFail])
			}
			if !strings.Contains(msg, "DynamoDB Local not installed") || !strings.Contains(msg, empty) {
				t.Fatalf("message %q does not say what is missing where", msg)
			}
		})
	}
}
