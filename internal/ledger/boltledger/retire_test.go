package boltledger

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/ledgertest"
)

// testClock is a settable clock for a Ledger.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

var retireNow = time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)

func deletedRecord(uidl string, at time.Time) *ledger.Record {
	r := record("user@example.com", uidl)
	r.DeletedAt = at
	return r
}

// uidlsOf lists the UIDLs mailbox holds, and checks that Get agrees.
func uidlsOf(t *testing.T, l *Ledger, mailbox string) map[string]bool {
	t.Helper()
	list, err := l.List(context.Background(), mailbox)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	var uidls []string
	for _, r := range list {
		have[r.UIDL] = true
		uidls = append(uidls, r.UIDL)
	}
	got, err := l.Get(context.Background(), mailbox, uidls)
	if err != nil || len(got) != len(uidls) {
		t.Fatalf("Get of the listed records = %d, %v; want %d", len(got), err, len(uidls))
	}
	return have
}

func TestRetirement(t *testing.T) {
	const retention = time.Hour
	for _, c := range []struct {
		name      string
		retention time.Duration // Options.RecordRetention
		rec       *ledger.Record
		stays     bool
	}{
		{"deleted longer ago than the retention", retention, deletedRecord("old", retireNow.Add(-2*time.Hour)), false},
		{"deleted exactly the retention ago", retention, deletedRecord("edge", retireNow.Add(-retention)), false},
		{"deleted a nanosecond less long ago", retention, deletedRecord("young-edge", retireNow.Add(-retention+time.Nanosecond)), true},
		{"deleted recently", retention, deletedRecord("young", retireNow.Add(-30*time.Minute)), true},
		{"deleted in another zone", retention, deletedRecord("zone", retireNow.Add(-2*time.Hour).In(time.FixedZone("CEST", 2*3600))), false},
		{"never deleted, however old", retention, record("user@example.com", "undeleted"), true},
		{"default retention, 8 days ago", 0, deletedRecord("8d", retireNow.Add(-8*24*time.Hour)), false},
		{"default retention, 6 days ago", 0, deletedRecord("6d", retireNow.Add(-6*24*time.Hour)), true},
		{"kept for ever", -1, deletedRecord("forever", retireNow.Add(-1000*24*time.Hour)), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := &testClock{now: retireNow}
			l := openAt(t, tempPath(t), Options{Now: clock.Now, RecordRetention: c.retention})
			ctx := context.Background()
			if err := l.Put(ctx, c.rec); err != nil {
				t.Fatal(err)
			}
			// The Put that wrote it never removes it: it is there to read.
			if !uidlsOf(t, l, c.rec.Mailbox)[c.rec.UIDL] {
				t.Fatalf("record gone right after its Put")
			}
			if err := l.Put(ctx, record("other@example.com", "later-write")); err != nil {
				t.Fatal(err)
			}
			if got := uidlsOf(t, l, c.rec.Mailbox)[c.rec.UIDL]; got != c.stays {
				t.Fatalf("after a later write: record kept = %v, want %v", got, c.stays)
			}
			if !c.stays {
				// Gone means gone: it can be created afresh.
				if err := l.Put(ctx, record(c.rec.Mailbox, c.rec.UIDL)); err != nil {
					t.Fatalf("creating the retired record's UIDL again: %v", err)
				}
			}
		})
	}
}

// The index follows the record: a deletion undone (a new record for the
// UIDL) or moved to a later time does not retire the record at its old
// time, even when the index still has the old key, as after a write by a
// build from before the index.
func TestRetirementFollowsRecord(t *testing.T) {
	clock := &testClock{now: retireNow}
	path := tempPath(t)
	l := openAt(t, path, Options{Now: clock.Now, RecordRetention: time.Hour})
	ctx := context.Background()
	old := retireNow.Add(-2 * time.Hour)
	undone, moved, bypassed := deletedRecord("undone", old), deletedRecord("moved", old), deletedRecord("bypassed", old)
	if err := l.Put(ctx, undone, moved, bypassed); err != nil {
		t.Fatal(err)
	}
	undone.DeletedAt = time.Time{}
	moved.DeletedAt = retireNow.Add(-time.Minute)
	if err := l.Put(ctx, undone, moved); err != nil {
		t.Fatal(err)
	}
	// An older build's write keeps the old key: clear the deletion behind
	// the index's back.
	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Bucket([]byte("user@example.com"))
		r := *bypassed
		r.DeletedAt, r.Version = time.Time{}, 2
		v, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		return b.Put([]byte("bypassed"), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Put(ctx, record("other@example.com", "later-write")); err != nil {
		t.Fatal(err)
	}
	have := uidlsOf(t, l, "user@example.com")
	for _, u := range []string{"undone", "moved", "bypassed"} {
		if !have[u] {
			t.Errorf("record %s retired by a stale index key", u)
		}
	}
	// The moved deletion still retires, at its own time.
	clock.Set(retireNow.Add(time.Hour))
	if err := l.Put(ctx, record("other@example.com", "another-write")); err != nil {
		t.Fatal(err)
	}
	have = uidlsOf(t, l, "user@example.com")
	if have["moved"] || !have["undone"] || !have["bypassed"] {
		t.Errorf("an hour later: kept %v, want undone and bypassed only", have)
	}
}

// Each write transaction retires a bounded number of records, oldest
// first, so a backlog never makes one commit slow, and later writes work
// it off. The index lasts across a reopen.
func TestRetirementBounded(t *testing.T) {
	clock := &testClock{now: retireNow}
	path := tempPath(t)
	l := openAt(t, path, Options{Now: clock.Now, RecordRetention: -1})
	ctx := context.Background()
	const n = 3*pruneBatch + 10
	var recs []*ledger.Record
	for i := range n {
		recs = append(recs, deletedRecord(fmt.Sprintf("d%04d", i), retireNow.Add(-48*time.Hour+time.Duration(i)*time.Second)))
	}
	for i := 0; i < n; i += 50 {
		if err := l.Put(ctx, recs[i:min(i+50, n)]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openAt(t, path, Options{Now: clock.Now, RecordRetention: time.Hour})
	for write, want := range []int{n - pruneBatch, n - 2*pruneBatch, n - 3*pruneBatch, 0} {
		if err := l.Put(ctx, record("other@example.com", fmt.Sprintf("w%d", write))); err != nil {
			t.Fatal(err)
		}
		have := uidlsOf(t, l, "user@example.com")
		if len(have) != want {
			t.Fatalf("after write %d: %d records kept, want %d", write+1, len(have), want)
		}
		// Oldest first: the kept ones are the youngest.
		for i := n - want; i < n; i++ {
			if !have[recs[i].UIDL] {
				t.Fatalf("after write %d: %s retired before older ones", write+1, recs[i].UIDL)
			}
		}
	}
}

// A file written by eabc1cd, without the retirement index, gets its
// deletions indexed on Open: its deleted record retires once past the
// default retention, and the others stay.
func TestRetirementOfEabc1cdFile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", fixtureFile))
	if err != nil {
		t.Fatal(err)
	}
	path := tempPath(t)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: ledgertest.FixtureNow.Add(ledger.DefaultRecordRetention + time.Hour)}
	l := openAt(t, path, Options{Now: clock.Now})
	ctx := context.Background()
	if err := l.Put(ctx, record("other@example.com", "later-write")); err != nil {
		t.Fatal(err)
	}
	if have := uidlsOf(t, l, ledgertest.FixtureLeaseMailbox); have["g-77"] || !have["g-78"] {
		t.Errorf("%s keeps %v, want g-78 only (g-77 was deleted 7 days and an hour ago)", ledgertest.FixtureLeaseMailbox, have)
	}
	if have := uidlsOf(t, l, "user@example.com"); len(have) != 6 {
		t.Errorf("user@example.com keeps %d records, want its 6 undeleted ones", len(have))
	}
}
