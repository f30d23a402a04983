package boltledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/ledgertest"
)

func openAt(t testing.TB, path string, opts Options) *Ledger {
	t.Helper()
	l, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func tempPath(t testing.TB) string { return filepath.Join(t.TempDir(), "ledger.db") }

func TestContract(t *testing.T) {
	// The suite's records were deleted in 2024, by the real clock long
	// past any retention: retire_test.go tests retirement.
	ledgertest.Run(t, func(t *testing.T) ledger.Ledger { return openAt(t, tempPath(t), Options{RecordRetention: -1}) })
}

func record(mailbox, uidl string) *ledger.Record {
	return &ledger.Record{Mailbox: mailbox, UIDL: uidl, FirstSeen: time.Date(2024, 5, 17, 0, 0, 0, 0, time.UTC), Size: 100}
}

func TestConflictErrorNamesRecord(t *testing.T) {
	l := openAt(t, tempPath(t), Options{})
	ctx := context.Background()
	if err := l.Put(ctx, record("user@example.com", "UID-42")); err != nil {
		t.Fatal(err)
	}
	err := l.Put(ctx, record("user@example.com", "UID-42"))
	if !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("double create = %v, want ErrConflict", err)
	}
	for _, want := range []string{"user@example.com", `"UID-42"`, "stored version 1", "read version 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("conflict error %q does not mention %s", err, want)
		}
	}
}

func TestPutRejectsInvalidRecords(t *testing.T) {
	l := openAt(t, tempPath(t), Options{})
	neg := record("m", "u")
	neg.Version = -1
	for name, recs := range map[string][]*ledger.Record{
		"nil":              {nil},
		"empty mailbox":    {record("", "u")},
		"empty UIDL":       {record("m", "")},
		"negative version": {neg},
		"oversized UIDL":   {record("m", strings.Repeat("x", bolt.MaxKeySize+1))},
		"good then bad":    {record("m", "good"), record("m", "")},
	} {
		if err := l.Put(context.Background(), recs...); err == nil {
			t.Errorf("%s: Put succeeded", name)
		}
	}
	list, err := l.List(context.Background(), "m")
	if err != nil || len(list) != 0 {
		t.Fatalf("List after rejected Puts = %d records, %v; want none", len(list), err)
	}
}

// Everything Put returned nil for is there after Close and Open.
func TestReopenKeepsData(t *testing.T) {
	path := tempPath(t)
	ctx := context.Background()
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*ledger.Record
	for i := range 50 {
		r := record("user@example.com", fmt.Sprint("uidl-", i))
		recs = append(recs, r)
	}
	if err := l.Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	recs[7].Attempts = 3
	if err := l.Put(ctx, recs[7]); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lease(ctx, "user@example.com", "poller-a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l2 := openAt(t, path, Options{})
	list, err := l2.List(ctx, "user@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 50 {
		t.Fatalf("after reopen: %d records, want 50", len(list))
	}
	got, err := l2.Get(ctx, "user@example.com", []string{"uidl-7"})
	if err != nil {
		t.Fatal(err)
	}
	if r := got["uidl-7"]; r.Version != 2 || r.Attempts != 3 {
		t.Fatalf("after reopen uidl-7 = v%d attempts %d, want v2 attempts 3", r.Version, r.Attempts)
	}
	// The file lock proves the first holder's process is gone (here: it
	// closed the file; after kill -9 the kernel drops the lock), so its
	// unexpired lease is stale and a restarted poller takes it at once.
	if _, err := l2.Lease(ctx, "user@example.com", "poller-b", time.Hour); err != nil {
		t.Fatalf("lease after reopen = %v, want the stale lease taken over", err)
	}
	// Within one open, leases exclude as before.
	if _, err := l2.Lease(ctx, "user@example.com", "poller-c", time.Hour); !errors.Is(err, ledger.ErrLeaseHeld) {
		t.Fatalf("second owner in the same open = %v, want ErrLeaseHeld", err)
	}
}

// A second Open of a file held open (here by another descriptor of this
// process; flock does not distinguish) times out with a clear error.
func TestSecondOpenTimesOut(t *testing.T) {
	path := tempPath(t)
	first, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(path, Options{Timeout: 200 * time.Millisecond})
	waited := time.Since(start)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "another popconn") || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not say another popconn process holds %s", err, path)
	}
	if waited < 100*time.Millisecond {
		t.Fatalf("second Open gave up after %s, before its timeout", waited)
	}
	if _, err := Open(path, Options{Timeout: -1}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open with negative timeout = %v, want ErrLocked", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The lock goes with Close.
	openAt(t, path, Options{Timeout: time.Second})
}

func TestOpenMissingDirectory(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing", "ledger.db"), Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open in a missing directory = %v, want ErrNotExist", err)
	}
}

// fakeClock is a settable lease clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLeaseWithFakeClock(t *testing.T) {
	clock := &fakeClock{now: time.Date(2024, 5, 17, 12, 0, 0, 0, time.UTC)}
	l := openAt(t, tempPath(t), Options{Now: clock.Now})
	ctx := context.Background()
	const mbox = "user@example.com"
	tryLease := func(owner string) (ledger.Lease, error) { return l.Lease(ctx, mbox, owner, time.Minute) }

	a, err := tryLease("a")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		advance time.Duration
		do      func() error
		held    bool // want ErrLeaseHeld
	}{
		{"b while a holds", 0, func() error { _, err := tryLease("b"); return err }, true},
		{"b just before expiry", 59*time.Second + 999*time.Millisecond, func() error { _, err := tryLease("b"); return err }, true},
		{"a renews at the last moment", 0, func() error { return a.Renew(ctx) }, false},
		{"b after a's first expiry", time.Second, func() error { _, err := tryLease("b"); return err }, true},
		{"b at the renewed expiry exactly", 59 * time.Second, func() error { _, err := tryLease("b"); return err }, false},
		{"a renews a lease b took", time.Second, func() error { return a.Renew(ctx) }, true},
		{"a releases a lost lease", 0, func() error { return a.Release(ctx) }, false},
		{"c while b holds after a's release", 0, func() error { _, err := tryLease("c"); return err }, true},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		err := s.do()
		if s.held && !errors.Is(err, ledger.ErrLeaseHeld) {
			t.Fatalf("%s: %v, want ErrLeaseHeld", s.name, err)
		}
		if !s.held && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	// The lease error says who holds it and until when.
	_, err = tryLease("c")
	if !strings.Contains(err.Error(), `"b"`) || !strings.Contains(err.Error(), "2024-05-17T12:02:59Z") {
		t.Fatalf("lease error %q does not name the holder and expiry", err)
	}
}

func TestLeaseExpiredButNotTakenRenews(t *testing.T) {
	clock := &fakeClock{now: time.Date(2024, 5, 17, 12, 0, 0, 0, time.UTC)}
	l := openAt(t, tempPath(t), Options{Now: clock.Now})
	ctx := context.Background()
	a, err := l.Lease(ctx, "m", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if err := a.Renew(ctx); err != nil {
		t.Fatalf("Renew of an expired lease nobody took = %v", err)
	}
	if _, err := l.Lease(ctx, "m", "b", time.Minute); !errors.Is(err, ledger.ErrLeaseHeld) {
		t.Fatalf("Lease after renew = %v, want ErrLeaseHeld", err)
	}
}

func TestCorruptFile(t *testing.T) {
	// A ledger with data, to damage in several ways.
	good := tempPath(t)
	l, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*ledger.Record
	for i := range 200 {
		recs = append(recs, record("user@example.com", fmt.Sprint("uidl-", i)))
	}
	if err := l.Put(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	l.Close()
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	cases := map[string][]byte{
		"garbage":   garbage(64 << 10),
		"truncated": goodBytes[:100],
		"text":      []byte("this is not a bbolt file\n"),
		// Meta pages intact, every data page overwritten: Open may succeed,
		// reading must fail cleanly.
		"damaged data pages": append(append([]byte(nil), goodBytes[:2*pageSize]...), garbage(len(goodBytes)-2*pageSize)...),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := tempPath(t)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := Open(path, Options{Timeout: time.Second})
			if err != nil {
				t.Logf("Open: %v", err)
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open of a corrupt file = %v, want ErrCorrupt", err)
				}
				return
			}
			defer l.Close()
			_, gerr := l.Get(context.Background(), "user@example.com", []string{"uidl-1"})
			_, lerr := l.List(context.Background(), "user@example.com")
			perr := l.Put(context.Background(), record("user@example.com", "new"))
			t.Logf("Get: %v; List: %v; Put: %v", gerr, lerr, perr)
			if gerr == nil && lerr == nil && perr == nil {
				t.Fatalf("every operation on a damaged file succeeded")
			}
		})
	}
}

// A damaged page inside one mailbox's records: Open works, reading that
// mailbox fails with ErrCorrupt instead of crashing, and the rest of the
// ledger stays usable.
func TestCorruptMailboxPage(t *testing.T) {
	path := tempPath(t)
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*ledger.Record
	for i := range 300 {
		recs = append(recs, record("damaged@example.com", fmt.Sprint("uidl-", i)))
	}
	if err := l.Put(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	if err := l.Put(context.Background(), record("intact@example.com", "1")); err != nil {
		t.Fatal(err)
	}
	var pgid uint64
	err = l.db.View(func(tx *bolt.Tx) error {
		pgid = uint64(tx.Bucket(bucketRecords).Bucket([]byte("damaged@example.com")).Root())
		return nil
	})
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	if pgid == 0 {
		t.Fatalf("mailbox bucket is inline; the test needs it on its own page")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, os.Getpagesize())
	for i := range junk {
		junk[i] = byte(i*7 + 13)
	}
	if _, err := f.WriteAt(junk, int64(pgid)*int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l = openAt(t, path, Options{})
	ctx := context.Background()
	_, gerr := l.Get(ctx, "damaged@example.com", []string{"uidl-1", "uidl-299"})
	_, lerr := l.List(ctx, "damaged@example.com")
	t.Logf("Get: %v; List: %v", gerr, lerr)
	if !errors.Is(gerr, ErrCorrupt) || !errors.Is(lerr, ErrCorrupt) {
		t.Fatalf("reading a damaged page: Get %v, List %v; want ErrCorrupt", gerr, lerr)
	}
	got, err := l.Get(ctx, "intact@example.com", []string{"1"})
	if err != nil || got["1"] == nil {
		t.Fatalf("intact mailbox after a corruption error: %v, %v", got, err)
	}
	if err := l.Put(ctx, record("intact@example.com", "2")); err != nil {
		t.Fatalf("Put to an intact mailbox after a corruption error: %v", err)
	}
}

func TestCorruptRecordValue(t *testing.T) {
	path := tempPath(t)
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketRecords).CreateBucket([]byte("m"))
		if err != nil {
			return err
		}
		return b.Put([]byte("bad"), []byte("{not json"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	l = openAt(t, path, Options{})
	ctx := context.Background()
	if _, err := l.Get(ctx, "m", []string{"bad"}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a damaged record = %v, want ErrCorrupt", err)
	}
	if _, err := l.List(ctx, "m"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("List with a damaged record = %v, want ErrCorrupt", err)
	}
	r := record("m", "bad")
	r.Version = 1
	if err := l.Put(ctx, r); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Put over a damaged record = %v, want ErrCorrupt", err)
	}
}

func TestSchemaMismatch(t *testing.T) {
	path := tempPath(t)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte("99"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), `schema "99"`) {
		t.Fatalf("Open of a newer schema = %v, want a schema error", err)
	}
}

// Many goroutines writing distinct records at once (the group-commit path)
// all succeed, and every write survives a reopen.
func TestConcurrentPutsDurable(t *testing.T) {
	path := tempPath(t)
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r := record(fmt.Sprint("box-", w%3), fmt.Sprintf("w%d-%d", w, i))
				if err := l.Put(context.Background(), r); err != nil {
					errs <- err
					return
				}
				if r.Version != 1 {
					errs <- fmt.Errorf("version %d after create", r.Version)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	l.Close()
	l = openAt(t, path, Options{})
	total := 0
	for b := range 3 {
		list, err := l.List(context.Background(), fmt.Sprint("box-", b))
		if err != nil {
			t.Fatal(err)
		}
		total += len(list)
	}
	if total != writers*each {
		t.Fatalf("after reopen %d records, want %d", total, writers*each)
	}
}

func BenchmarkPut(b *testing.B) {
	newRec := func(i int) *ledger.Record {
		r := record("user@example.com", fmt.Sprintf("uidl-%09d", i))
		r.ArchiveKey = "user@example.com/2024/05/17/0123456789abcdef01234567.eml"
		r.SHA256 = strings.Repeat("ab", 32)
		r.Recipients = []ledger.Recipient{{Address: "a@example.com", Status: ledger.Accepted, Code: 250, Reply: "2.0.0 Ok: queued as 1234"}}
		return r
	}
	// viaBoltBatch is the alternative not taken: bbolt's DB.Batch around the
	// same checks and writes, kept here to measure the choice.
	viaBoltBatch := func(l *Ledger, r *ledger.Record) error {
		next := *r
		next.Version++
		v, err := json.Marshal(&next)
		if err != nil {
			return err
		}
		ps := []pending{{rec: r, mailbox: []byte(r.Mailbox), uidl: []byte(r.UIDL), want: r.Version, value: v}}
		return l.db.Batch(func(tx *bolt.Tx) error {
			if err := check(tx.Bucket(bucketRecords), ps); err != nil {
				return err
			}
			return write(tx, ps)
		})
	}
	for _, bc := range []struct {
		name     string
		parallel bool
		put      func(l *Ledger, r *ledger.Record) error
	}{
		{"sequential", false, func(l *Ledger, r *ledger.Record) error { return l.Put(context.Background(), r) }},
		{"parallel4", true, func(l *Ledger, r *ledger.Record) error { return l.Put(context.Background(), r) }},
		{"sequential_bboltBatch", false, viaBoltBatch},
		{"parallel4_bboltBatch", true, viaBoltBatch},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := openAt(b, tempPath(b), Options{})
			var next atomic.Int64
			b.ReportAllocs()
			if !bc.parallel {
				for b.Loop() {
					if err := bc.put(l, newRec(int(next.Add(1)))); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				// RunParallel starts GOMAXPROCS×parallelism goroutines: 4 on this 2-core machine.
				b.SetParallelism(max(1, 4/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := bc.put(l, newRec(int(next.Add(1)))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			if c := l.commits.Load(); c > 0 {
				b.ReportMetric(float64(next.Load())/float64(c), "puts/commit")
			}
		})
	}
}
