package s3archive_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/archive/archivetest"
	"github.com/popconnector/popconnector/internal/archive/s3archive"
	"github.com/popconnector/popconnector/internal/testenv"
)

const mib = 1 << 20

// recorder is an http.RoundTripper in front of the real transport: it
// records the S3 operation of every request (with its headers) and lets a
// test replace chosen requests by an injected answer or failure.
type recorder struct {
	base http.RoundTripper
	// fault, when set, sees every request before it is sent; a non-nil
	// response or error is returned instead of sending it.
	fault func(r *http.Request, op string, nth int) (*http.Response, error)

	mu   sync.Mutex
	reqs []recorded
	seen map[string]int
}

type recorded struct {
	Op     string
	Header http.Header
}

func newRecorder(gw *testenv.VersityGW) *recorder {
	return &recorder{base: gw.Transport(), seen: map[string]int{}}
}

// opOf names the S3 operation of a path-style request.
func opOf(r *http.Request) string {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodPut:
		switch {
		case q.Has("partNumber"):
			return "UploadPart"
		case r.Header.Get("X-Amz-Copy-Source") != "":
			return "CopyObject"
		default:
			return "PutObject"
		}
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			return "CreateMultipartUpload"
		case q.Has("uploadId"):
			return "CompleteMultipartUpload"
		}
	case http.MethodDelete:
		if q.Has("uploadId") {
			return "AbortMultipartUpload"
		}
		return "DeleteObject"
	case http.MethodGet:
		if q.Has("uploads") {
			return "ListMultipartUploads"
		}
		return "GetObject"
	case http.MethodHead:
		return "HeadObject"
	}
	return r.Method + " " + r.URL.RawQuery
}

func (rec *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	op := opOf(r)
	rec.mu.Lock()
	rec.seen[op]++
	nth := rec.seen[op]
	rec.reqs = append(rec.reqs, recorded{Op: op, Header: r.Header.Clone()})
	rec.mu.Unlock()
	if rec.fault != nil {
		if resp, err := rec.fault(r, op, nth); resp != nil || err != nil {
			if r.Body != nil {
				r.Body.Close()
			}
			return resp, err
		}
	}
	return rec.base.RoundTrip(r)
}

// counts returns how many requests of each operation were sent.
func (rec *recorder) counts() map[string]int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	c := map[string]int{}
	for _, r := range rec.reqs {
		c[r.Op]++
	}
	return c
}

func (rec *recorder) requests() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.reqs...)
}

func (rec *recorder) reset() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = nil
	rec.seen = map[string]int{}
}

// client returns an S3 client whose requests go through rec, retrying
// once after at most 50 ms so injected faults fail fast.
func client(t *testing.T, gw *testenv.VersityGW, rec *recorder) *s3.Client {
	return gw.Client(t, func(o *s3.Options) {
		o.HTTPClient = &http.Client{Transport: rec}
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 2
			so.MaxBackoff = 50 * time.Millisecond
		})
	})
}

var prefixSeq atomic.Int64

// newPrefix gives each test its own, empty corner of the bucket.
func newPrefix(name string) string {
	return fmt.Sprintf("%s-%d", name, prefixSeq.Add(1))
}

// key is a realistic archive key.
func key(uidl string) string {
	return archive.KeyFor("user@example.com", uidl, time.Date(2024, 5, 17, 12, 0, 0, 0, time.UTC))
}

// wantNoObject asserts that key holds no object, seen through the archive,
// through HeadObject, and on the gateway's disk, and that no multipart
// upload is left in the bucket.
func wantNoObject(t *testing.T, gw *testenv.VersityGW, a *s3archive.Archive, k string) {
	t.Helper()
	rc, err := a.Open(context.Background(), k)
	if err == nil {
		rc.Close()
		t.Fatalf("Open(%q) found an object, want none", k)
	}
	if !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Open(%q) = %v, want archive.ErrNotFound", k, err)
	}
	c := gw.Client(t)
	_, err = c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(a.ObjectKey(k))})
	var nf *types.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("HeadObject(%q) = %v, want NotFound", a.ObjectKey(k), err)
	}
	for _, f := range gw.ObjectFiles(t) {
		if f == a.ObjectKey(k) {
			t.Fatalf("object file %s exists on the gateway's disk", f)
		}
	}
	wantNoUploads(t, gw)
}

// wantNoUploads asserts that no multipart upload is in progress in the bucket.
func wantNoUploads(t *testing.T, gw *testenv.VersityGW) {
	t.Helper()
	out, err := gw.Client(t).ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	if len(out.Uploads) != 0 {
		var ids []string
		for _, u := range out.Uploads {
			ids = append(ids, aws.ToString(u.Key)+" "+aws.ToString(u.UploadId))
		}
		t.Fatalf("%d multipart uploads left behind: %v", len(out.Uploads), ids)
	}
}

// head returns the object's HeadObject answer, with checksums.
func head(t *testing.T, gw *testenv.VersityGW, objKey string) *s3.HeadObjectOutput {
	t.Helper()
	out, err := gw.Client(t).HeadObject(context.Background(), &s3.HeadObjectInput{
		Bucket: aws.String(gw.Bucket), Key: aws.String(objKey), ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		t.Fatalf("HeadObject(%s): %v", objKey, err)
	}
	return out
}

func TestContract(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	c := gw.Client(t)
	for _, tc := range []struct {
		name string
		opts s3archive.Options
	}{
		// 8 MiB threshold: every message of the suite is one PutObject.
		{"Defaults", s3archive.Options{}},
		// 5 MiB parts: the suite's 6 MiB+3 message goes multipart.
		{"SmallParts", s3archive.Options{PartSize: s3archive.MinPartSize}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archivetest.Run(t, func(t *testing.T) archive.Archive {
				o := tc.opts
				o.Bucket, o.Prefix = gw.Bucket, newPrefix("contract")
				return s3archive.New(c, o)
			})
			wantNoUploads(t, gw)
		})
	}
}

func TestMetadata(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	ctx := context.Background()
	hostileID := "<a\r\nX-Injected: 1@b>\u00fc" + strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name   string
		opts   s3archive.Options
		size   int64
		meta   archive.Meta
		wantID string // decoded message-id metadata must start with this
	}{
		{"Single", s3archive.Options{}, 100 << 10, archive.Meta{Mailbox: "user@example.com", UIDL: "UID-1", MessageID: "<m1@example.com>"}, "<m1@example.com>"},
		{"Multipart", s3archive.Options{PartSize: s3archive.MinPartSize}, 11 * mib, archive.Meta{Mailbox: "user@example.com", UIDL: "UID-2", MessageID: "<m2@example.com>"}, "<m2@example.com>"},
		{"HostileMessageID", s3archive.Options{}, 10, archive.Meta{Mailbox: "j\u00fcrgen@example.com", UIDL: "UID 3%", MessageID: hostileID}, "<a\r\nX-Injected: 1@b>\u00fc"},
		{"NoMeta", s3archive.Options{}, 10, archive.Meta{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Bucket, o.Prefix = gw.Bucket, newPrefix("meta")
			a := s3archive.New(gw.Client(t), o)
			k := key(tc.name)
			info, err := a.Put(ctx, k, tc.meta, archivetest.Stream(7, tc.size))
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			out := head(t, gw, a.ObjectKey(k))
			md := out.Metadata
			t.Logf("metadata: %v", md)
			if md[s3archive.MetaSHA256] != info.SHA256 {
				t.Errorf("sha256 metadata = %q, want %q", md[s3archive.MetaSHA256], info.SHA256)
			}
			checks := map[string]string{s3archive.MetaMailbox: tc.meta.Mailbox, s3archive.MetaUIDL: tc.meta.UIDL}
			for name, want := range checks {
				v, ok := md[name]
				if want == "" {
					if ok {
						t.Errorf("metadata %s = %q, want none", name, v)
					}
					continue
				}
				if got := s3archive.DecodeMetaValue(v); got != want {
					t.Errorf("metadata %s = %q (decoded %q), want %q", name, v, got, want)
				}
			}
			if id, ok := md[s3archive.MetaMessageID]; tc.wantID == "" && ok {
				t.Errorf("message-id metadata %q, want none", id)
			} else if tc.wantID != "" {
				if len(id) > 1024 {
					t.Errorf("message-id metadata is %d bytes, want at most 1024", len(id))
				}
				if got := s3archive.DecodeMetaValue(id); !strings.HasPrefix(got, tc.wantID) {
					t.Errorf("message-id metadata decodes to %q, want it to start with %q", got, tc.wantID)
				}
			}
			for name := range md {
				if !map[string]bool{"mailbox": true, "uidl": true, "message-id": true, "sha256": true}[name] {
					t.Errorf("unexpected metadata %q (header injection?)", name)
				}
			}
			if got := aws.ToString(out.ContentType); got != "message/rfc822" {
				t.Errorf("Content-Type = %q, want message/rfc822", got)
			}
			if aws.ToInt64(out.ContentLength) != info.Size {
				t.Errorf("Content-Length = %d, want %d", aws.ToInt64(out.ContentLength), info.Size)
			}
			// A single PUT carried the digest as x-amz-checksum-sha256 (S3
			// verified the body against it) and the store keeps it. A
			// multipart object has composite part checksums instead.
			cs := aws.ToString(out.ChecksumSHA256)
			raw, _ := base64.StdEncoding.DecodeString(cs)
			switch {
			case tc.size < s3archive.DefaultPartSize && hex.EncodeToString(raw) != info.SHA256:
				t.Errorf("object's x-amz-checksum-sha256 = %q, want the message's digest %s", cs, info.SHA256)
			case tc.size >= s3archive.DefaultPartSize:
				t.Logf("multipart object checksum type %q, CRC32 %q", out.ChecksumType, aws.ToString(out.ChecksumCRC32))
			}
		})
	}
}

func TestSSEHeaders(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		opts    s3archive.Options
		wantSSE string
		wantKey string
	}{
		{"DefaultAES256", s3archive.Options{}, "AES256", ""},
		{"KMS", s3archive.Options{SSE: "aws:kms", KMSKeyID: "alias/popconn-test"}, "aws:kms", "alias/popconn-test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(gw)
			o := tc.opts
			o.Bucket, o.Prefix, o.PartSize = gw.Bucket, newPrefix("sse"), s3archive.MinPartSize
			a := s3archive.New(client(t, gw, rec), o)
			if _, err := a.Put(ctx, key("small"), archive.Meta{}, archivetest.Stream(1, 1000)); err != nil {
				t.Fatalf("small Put: %v", err)
			}
			if _, err := a.Put(ctx, key("large"), archive.Meta{}, archivetest.Stream(2, 6*mib)); err != nil {
				t.Fatalf("large Put: %v", err)
			}
			// SSE is fixed when the object is created: PutObject,
			// CreateMultipartUpload, and the metadata copy (which creates
			// the object anew). Parts and Complete carry none.
			wantOn := map[string]bool{"PutObject": true, "CreateMultipartUpload": true, "CopyObject": true}
			seen := map[string]bool{}
			for _, r := range rec.requests() {
				sse := r.Header.Get("X-Amz-Server-Side-Encryption")
				kmsKey := r.Header.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id")
				if wantOn[r.Op] {
					seen[r.Op] = true
					if sse != tc.wantSSE || kmsKey != tc.wantKey {
						t.Errorf("%s sent SSE %q key %q, want %q key %q", r.Op, sse, kmsKey, tc.wantSSE, tc.wantKey)
					}
				}
			}
			for op := range wantOn {
				if !seen[op] {
					t.Errorf("no %s request seen; requests: %v", op, rec.counts())
				}
			}
			out := head(t, gw, a.ObjectKey(key("small")))
			t.Logf("versitygw answers HeadObject with x-amz-server-side-encryption %q (it ignores SSE requests)", out.ServerSideEncryption)
		})
	}
}

func TestRequestCounts(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	ctx := context.Background()
	rec := newRecorder(gw)
	a := s3archive.New(client(t, gw, rec), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("count")})
	for _, tc := range []struct {
		name string
		size int64
		want map[string]int
	}{
		{"Empty", 0, map[string]int{"PutObject": 1}},
		{"Small", 100 << 10, map[string]int{"PutObject": 1}},
		{"JustBelowThreshold", s3archive.DefaultPartSize - 1, map[string]int{"PutObject": 1}},
		// 8 MiB parts: 3 parts, then Complete and the metadata copy.
		{"Large", 20*mib + 5, map[string]int{"CreateMultipartUpload": 1, "UploadPart": 3, "CompleteMultipartUpload": 1, "CopyObject": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.reset()
			if _, err := a.Put(ctx, key(tc.name), archive.Meta{UIDL: tc.name}, archivetest.Stream(3, tc.size)); err != nil {
				t.Fatalf("Put: %v", err)
			}
			got := rec.counts()
			t.Logf("%d bytes: requests %v", tc.size, got)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("requests = %v, want %v", got, tc.want)
			}
			if tc.want["PutObject"] == 1 {
				r := rec.requests()[0]
				if r.Header.Get("X-Amz-Checksum-Sha256") == "" {
					t.Errorf("PutObject sent no x-amz-checksum-sha256 header (headers %v)", r.Header)
				}
			}
		})
	}
}

// heapInuse reads the heap bytes in use (runtime.MemStats.HeapInuse)
// without stopping the world.
func heapInuse(s []metrics.Sample) uint64 {
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64()
}

func newHeapSamples() []metrics.Sample {
	return []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
}

// peakHeapGrowth runs f while sampling the heap every 200µs and returns the
// largest growth of in-use heap over the level before f.
func peakHeapGrowth(f func()) uint64 {
	s := newHeapSamples()
	runtime.GC()
	base := heapInuse(s)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := newHeapSamples()
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			if v := heapInuse(s); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-done
	if v := heapInuse(s); v > peak.Load() {
		peak.Store(v)
	}
	if peak.Load() < base {
		return 0
	}
	return peak.Load() - base
}

// TestLargeMessageFlatMemory checks that a message several times the part
// buffers goes multipart and that the heap does not grow with it. Exact
// figures are in BenchmarkPut.
func TestLargeMessageFlatMemory(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	ctx := context.Background()
	rec := newRecorder(gw)
	opts := s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("mem"), PartSize: s3archive.MinPartSize, Concurrency: 2}
	a := s3archive.New(client(t, gw, rec), opts)
	const size = 96 * mib
	// (Concurrency+2) part buffers are live at most (package doc); allow
	// the same again for garbage not yet collected plus 8 MiB for the
	// SDK, TLS and the test's own allocations.
	bound := uint64(2*(opts.Concurrency+2))*uint64(opts.PartSize) + 8*mib
	var info archive.Info
	var err error
	growth := peakHeapGrowth(func() {
		info, err = a.Put(ctx, key("large"), archive.Meta{}, archivetest.Stream(9, size))
	})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	t.Logf("%d MiB message: peak heap growth %.1f MiB (bound %.1f MiB); requests %v", size/mib, float64(growth)/mib, float64(bound)/mib, rec.counts())
	if growth > bound {
		t.Errorf("peak heap growth %.1f MiB exceeds %.1f MiB: memory grows with the message", float64(growth)/mib, float64(bound)/mib)
	}
	if n := rec.counts()["UploadPart"]; n != size/s3archive.MinPartSize+1 {
		t.Errorf("%d UploadPart requests, want %d", n, size/s3archive.MinPartSize+1)
	}
	wantSize, wantSum := archivetest.Digest(t, archivetest.Stream(9, size))
	if info.Size != wantSize || info.SHA256 != wantSum {
		t.Fatalf("Put = %+v, want size %d sha256 %s", info, wantSize, wantSum)
	}
	rc, err := a.Open(ctx, key("large"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	if n, sum := archivetest.Digest(t, rc); n != wantSize || sum != wantSum {
		t.Fatalf("read back %d bytes %s, want %d bytes %s", n, sum, wantSize, wantSum)
	}
}

var errDropped = errors.New("test: POP3 connection dropped")

// failAfter yields the first n bytes of r, then fails with errDropped.
type failAfter struct {
	r io.Reader
	n int64
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errDropped
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// cancelAfter cancels its context once n bytes have passed.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestFailureMidMultipartAborts(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	for _, tc := range []struct {
		name    string
		prepare func() (context.Context, io.Reader)
		want    error
	}{
		{"ReaderError", func() (context.Context, io.Reader) {
			return context.Background(), &failAfter{r: archivetest.Stream(4, 30*mib), n: 12 * mib}
		}, errDropped},
		{"ContextCancelled", func() (context.Context, io.Reader) {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			return ctx, &cancelAfter{r: archivetest.Stream(5, 30*mib), n: 12 * mib, cancel: cancel}
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(gw)
			a := s3archive.New(client(t, gw, rec), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("abort"), PartSize: s3archive.MinPartSize})
			ctx, r := tc.prepare()
			_, err := a.Put(ctx, key(tc.name), archive.Meta{}, r)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Put = %v, want an error wrapping %v", err, tc.want)
			}
			got := rec.counts()
			t.Logf("error: %v; requests %v", err, got)
			if got["CreateMultipartUpload"] != 1 || got["UploadPart"] < 1 || got["AbortMultipartUpload"] != 1 || got["CompleteMultipartUpload"] != 0 {
				t.Fatalf("requests %v: want a multipart upload with parts, aborted, never completed", got)
			}
			wantNoObject(t, gw, a, key(tc.name))
		})
	}
}

func TestOpenMissing(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	a := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("missing")})
	for _, k := range []string{key("never"), "no/such/dir/x.eml"} {
		_, err := a.Open(context.Background(), k)
		if !errors.Is(err, archive.ErrNotFound) {
			t.Errorf("Open(%q) = %v, want archive.ErrNotFound", k, err)
		}
	}
	// A missing bucket is a configuration error, not a missing message.
	b := s3archive.New(gw.Client(t), s3archive.Options{Bucket: "no-such-bucket"})
	_, err := b.Open(context.Background(), key("x"))
	if err == nil || errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Open in a missing bucket = %v, want an error other than ErrNotFound", err)
	}
}

func TestOpenHonoursContext(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	a := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("openctx")})
	if _, err := a.Put(context.Background(), key("x"), archive.Meta{}, archivetest.Stream(6, 4*mib)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := a.Open(ctx, key("x"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 1000)); err != nil {
		t.Fatalf("first read: %v", err)
	}
	cancel()
	_, err = io.Copy(io.Discard, rc)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("reading after cancel = %v, want context.Canceled", err)
	}
}

// httpError is a canned S3 error answer.
func httpError(r *http.Request, status int, code string) *http.Response {
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test</Message><RequestId>test-req</RequestId></Error>`, code)
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/xml"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}
}

func TestInjectedHTTPFaults(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	reset := &url.Error{Op: "Put", URL: gw.Endpoint, Err: syscall.ECONNRESET}
	// hang blocks until the request's context ends, as a dead peer would.
	hang := func(r *http.Request) (*http.Response, error) {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	for _, tc := range []struct {
		name     string
		size     int64
		timeout  time.Duration // of the Put's context; 0 for none
		fault    func(r *http.Request, op string, nth int) (*http.Response, error)
		wantText []string // the error names these
		wantErr  error    // and wraps this, when set
	}{
		{"PutObject500", 100 << 10, 0, func(r *http.Request, op string, _ int) (*http.Response, error) {
			if op == "PutObject" {
				return httpError(r, 500, "InternalError"), nil
			}
			return nil, nil
		}, []string{"PutObject", "500", "InternalError"}, nil},
		{"PutObjectReset", 100 << 10, 0, func(r *http.Request, op string, _ int) (*http.Response, error) {
			if op == "PutObject" {
				return nil, reset
			}
			return nil, nil
		}, []string{"PutObject", "connection reset"}, syscall.ECONNRESET},
		{"PutObjectTimeout", 100 << 10, time.Second, func(r *http.Request, op string, _ int) (*http.Response, error) {
			if op == "PutObject" {
				return hang(r)
			}
			return nil, nil
		}, []string{"PutObject", "deadline"}, context.DeadlineExceeded},
		{"UploadPart503", 12 * mib, 0, func(r *http.Request, op string, nth int) (*http.Response, error) {
			if op == "UploadPart" && strings.Contains(r.URL.RawQuery, "partNumber=2") {
				return httpError(r, 503, "SlowDown"), nil
			}
			return nil, nil
		}, []string{"UploadPart", "503", "SlowDown"}, nil},
		{"UploadPartTimeout", 12 * mib, 2 * time.Second, func(r *http.Request, op string, _ int) (*http.Response, error) {
			if op == "UploadPart" && strings.Contains(r.URL.RawQuery, "partNumber=2") {
				return hang(r)
			}
			return nil, nil
		}, []string{"UploadPart", "deadline"}, context.DeadlineExceeded},
		{"Complete500", 12 * mib, 0, func(r *http.Request, op string, _ int) (*http.Response, error) {
			if op == "CompleteMultipartUpload" {
				return httpError(r, 500, "InternalError"), nil
			}
			return nil, nil
		}, []string{"CompleteMultipartUpload", "500"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(gw)
			rec.fault = tc.fault
			a := s3archive.New(client(t, gw, rec), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("fault"), PartSize: s3archive.MinPartSize, FailTimeout: 500 * time.Millisecond})
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			k := key(tc.name)
			_, err := a.Put(ctx, k, archive.Meta{Mailbox: "user@example.com"}, archivetest.Stream(8, tc.size))
			if err == nil {
				t.Fatalf("Put succeeded despite the injected fault; requests %v", rec.counts())
			}
			t.Logf("error: %v; requests %v", err, rec.counts())
			msg := err.Error()
			for _, s := range append([]string{"s3archive: put s3://" + gw.Bucket + "/" + a.ObjectKey(k)}, tc.wantText...) {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error does not wrap %v", tc.wantErr)
			}
			if strings.Contains(msg, gw.SecretKey) {
				t.Errorf("error holds the secret key")
			}
			wantNoObject(t, gw, a, k)
		})
	}
}

// TestCopyFailureLeavesWholeObject: a failure after CompleteMultipartUpload
// (the metadata copy) fails Put but leaves the complete, correct object.
func TestCopyFailureLeavesWholeObject(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	rec := newRecorder(gw)
	rec.fault = func(r *http.Request, op string, _ int) (*http.Response, error) {
		if op == "CopyObject" {
			return httpError(r, 500, "InternalError"), nil
		}
		return nil, nil
	}
	a := s3archive.New(client(t, gw, rec), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("copyfail"), PartSize: s3archive.MinPartSize})
	k := key("copy")
	_, err := a.Put(context.Background(), k, archive.Meta{}, archivetest.Stream(10, 7*mib))
	if err == nil || !strings.Contains(err.Error(), "sha256 metadata") {
		t.Fatalf("Put = %v, want a failed metadata copy", err)
	}
	rc, err := a.Open(context.Background(), k)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	wantN, wantSum := archivetest.Digest(t, archivetest.Stream(10, 7*mib))
	if n, sum := archivetest.Digest(t, rc); n != wantN || sum != wantSum {
		t.Fatalf("object is %d bytes %s, want the whole message %d bytes %s", n, sum, wantN, wantSum)
	}
	if md := head(t, gw, a.ObjectKey(k)).Metadata; md[s3archive.MetaSHA256] != "" {
		t.Fatalf("sha256 metadata %q present although the copy failed", md[s3archive.MetaSHA256])
	}
	wantNoUploads(t, gw)
}

// TestReplacedBeforeDigestCopy: when another Put replaces the key between
// CompleteMultipartUpload and the metadata copy, the copy's precondition
// fails and the newer object stands, with its own digest.
func TestReplacedBeforeDigestCopy(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	ctx := context.Background()
	opts := s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("race"), PartSize: s3archive.MinPartSize}
	other := s3archive.New(gw.Client(t), opts)
	k := key("race")
	var otherInfo archive.Info
	rec := newRecorder(gw)
	rec.fault = func(r *http.Request, op string, _ int) (*http.Response, error) {
		if op == "CopyObject" {
			var err error
			if otherInfo, err = other.Put(r.Context(), k, archive.Meta{UIDL: "other"}, archivetest.Stream(31, 1000)); err != nil {
				return nil, fmt.Errorf("test: concurrent Put: %w", err)
			}
		}
		return nil, nil
	}
	a := s3archive.New(client(t, gw, rec), opts)
	info, err := a.Put(ctx, k, archive.Meta{UIDL: "mine"}, archivetest.Stream(30, 6*mib))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if otherInfo.SHA256 == "" {
		t.Fatalf("the concurrent Put did not run; requests %v", rec.counts())
	}
	wantN, wantSum := archivetest.Digest(t, archivetest.Stream(30, 6*mib))
	if info.Size != wantN || info.SHA256 != wantSum {
		t.Fatalf("Put = %+v, want %d bytes %s", info, wantN, wantSum)
	}
	out := head(t, gw, a.ObjectKey(k))
	if out.Metadata[s3archive.MetaSHA256] != otherInfo.SHA256 || out.Metadata[s3archive.MetaUIDL] != "other" || aws.ToInt64(out.ContentLength) != otherInfo.Size {
		t.Fatalf("object is %d bytes with metadata %v, want the newer object (%d bytes, sha256 %s)", aws.ToInt64(out.ContentLength), out.Metadata, otherInfo.Size, otherInfo.SHA256)
	}
}

// TestConcurrentMultipartSameKey: whatever the interleaving, the object
// ends as one writer's whole message, and its sha256 metadata is that
// message's digest.
func TestConcurrentMultipartSameKey(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	a := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("concurrent"), PartSize: s3archive.MinPartSize})
	const writers = 3
	const size = 6 * mib
	k := key("same")
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = a.Put(context.Background(), k, archive.Meta{}, archivetest.Stream(uint64(40+i), size))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	rc, err := a.Open(context.Background(), k)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	n, sum := archivetest.Digest(t, rc)
	rc.Close()
	found := false
	for i := range writers {
		if _, s := archivetest.Digest(t, archivetest.Stream(uint64(40+i), size)); s == sum {
			found = true
		}
	}
	if n != size || !found {
		t.Fatalf("object is %d bytes %s: not one writer's whole message", n, sum)
	}
	if md := head(t, gw, a.ObjectKey(k)).Metadata; md[s3archive.MetaSHA256] != sum {
		t.Fatalf("sha256 metadata %q, but the object's bytes hash to %s", md[s3archive.MetaSHA256], sum)
	}
	wantNoUploads(t, gw)
}

// TestReplaceAcrossModes: a multipart object replaced by a single-PUT one
// (and back) keeps the newest bytes and the matching digest metadata.
func TestReplaceAcrossModes(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	a := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("replace"), PartSize: s3archive.MinPartSize})
	ctx := context.Background()
	k := key("r")
	for i, size := range []int64{6 * mib, 10, 11 * mib} {
		info, err := a.Put(ctx, k, archive.Meta{}, archivetest.Stream(uint64(20+i), size))
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
		if md := head(t, gw, a.ObjectKey(k)).Metadata; md[s3archive.MetaSHA256] != info.SHA256 {
			t.Fatalf("after Put %d sha256 metadata %q, want %q", i, md[s3archive.MetaSHA256], info.SHA256)
		}
		rc, err := a.Open(ctx, k)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		n, sum := archivetest.Digest(t, rc)
		rc.Close()
		if n != info.Size || sum != info.SHA256 {
			t.Fatalf("after Put %d read %d bytes %s, want %d %s", i, n, sum, info.Size, info.SHA256)
		}
	}
}

func TestInvalidUse(t *testing.T) {
	gw := testenv.StartVersityGW(t)
	ctx := context.Background()
	bad := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket, SSE: "rot13"})
	if bad.Err() == nil {
		t.Fatal("Err() = nil for SSE rot13")
	}
	if _, err := bad.Put(ctx, key("x"), archive.Meta{}, bytes.NewReader(nil)); err == nil || !strings.Contains(err.Error(), "rot13") {
		t.Errorf("Put with bad options = %v, want the options error", err)
	}
	if _, err := bad.Open(ctx, key("x")); err == nil || !strings.Contains(err.Error(), "rot13") {
		t.Errorf("Open with bad options = %v, want the options error", err)
	}
	a := s3archive.New(gw.Client(t), s3archive.Options{Bucket: gw.Bucket})
	for _, k := range []string{"", "/abs", "a//b", "a/../b", "a/./b", "a\x00b", `a\b`, strings.Repeat("k", 1025)} {
		if _, err := a.Put(ctx, k, archive.Meta{}, bytes.NewReader([]byte("x"))); err == nil {
			t.Errorf("Put(%q) succeeded, want an invalid-key error", k)
		}
	}
}

// BenchmarkPut reports, per message size, the peak heap growth during one
// Put and the requests it makes, with the default options (8 MiB parts,
// concurrency 2).
func BenchmarkPut(b *testing.B) {
	gw := testenv.StartVersityGW(b)
	for _, size := range []int64{100 << 10, 20 * mib, 150 * mib} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			rec := newRecorder(gw)
			c := gw.Client(b, func(o *s3.Options) { o.HTTPClient = &http.Client{Transport: rec} })
			a := s3archive.New(c, s3archive.Options{Bucket: gw.Bucket, Prefix: newPrefix("bench")})
			b.SetBytes(size)
			var peak uint64
			for i := 0; b.Loop(); i++ {
				g := peakHeapGrowth(func() {
					if _, err := a.Put(context.Background(), key(fmt.Sprint(i)), archive.Meta{}, archivetest.Stream(uint64(i), size)); err != nil {
						b.Fatalf("Put: %v", err)
					}
				})
				peak = max(peak, g)
			}
			b.ReportMetric(float64(peak)/mib, "peak-heap-MiB")
			b.ReportMetric(float64(len(rec.requests()))/float64(b.N), "requests/op")
		})
	}
}
