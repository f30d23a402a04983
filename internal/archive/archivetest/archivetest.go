// Package archivetest checks that an archive.Archive keeps the contract of
// package archive. Every implementation runs the same suite from its tests:
//
//	func TestContract(t *testing.T) {
//		archivetest.Run(t, func(t *testing.T) archive.Archive { ... })
//	}
//
// What it cannot check: durability across a power loss (fsync ordering) and
// memory use of a remote backend; implementations test those themselves.
package archivetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
)

// Run runs the contract suite. open returns a new, empty archive for each
// subtest; it should register its own cleanup with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) archive.Archive) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, open(t)) })
	t.Run("Replace", func(t *testing.T) { testReplace(t, open(t)) })
	t.Run("ReaderErrorLeavesNothing", func(t *testing.T) { testReaderError(t, open(t)) })
	t.Run("ReaderErrorKeepsPrevious", func(t *testing.T) { testReaderErrorKeepsPrevious(t, open(t)) })
	t.Run("CancelledBeforePut", func(t *testing.T) { testCancelledBefore(t, open(t)) })
	t.Run("CancelledMidStream", func(t *testing.T) { testCancelledMidStream(t, open(t)) })
	t.Run("ConcurrentSameKey", func(t *testing.T) { testConcurrentSameKey(t, open(t)) })
	t.Run("ConcurrentDistinctKeys", func(t *testing.T) { testConcurrentDistinctKeys(t, open(t)) })
}

// Stream returns a reader of n deterministic pseudo-random bytes from seed;
// it allocates nothing per Read, so memory checks measure the archive only.
func Stream(seed uint64, n int64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// Digest returns the size and hex SHA-256 of everything r yields.
func Digest(t testing.TB, r io.Reader) (int64, string) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return n, hex.EncodeToString(h.Sum(nil))
}

// key is a realistic key, as the pipeline names objects.
func key(uidl string) string {
	return archive.KeyFor("user@example.com", uidl, time.Date(2024, 5, 17, 23, 59, 0, 0, time.UTC))
}

// readAll opens key and returns its bytes.
func readAll(t *testing.T, a archive.Archive, key string) []byte {
	t.Helper()
	rc, err := a.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return b
}

// wantNotFound asserts key holds no object.
func wantNotFound(t *testing.T, a archive.Archive, key string) {
	t.Helper()
	rc, err := a.Open(context.Background(), key)
	if err == nil {
		rc.Close()
		t.Fatalf("Open(%q) found an object, want none", key)
	}
	if !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Open(%q) = %v, want an error wrapping archive.ErrNotFound", key, err)
	}
}

func testRoundTrip(t *testing.T, a archive.Archive) {
	ctx := context.Background()
	// 6 MiB+3 crosses the 5 MiB part size of multipart uploads.
	for i, size := range []int64{0, 1, 20 << 10, 1<<20 + 7, 6<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			k := key(fmt.Sprintf("uidl-%d", i))
			wantSize, wantSum := Digest(t, Stream(uint64(i), size))
			info, err := a.Put(ctx, k, archive.Meta{Mailbox: "user@example.com", UIDL: fmt.Sprint(i)}, Stream(uint64(i), size))
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if info.Key != k || info.Size != wantSize || info.SHA256 != wantSum {
				t.Fatalf("Put = %+v, want {Key:%s Size:%d SHA256:%s}", info, k, wantSize, wantSum)
			}
			rc, err := a.Open(ctx, k)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer rc.Close()
			gotSize, gotSum := Digest(t, rc)
			if gotSize != wantSize || gotSum != wantSum {
				t.Fatalf("read back %d bytes sha256 %s, want %d bytes sha256 %s", gotSize, gotSum, wantSize, wantSum)
			}
		})
	}
	// Bytes that text handling would alter (CR, LF, dot lines, NUL, 8-bit)
	// come back exactly.
	raw := []byte("From: a@example.com\r\n\r\n.\r\n..x\n\r\x00\xff\xfe\r\n")
	k := key("raw")
	if _, err := a.Put(ctx, k, archive.Meta{}, bytes.NewReader(raw)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if got := readAll(t, a, k); !bytes.Equal(got, raw) {
		t.Fatalf("read back %q, want %q", got, raw)
	}
}

func testNotFound(t *testing.T, a archive.Archive) {
	wantNotFound(t, a, key("never-put"))
}

func testReplace(t *testing.T, a archive.Archive) {
	ctx := context.Background()
	k := key("replace")
	if _, err := a.Put(ctx, k, archive.Meta{}, bytes.NewReader([]byte("first version, longer than the second"))); err != nil {
		t.Fatalf("first Put: %v", err)
	}
	info, err := a.Put(ctx, k, archive.Meta{}, bytes.NewReader([]byte("second")))
	if err != nil {
		t.Fatalf("second Put: %v", err)
	}
	if info.Size != 6 {
		t.Fatalf("second Put size = %d, want 6", info.Size)
	}
	if got := readAll(t, a, k); string(got) != "second" {
		t.Fatalf("read back %q, want %q", got, "second")
	}
}

// failingReader yields n bytes of data then fails with err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

var errInjected = errors.New("archivetest: connection dropped mid-message")

func testReaderError(t *testing.T, a archive.Archive) {
	k := key("reader-error")
	_, err := a.Put(context.Background(), k, archive.Meta{}, &failingReader{r: Stream(1, 300<<10), err: errInjected})
	if !errors.Is(err, errInjected) {
		t.Fatalf("Put = %v, want an error wrapping the reader's error", err)
	}
	wantNotFound(t, a, k)
}

func testReaderErrorKeepsPrevious(t *testing.T, a archive.Archive) {
	ctx := context.Background()
	k := key("reader-error-previous")
	if _, err := a.Put(ctx, k, archive.Meta{}, bytes.NewReader([]byte("complete"))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	_, err := a.Put(ctx, k, archive.Meta{}, &failingReader{r: Stream(2, 100<<10), err: errInjected})
	if !errors.Is(err, errInjected) {
		t.Fatalf("Put = %v, want an error wrapping the reader's error", err)
	}
	if got := readAll(t, a, k); string(got) != "complete" {
		t.Fatalf("after failed replace read %d bytes, want the previous object %q", len(got), "complete")
	}
}

func testCancelledBefore(t *testing.T, a archive.Archive) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k := key("cancelled-before")
	_, err := a.Put(ctx, k, archive.Meta{}, bytes.NewReader([]byte("x")))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled context = %v, want an error wrapping context.Canceled", err)
	}
	wantNotFound(t, a, k)
}

// cancellingReader cancels its context after passing on `after` bytes, as a
// shutdown signal arriving mid-download would.
type cancellingReader struct {
	r      io.Reader
	after  int64
	n      int64
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n >= c.after {
		c.cancel()
	}
	return n, err
}

func testCancelledMidStream(t *testing.T, a archive.Archive) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := key("cancelled-mid-stream")
	_, err := a.Put(ctx, k, archive.Meta{}, &cancellingReader{r: Stream(3, 2<<20), after: 256 << 10, cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put cancelled mid-stream = %v, want an error wrapping context.Canceled", err)
	}
	wantNotFound(t, a, k)
}

func testConcurrentSameKey(t *testing.T, a archive.Archive) {
	const writers = 4
	const size = 512 << 10
	k := key("concurrent-same")
	sums := make(map[string]bool)
	for i := range writers {
		_, s := Digest(t, Stream(uint64(100+i), size))
		sums[s] = true
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = a.Put(context.Background(), k, archive.Meta{}, Stream(uint64(100+i), size))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	// Atomic replacement: the object is one writer's bytes, whole.
	rc, err := a.Open(context.Background(), k)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	n, s := Digest(t, rc)
	if n != size || !sums[s] {
		t.Fatalf("object is %d bytes sha256 %s: not any one writer's whole message", n, s)
	}
}

func testConcurrentDistinctKeys(t *testing.T, a archive.Archive) {
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = a.Put(context.Background(), key(fmt.Sprint("distinct-", i)), archive.Meta{}, Stream(uint64(200+i), 64<<10))
		})
	}
	wg.Wait()
	for i := range writers {
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
		rc, err := a.Open(context.Background(), key(fmt.Sprint("distinct-", i)))
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		gotN, gotSum := Digest(t, rc)
		rc.Close()
		wantN, wantSum := Digest(t, Stream(uint64(200+i), 64<<10))
		if gotN != wantN || gotSum != wantSum {
			t.Fatalf("object %d: %d bytes %s, want %d bytes %s", i, gotN, gotSum, wantN, wantSum)
		}
	}
}
