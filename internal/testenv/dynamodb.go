package testenv

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// DefaultDynamoDBLocalDir is where infra/install-deps.d/10-dynamodb-local.sh
// installs DynamoDB Local (DynamoDBLocal.jar and DynamoDBLocal_lib/).
// POPCONN_DYNAMODB_LOCAL_DIR overrides it.
const DefaultDynamoDBLocalDir = "/opt/dynamodb-local"

// dynamoRegion is the region clients sign for. DynamoDB Local runs with
// -sharedDb, so region and credentials only have to be well formed.
const dynamoRegion = "us-east-1"

// Dummy credentials. DynamoDB Local (since 1.23) refuses access keys with
// anything but letters and digits.
const (
	dynamoAccessKey = "popconntest"
	dynamoSecretKey = "popconntestsecret"
)

// DynamoDBLocal is a running DynamoDB Local (Amazon's Java emulator of
// DynamoDB), in memory, with one database shared by all clients (-sharedDb).
//
// Facts tests rely on:
//   - It starts empty and forgets everything when stopped (-inMemory).
//     Tables are not isolated per test: give each test its own table.
//   - Clients from Client sign with fixed dummy credentials for Region;
//     with -sharedDb any credentials and region see the same tables.
//   - Telemetry is off (-disableTelemetry and DDB_LOCAL_TELEMETRY=0): the
//     process sends nothing anywhere.
//   - Unlike the other servers of this package it listens on all
//     interfaces: its Jetty server takes a port and no address. Clients
//     only ever connect to 127.0.0.1.
//   - Starting it takes seconds (a JVM loading some 80 jars): 3 to 5 s on
//     a quiet 2-core machine, 8 to 25 s when other tests load it. Start
//     one per test function and run the cases as subtests against it, each
//     on its own table, rather than one per case. The JVM runs with C1
//     only and the serial GC, which halves the start on 2 cores.
type DynamoDBLocal struct {
	Endpoint string // http://127.0.0.1:port
	Region   string // region clients sign for
	Dir      string // working directory; dynamodb-local.log holds its output
	PID      int    // the java process
	// StartTime is how long the start took, from exec to the first
	// answered ListTables.
	StartTime time.Duration

	proc *proc
}

// StartDynamoDBLocal runs DynamoDB Local (`java -jar DynamoDBLocal.jar
// -inMemory -sharedDb -disableTelemetry -port P`) from
// POPCONN_DYNAMODB_LOCAL_DIR or DefaultDynamoDBLocalDir on a free port,
// waits until it answers a ListTables request on 127.0.0.1, and registers
// a t.Cleanup that stops it by PID (SIGTERM, then SIGKILL of its process
// group) and waits. When java or the jar is missing it skips the test, or
// fails it when Required().
func StartDynamoDBLocal(t T) *DynamoDBLocal {
	t.Helper()
	java := NeedBinary(t, "java")
	home := os.Getenv("POPCONN_DYNAMODB_LOCAL_DIR")
	if home == "" {
		home = DefaultDynamoDBLocalDir
	}
	jar := filepath.Join(home, "DynamoDBLocal.jar")
	lib := filepath.Join(home, "DynamoDBLocal_lib")
	if _, err := os.Stat(jar); err != nil {
		msg := fmt.Sprintf("DynamoDB Local not installed (%s: %v); install with infra/install-deps.sh (as root) or set POPCONN_DYNAMODB_LOCAL_DIR", jar, err)
		if Required() {
			t.Fatalf("%s; integration servers are required (CI=true or POPCONN_INTEGRATION=1)", msg)
		}
		t.Skip(msg)
		return nil
	}
	// env(1) sets the working directory and the telemetry switch, then
	// execs java in place, so the PID we hold is java's.
	envBin, err := exec.LookPath("env")
	if err != nil {
		t.Fatalf("testenv: env(1) not found: %v", err)
	}
	dir := serverDir(t, "dynamodb")
	logFile := filepath.Join(dir, "dynamodb-local.log")

	d := &DynamoDBLocal{Region: dynamoRegion, Dir: dir}
	var start time.Time
	p := startRetrying(t, "DynamoDB Local", 1, []string{logFile}, func(ports []int) (*proc, error) {
		port := strconv.Itoa(ports[0])
		args := []string{
			"-C", dir, "DDB_LOCAL_TELEMETRY=0", java,
			// C1 only and the serial GC: the emulator starts about twice
			// as fast on 2 cores and needs little heap for test tables.
			"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m",
			"-Djava.library.path=" + lib,
			"-jar", jar,
			"-inMemory", "-sharedDb", "-disableTelemetry",
			"-port", port,
		}
		start = time.Now()
		p, err := startProc("dynamodb-local", envBin, args, logFile, syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		d.Endpoint = "http://" + net.JoinHostPort("127.0.0.1", port)
		return p, waitDynamoDB(d.Endpoint, p, 90*time.Second)
	}, "Could not start server on port")
	d.StartTime = time.Since(start)
	d.proc, d.PID = p, p.pid()
	t.Cleanup(func() { d.Stop(t) })
	return d
}

// waitDynamoDB sends ListTables until it succeeds, the process exits or
// timeout passes. A plain HTTP request, not the SDK: the SDK's retries and
// signing would only slow the polling down.
func waitDynamoDB(endpoint string, p *proc, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			return errProcExited
		}
		lastErr = listTables(client, endpoint)
		if lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("testenv: %s did not answer within %v: %w", endpoint, timeout, lastErr)
}

func listTables(client *http.Client, endpoint string) error {
	req, err := http.NewRequest(http.MethodPost, endpoint+"/", bytes.NewReader([]byte("{}")))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.ListTables")
	// DynamoDB Local parses, but does not verify, the signature.
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+dynamoAccessKey+"/20240101/"+dynamoRegion+"/dynamodb/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("TableNames")) {
		return fmt.Errorf("ListTables answered %s: %q", resp.Status, body)
	}
	return nil
}

// Client returns a DynamoDB client for this instance: static dummy
// credentials, d.Region, d.Endpoint. optFns adjust the options after those
// are set (a test's HTTPClient, Retryer, RetryMaxAttempts, ...).
func (d *DynamoDBLocal) Client(t T, optFns ...func(*dynamodb.Options)) *dynamodb.Client {
	t.Helper()
	if d == nil || d.Endpoint == "" {
		t.Fatalf("testenv: Client of a DynamoDB Local that did not start")
	}
	opts := dynamodb.Options{
		Region:       d.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(dynamoAccessKey, dynamoSecretKey, ""),
		BaseEndpoint: aws.String(d.Endpoint),
	}
	return dynamodb.New(opts, optFns...)
}

// Stop stops DynamoDB Local now (SIGTERM, SIGKILL to its process group
// after 10 s) and waits for it to exit. It is idempotent and also runs from
// t.Cleanup.
func (d *DynamoDBLocal) Stop(t T) {
	t.Helper()
	if d.proc == nil {
		return
	}
	if err := d.proc.stop(10 * time.Second); err != nil {
		t.Errorf("%v%s", err, logTail(20, filepath.Join(d.Dir, "dynamodb-local.log")))
	}
}

// LogTail returns the last n lines of DynamoDB Local's output.
func (d *DynamoDBLocal) LogTail(n int) string {
	return logTail(n, filepath.Join(d.Dir, "dynamodb-local.log"))
}
