package testenv

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestVersityGW(t *testing.T) {
	gw := StartVersityGW(t)
	ctx := context.Background()
	if !strings.HasPrefix(gw.Endpoint, "https://127.0.0.1:") {
		t.Fatalf("Endpoint = %q, want https on 127.0.0.1", gw.Endpoint)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(gw.PID) + "/cmdline")
	if err != nil {
		t.Fatalf("read cmdline: %v", err)
	}
	if !bytes.Contains(cmdline, []byte("versitygw")) {
		t.Errorf("PID %d is not versitygw: %q", gw.PID, cmdline)
	}
	if bytes.Contains(cmdline, []byte(gw.SecretKey)) {
		t.Errorf("the secret key is on versitygw's command line")
	}

	// A round trip through the SDK with its defaults: over HTTPS that is an
	// unsigned aws-chunked body with a trailing CRC32 checksum.
	c := gw.Client(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 100000)
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String("dir/obj"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("PutObject: %v%s", err, gw.LogTail(10))
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String("dir/obj")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back %d bytes (err %v), want the %d bytes put", len(got), err, len(body))
	}
	if files := gw.ObjectFiles(t); len(files) != 1 || files[0] != "dir/obj" {
		t.Errorf("ObjectFiles = %v, want [dir/obj]", files)
	}

	// Wrong credentials are refused.
	bad := gw.Client(t, func(o *s3.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(gw.AccessKey, "wrong-secret", "")
	})
	if _, err := bad.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String("dir/obj")}); err == nil {
		t.Errorf("HeadObject with a wrong secret succeeded")
	}

	// The certificate verifies only against the test CA.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(gw.Endpoint + "/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET with the system roots succeeded; want a certificate error")
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("GET with the system roots = %v, want x509.UnknownAuthorityError", err)
	}

	gw.Stop(t)
	if !gw.proc.exited() {
		t.Fatalf("versitygw still running after Stop")
	}
	if c, err := net.DialTimeout("tcp", gw.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", gw.Addr)
	}
	if strings.Contains(gw.LogTail(1000), gw.SecretKey) {
		t.Errorf("the secret key appears in versitygw's log")
	}
	gw.Stop(t) // idempotent
}
