// Package boltledger keeps the ledger in one local bbolt file; it
// implements ledger.Ledger for local mode.
//
// Layout (schema 1):
//
//	meta/schema          -> "1"
//	records/<mailbox>/<uidl> -> JSON of ledger.Record (one nested bucket per mailbox)
//	leases/<mailbox>     -> JSON {"owner":..., "expires":..., "session":...}
//	                        (a lease from an earlier open of the file is stale:
//	                        the file lock proves its process has exited)
//	dupes/<key>          -> JSON of a duplicate-index entry (ledger.Acceptance);
//	                        key = uvarint(len(id)) id recipient, after
//	                        ledger.DuplicateKey (the length prefix keeps any
//	                        Message-ID from running into a recipient)
//	dupes-expiry/<expires><key> -> empty; expires is 8 bytes big-endian Unix
//	                        nanoseconds, so the oldest entries come first
//	claims/<key>         -> JSON of a delivery claim (ledger.Claim); key =
//	                        uvarint(len(id)) id fingerprint, after
//	                        ledger.ClaimKey
//	claims-expiry/<expires><key> -> empty, as dupes-expiry
//	records-deleted/<deleted_at><key> -> empty; the records whose deletion
//	                        was confirmed, by DeletedAt (8 bytes as in
//	                        dupes-expiry), key = uvarint(len(mailbox))
//	                        mailbox uidl
//
// The dupes, claims and records-deleted buckets were added to schema 1
// without changing it: Open creates them in an older file (indexing its
// deleted records once, in the transaction that creates records-deleted),
// and an older build ignores them. A record's and an entry's
// "fingerprint", and a record's newer fields (next_refetch, next_notice,
// too_large_limit, a recipient's failure), are absent in what older
// builds wrote; every record read goes through ledger.Record.Upgrade.
//
// A bucket per mailbox keeps mailboxes apart without any escaping: mailbox
// names and UIDLs are used as raw bytes, never joined with a separator, so
// no name can collide with another (RFC 1939 section 7 lets a UIDL hold any
// printable character).
//
// Guarantees, beyond those of package ledger:
//   - Each Put is one bbolt read-write transaction: bbolt commits it with
//     fdatasync before Put returns, so a returned nil survives a crash. The
//     version checks run inside that transaction, so they and the writes are
//     atomic with respect to every other writer of the file.
//   - Concurrent Puts from several goroutines share one commit (group
//     commit) without changing their semantics: a lone Put commits at once;
//     Puts that arrive while a commit runs are applied one after the other in
//     the next transaction, each checking all its versions before writing any
//     record, so a Put that conflicts writes nothing and the others still
//     commit. bbolt's own DB.Batch is not used: it waits MaxBatchDelay (10 ms)
//     before every commit, even a lone one, and re-runs the whole batch when
//     one function fails.
//   - Duplicate-index entries are written in the transaction of the record
//     they belong to (PutAccepted). Expired entries are pruned in the write
//     transactions, oldest first and at most pruneBatch (plus as many as the
//     transaction writes) per transaction, so pruning never makes one
//     commit slow and the index stays near its live size; Accepted skips an
//     expired entry that is still stored.
//   - A record deleted (DeletedAt) at least Options.RecordRetention ago
//     is retired, removed for good, by a write transaction: oldest first,
//     at most pruneBatch plus the deletions the transaction records, and
//     never by the transaction that wrote it, so a Put never returns nil
//     for a record already gone. Reads do not hide a record due for
//     retirement but not yet removed: a record Get does not return is
//     absent, so a Put of Version 0 creates it. A record not deleted
//     never retires. Only a current build keeps records-deleted: a record
//     an older build deleted is kept (as before the index), one it
//     changed is checked against its stored DeletedAt before retiring.
//   - Each Claim is checked and written in one write transaction (shared
//     with concurrent Puts like theirs), so of claimants racing for a key
//     exactly one wins. PutAccepted of the record holding the claim for
//     its (MessageID, Fingerprint) deletes that claim in its transaction:
//     the attempt it stood for is recorded. A plain Put leaves claims
//     alone. Expired claims are pruned like index entries (by the Ledger's
//     clock, at most pruneBatch plus the claims written per transaction);
//     a claim only delays other copies, so one left by a crash holds them
//     back until it expires and never suppresses one.
//   - Only one process can open the file at a time (bbolt holds an exclusive
//     flock); a second one waits Options.Timeout and then fails with an
//     error saying another process holds the ledger.
//   - A corrupt file gives an error wrapping ErrCorrupt, not a crash: bbolt
//     panics (or faults on its memory map) when it meets a damaged page, and
//     every method recovers that. When the panic comes from inside bbolt's
//     own Open, its memory map of the file cannot be released, and with it
//     the file lock stays held until the process exits: treat ErrCorrupt
//     from Open as fatal.
//
// What it cannot do: it cannot be shared between machines or processes (use
// the DynamoDB ledger for that); it honours ctx only before a transaction
// starts, as bbolt transactions cannot be interrupted.
package boltledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/popconnector/popconnector/internal/ledger"
)

// DefaultTimeout is how long Open waits for another process's lock when
// Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

const schemaVersion = "1"

var (
	bucketMeta    = []byte("meta")
	bucketRecords = []byte("records")
	bucketLeases  = []byte("leases")
	bucketDupes   = []byte("dupes")
	bucketExpiry  = []byte("dupes-expiry")
	bucketClaims  = []byte("claims")
	bucketClaimEx = []byte("claims-expiry")
	bucketRetire  = []byte("records-deleted")
	keySchema     = []byte("schema")
)

// ErrLocked reports a ledger file that another process has open.
var ErrLocked = errors.New("boltledger: ledger file is locked by another popconn process")

// ErrCorrupt reports a ledger file that bbolt cannot read.
var ErrCorrupt = errors.New("boltledger: ledger file is corrupt")

// Options tune Open. The zero value is ready to use.
type Options struct {
	// Timeout is how long Open waits for another process to release the
	// file lock; zero means DefaultTimeout, negative fails at once.
	Timeout time.Duration
	// Now is the clock for leases, for the expiry of index entries and
	// claims, and for retiring records; nil means time.Now.
	Now func() time.Time
	// RecordRetention is how long after its DeletedAt a record is kept
	// before a write transaction retires it (removes it). Zero means
	// ledger.DefaultRecordRetention, as DynamoDB's RecordTTL; negative
	// keeps every record for ever.
	RecordRetention time.Duration
}

// Ledger is a bbolt-backed ledger.Ledger. It is safe for concurrent use.
type Ledger struct {
	db   *bolt.DB
	path string
	now  func() time.Time
	// retention is Options.RecordRetention with its default applied;
	// negative: records never retire.
	retention time.Duration
	// session names this open of the file. bbolt holds an exclusive file
	// lock while open, so a lease written under another session belongs to
	// a process that has exited (or crashed): it is stale whatever its
	// expiry says, and a restarted popconn need not wait for it.
	session string

	// Group commit state: the goroutine that finds leading false commits the
	// queue; Puts arriving meanwhile wait in queue for the next commit.
	gmu     sync.Mutex
	leading bool
	queue   []*putReq
	commits atomic.Int64 // group commits made, for benchmarks
}

var _ ledger.Ledger = (*Ledger)(nil)

// Open opens or creates the ledger file at path (mode 0600). The directory
// must exist.
func Open(path string, opts Options) (l *Ledger, err error) {
	timeout := opts.Timeout
	switch {
	case timeout == 0:
		timeout = DefaultTimeout
	case timeout < 0:
		timeout = time.Nanosecond // bbolt: zero would mean wait forever
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	// bbolt may panic on a damaged file before Open returns the DB; keep
	// the file it opened so a panic does not leak it (and its lock).
	var file *os.File
	boltOpts := &bolt.Options{
		Timeout: timeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	}
	var db *bolt.DB
	err = guard(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, boltOpts)
		return err
	})
	if db == nil && file != nil {
		file.Close() // after a panic; bbolt closed it after an error already
	}
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (waited %s; is another popconn running?)", ErrLocked, path, timeout)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	case errors.Is(err, ErrCorrupt):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("boltledger: opening %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	// A new file's directory entry is durable only once its directory is.
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("boltledger: opening %s: %w", path, err)
	}
	retention := opts.RecordRetention
	if retention == 0 {
		retention = ledger.DefaultRecordRetention
	}
	l = &Ledger{db: db, path: path, now: now, retention: retention, session: newSession()}
	err = l.update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keySchema); {
		case v == nil:
			if err := meta.Put(keySchema, []byte(schemaVersion)); err != nil {
				return err
			}
		case string(v) != schemaVersion:
			return fmt.Errorf("ledger schema %q, this build reads %q", v, schemaVersion)
		}
		for _, b := range [][]byte{bucketRecords, bucketLeases, bucketDupes, bucketExpiry, bucketClaims, bucketClaimEx} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketRetire) != nil {
			return nil
		}
		// A file from before the retirement index: index its deletions
		// once, in the transaction that creates the index, so that no
		// deleted record is left out of it.
		if _, err := tx.CreateBucket(bucketRetire); err != nil {
			return err
		}
		return indexDeletions(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("boltledger: opening %s: %w", path, err)
	}
	return l, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// guard runs fn and turns a panic or memory fault raised by bbolt on a
// damaged file into an error wrapping ErrCorrupt. Faults on bbolt's memory
// map become panics only on goroutines that ask for it, hence
// debug.SetPanicOnFault.
func guard(path string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, p)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

// Close releases the file and its lock.
func (l *Ledger) Close() error {
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("boltledger: closing %s: %w", l.path, err)
	}
	return nil
}

// Path returns the ledger file's path.
func (l *Ledger) Path() string { return l.path }

// view runs fn in a read transaction, turning a corruption panic into an error.
func (l *Ledger) view(fn func(tx *bolt.Tx) error) error {
	return guard(l.path, func() error { return l.db.View(fn) })
}

// update runs fn in a write transaction.
func (l *Ledger) update(fn func(tx *bolt.Tx) error) error {
	return guard(l.path, func() error { return l.db.Update(fn) })
}

func validName(what, s string) error {
	if s == "" {
		return fmt.Errorf("boltledger: empty %s", what)
	}
	if len(s) > bolt.MaxKeySize {
		return fmt.Errorf("boltledger: %s longer than %d bytes", what, bolt.MaxKeySize)
	}
	return nil
}

// Get returns the stored records among uidls for mailbox, in one read
// transaction (a consistent snapshot).
func (l *Ledger) Get(ctx context.Context, mailbox string, uidls []string) (map[string]*ledger.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltledger: get: %w", err)
	}
	if err := validName("mailbox", mailbox); err != nil {
		return nil, err
	}
	out := make(map[string]*ledger.Record)
	err := l.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Bucket([]byte(mailbox))
		if b == nil {
			return nil
		}
		for _, u := range uidls {
			if u == "" {
				continue // no record can have an empty UIDL
			}
			v := b.Get([]byte(u))
			if v == nil {
				continue
			}
			rec, err := decode(mailbox, u, v)
			if err != nil {
				return err
			}
			out[u] = rec
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltledger: get %s: %w", mailbox, err)
	}
	return out, nil
}

// decode reads a stored record, upgraded (ledger.Record.Upgrade) as every
// read returns it.
func decode(mailbox, uidl string, v []byte) (*ledger.Record, error) {
	rec := new(ledger.Record)
	if err := json.Unmarshal(v, rec); err != nil {
		return nil, fmt.Errorf("%w: record %s/%q: %w", ErrCorrupt, mailbox, uidl, err)
	}
	rec.Upgrade()
	return rec, nil
}

// List returns every record of mailbox, ordered by FirstSeen then UIDL.
func (l *Ledger) List(ctx context.Context, mailbox string) ([]*ledger.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltledger: list: %w", err)
	}
	if err := validName("mailbox", mailbox); err != nil {
		return nil, err
	}
	var out []*ledger.Record
	err := l.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords).Bucket([]byte(mailbox))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			rec, err := decode(mailbox, string(k), v)
			if err != nil {
				return err
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltledger: list %s: %w", mailbox, err)
	}
	ledger.SortRecords(out)
	return out, nil
}

// pending is one record of a Put, encoded before the commit.
type pending struct {
	rec     *ledger.Record
	mailbox []byte
	uidl    []byte
	want    int64 // the Version the caller read; 0 = must not exist
	value   []byte
	deleted time.Time // the record's DeletedAt as written
	// stored is the DeletedAt of the record the write replaces (zero: none,
	// or not deleted), read by check.
	stored time.Time
	dups   []dupWrite // duplicate-index entries written with the record
	// release is the key of the claim PutAccepted ends if this record
	// holds it; nil for a plain Put.
	release []byte
}

// Put writes recs conditionally and all or none, in one transaction; the
// callers' Versions are incremented only after the commit succeeded.
func (l *Ledger) Put(ctx context.Context, recs ...*ledger.Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltledger: put: %w", err)
	}
	if len(recs) == 0 {
		return nil
	}
	ps, err := prepare(recs)
	if err != nil {
		return err
	}
	return l.commitPending(ps)
}

// commitPending commits prepared records and, once committed, increments
// the callers' Versions.
func (l *Ledger) commitPending(ps []pending) error {
	if err := l.commit(&putReq{ps: ps}); err != nil {
		return fmt.Errorf("boltledger: put: %w", err)
	}
	for _, p := range ps {
		p.rec.Version = p.want + 1
	}
	return nil
}

// prepare checks and encodes the records of a Put.
func prepare(recs []*ledger.Record) ([]pending, error) {
	ps := make([]pending, len(recs))
	seen := make(map[[2]string]bool, len(recs))
	for i, r := range recs {
		if r == nil {
			return nil, errors.New("boltledger: put: nil record")
		}
		if err := validName("mailbox", r.Mailbox); err != nil {
			return nil, err
		}
		if err := validName("UIDL", r.UIDL); err != nil {
			return nil, err
		}
		if r.Version < 0 {
			return nil, fmt.Errorf("boltledger: put %s/%q: negative version %d", r.Mailbox, r.UIDL, r.Version)
		}
		id := [2]string{r.Mailbox, r.UIDL}
		if seen[id] {
			return nil, fmt.Errorf("boltledger: put: record %s/%q given twice", r.Mailbox, r.UIDL)
		}
		seen[id] = true
		next := *r
		next.Version = r.Version + 1
		v, err := json.Marshal(&next)
		if err != nil {
			return nil, fmt.Errorf("boltledger: put %s/%q: %w", r.Mailbox, r.UIDL, err)
		}
		ps[i] = pending{rec: r, mailbox: []byte(r.Mailbox), uidl: []byte(r.UIDL), want: r.Version, value: v, deleted: r.DeletedAt}
	}
	return ps, nil
}

// putReq is one Put, or one Claim, waiting for a group commit.
type putReq struct {
	ps    []pending
	claim *claimOp // instead of ps
	err   error
	// wake receives exactly one value: false once the request was
	// committed (or failed; see err), true when it must lead the next commit.
	wake chan bool
}

// commit applies req in a write transaction shared with the Puts and
// Claims that queued up while the previous transaction ran. The first Put to arrive when no
// commit runs leads: it takes the whole queue, commits it, wakes every
// request it carried, and hands leadership to the oldest request that
// arrived meanwhile. No Put waits for a timer.
func (l *Ledger) commit(req *putReq) error {
	req.wake = make(chan bool, 1)
	l.gmu.Lock()
	l.queue = append(l.queue, req)
	if l.leading {
		l.gmu.Unlock()
		if lead := <-req.wake; !lead {
			return req.err
		}
		l.gmu.Lock()
	}
	l.leading = true
	group := l.queue
	l.queue = nil
	l.gmu.Unlock()

	l.commitGroup(group)
	for _, r := range group {
		if r != req {
			r.wake <- false
		}
	}

	l.gmu.Lock()
	if len(l.queue) > 0 {
		l.queue[0].wake <- true // stays leading: the handover is immediate
	} else {
		l.leading = false
	}
	l.gmu.Unlock()
	return req.err
}

// commitGroup runs the requests of group in one transaction and sets each
// one's err. A request whose check fails (conflict, damaged record, a
// claim held by another record) has written nothing, so it alone fails; a
// failed write or commit fails all, since then nothing was committed.
func (l *Ledger) commitGroup(group []*putReq) {
	l.commits.Add(1)
	err := l.update(func(tx *bolt.Tx) error {
		records := tx.Bucket(bucketRecords)
		dups, claims, deletions := 0, 0, 0
		written := map[string]bool{} // pairKey of each record written
		for _, r := range group {
			if r.claim != nil {
				if r.err = r.claim.check(tx); r.err != nil {
					continue
				}
				if err := r.claim.write(tx); err != nil {
					return err
				}
				claims++
				continue
			}
			r.err = check(records, r.ps)
			if r.err != nil {
				continue
			}
			if err := write(tx, r.ps); err != nil {
				return err
			}
			for _, p := range r.ps {
				written[string(pairKey(string(p.mailbox), string(p.uidl)))] = true
				if !p.deleted.IsZero() && !p.deleted.Equal(p.stored) {
					deletions++
				}
			}
			n, err := writeDups(tx, r.ps)
			if err != nil {
				return err
			}
			dups += n
			if err := releaseClaims(tx, r.ps); err != nil {
				return err
			}
		}
		now := l.now()
		if err := dupIndex.prune(tx, now, pruneBatch+dups); err != nil {
			return err
		}
		if err := claimIndex.prune(tx, now, pruneBatch+claims); err != nil {
			return err
		}
		if l.retention < 0 {
			return nil
		}
		return retire(tx, now.Add(-l.retention), pruneBatch+deletions, written)
	})
	if err != nil {
		for _, r := range group {
			r.err = err
		}
	}
}

// check compares every record's stored Version with the one its writer
// read, and notes the stored record's DeletedAt for the retirement index.
func check(records *bolt.Bucket, ps []pending) error {
	for i, p := range ps {
		var have int64
		if b := records.Bucket(p.mailbox); b != nil {
			if stored := b.Get(p.uidl); stored != nil {
				var v struct {
					Version   int64     `json:"version"`
					DeletedAt time.Time `json:"deleted_at"`
				}
				if err := json.Unmarshal(stored, &v); err != nil {
					return fmt.Errorf("%w: record %s/%q: %w", ErrCorrupt, p.mailbox, p.uidl, err)
				}
				have = v.Version
				ps[i].stored = v.DeletedAt
			}
		}
		if have != p.want {
			return fmt.Errorf("%w: mailbox %s UIDL %q: stored version %d, writer read version %d",
				ledger.ErrConflict, p.mailbox, p.uidl, have, p.want)
		}
	}
	return nil
}

// write stores the prepared values, creating mailbox buckets as needed,
// and keeps the retirement index in step.
func write(tx *bolt.Tx, ps []pending) error {
	records := tx.Bucket(bucketRecords)
	for _, p := range ps {
		b, err := records.CreateBucketIfNotExists(p.mailbox)
		if err != nil {
			return fmt.Errorf("mailbox %s: %w", p.mailbox, err)
		}
		if err := b.Put(p.uidl, p.value); err != nil {
			return fmt.Errorf("record %s/%q: %w", p.mailbox, p.uidl, err)
		}
		if err := reindexDeletion(tx, p.mailbox, p.uidl, p.stored, p.deleted); err != nil {
			return fmt.Errorf("record %s/%q: %w", p.mailbox, p.uidl, err)
		}
	}
	return nil
}

// leaseValue is what the leases bucket holds per mailbox.
type leaseValue struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	Session string    `json:"session,omitempty"`
}

// Lease takes mailbox's lease for owner until now+ttl, if nobody holds it,
// its holder's time ran out, or owner already holds it. Owners must be
// unique per poller (a random or host/PID token): one owner renewing
// another's lease is exactly what an owner name cannot detect.
func (l *Ledger) Lease(ctx context.Context, mailbox, owner string, ttl time.Duration) (ledger.Lease, error) {
	if err := validName("mailbox", mailbox); err != nil {
		return nil, err
	}
	if owner == "" {
		return nil, errors.New("boltledger: lease: empty owner")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("boltledger: lease: ttl %s is not positive", ttl)
	}
	le := &lease{l: l, mailbox: mailbox, owner: owner, ttl: ttl}
	if err := le.take(ctx); err != nil {
		return nil, err
	}
	return le, nil
}

type lease struct {
	l        *Ledger
	mailbox  string
	owner    string
	ttl      time.Duration
	released atomic.Bool
}

// take writes the lease for this owner if it is free, expired or ours.
func (le *lease) take(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltledger: lease %s: %w", le.mailbox, err)
	}
	err := le.l.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		now := le.l.now()
		if v := b.Get([]byte(le.mailbox)); v != nil {
			var cur leaseValue
			if err := json.Unmarshal(v, &cur); err != nil {
				return fmt.Errorf("%w: lease %s: %w", ErrCorrupt, le.mailbox, err)
			}
			live := cur.Session == le.l.session && now.Before(cur.Expires)
			if cur.Owner != le.owner && live {
				return fmt.Errorf("%w: mailbox %s held by %q until %s",
					ledger.ErrLeaseHeld, le.mailbox, cur.Owner, cur.Expires.UTC().Format(time.RFC3339))
			}
		}
		v, err := json.Marshal(leaseValue{Owner: le.owner, Expires: now.Add(le.ttl), Session: le.l.session})
		if err != nil {
			return err
		}
		return b.Put([]byte(le.mailbox), v)
	})
	if err != nil {
		return fmt.Errorf("boltledger: lease: %w", err)
	}
	return nil
}

// Renew extends the lease to now+ttl. It fails with ErrLeaseHeld once
// another owner took the lease after it expired; a lease that expired but
// was not taken is simply taken again.
func (le *lease) Renew(ctx context.Context) error {
	if le.released.Load() {
		return fmt.Errorf("boltledger: renew %s: lease already released", le.mailbox)
	}
	return le.take(ctx)
}

// Release deletes the lease if this owner still holds it.
func (le *lease) Release(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltledger: release %s: %w", le.mailbox, err)
	}
	le.released.Store(true)
	err := le.l.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		v := b.Get([]byte(le.mailbox))
		if v == nil {
			return nil
		}
		var cur leaseValue
		if err := json.Unmarshal(v, &cur); err != nil {
			return fmt.Errorf("%w: lease %s: %w", ErrCorrupt, le.mailbox, err)
		}
		if cur.Owner != le.owner {
			return nil // lost to another owner: not ours to delete
		}
		return b.Delete([]byte(le.mailbox))
	})
	if err != nil {
		return fmt.Errorf("boltledger: release %s: %w", le.mailbox, err)
	}
	return nil
}

// newSession returns a random name for one open of the ledger file.
func newSession() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; a time-based name still
		// differs between opens.
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}
