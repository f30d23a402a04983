package ledgertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// ErrClosed reports a call on a Memory handle after its Close.
var ErrClosed = errors.New("ledgertest: memory ledger closed")

// MemoryOption configures NewMemory.
type MemoryOption func(*memStore)

// WithClock sets the clock that leases and duplicate-index expiry are
// judged by (claims carry the callers' instants). The default is time.Now.
func WithClock(now func() time.Time) MemoryOption {
	return func(s *memStore) { s.now = now }
}

// Memory is one handle on an in-memory ledger.Ledger, the store the
// connector's fast tests run on. It is safe for concurrent use.
//
// It keeps every guarantee of package ledger except durability across the
// end of the process: a Put is all or none and conditional, Claim and
// PutAccepted behave as bolt's (PutAccepted ends its own record's claim),
// and each call is one critical section, so racing writers see exactly
// one winner. Records are stored as their JSON, as bolt and DynamoDB store
// them, so a caller can never reach a stored record through a pointer, and
// a field that would not survive a real store does not survive here.
//
// "Durable" means: the data outlives a handle. Close ends one handle;
// Reopen gives a new handle on the same data, as reopening a bolt file
// does, and a lease taken through a closed handle no longer holds (its
// process has exited, as bolt's file lock proves). That is how a test
// restarts the process after a simulated crash.
type Memory struct {
	s      *memStore
	handle uint64
	closed atomic.Bool
}

var _ ledger.Ledger = (*Memory)(nil)

// NewMemory returns a handle on a new, empty in-memory ledger.
func NewMemory(opts ...MemoryOption) *Memory {
	s := &memStore{
		now:     time.Now,
		records: map[recKey][]byte{},
		leases:  map[string]memLease{},
		dupes:   map[pairKey]ledger.Acceptance{},
		claims:  map[pairKey]ledger.Claim{},
		open:    map[uint64]bool{},
	}
	for _, o := range opts {
		o(s)
	}
	return s.handle()
}

// Reopen returns a new handle on m's data; m itself is left as it is
// (close it first to model a process that exited).
func (m *Memory) Reopen() *Memory { return m.s.handle() }

// memStore is the data every handle of one ledger shares. One mutex
// guards all of it: each call is one transaction.
type memStore struct {
	now func() time.Time

	mu      sync.Mutex
	records map[recKey][]byte // JSON of ledger.Record
	leases  map[string]memLease
	dupes   map[pairKey]ledger.Acceptance // normalized (Message-ID, recipient)
	claims  map[pairKey]ledger.Claim      // normalized (Message-ID, fingerprint)
	open    map[uint64]bool               // handles not closed
	handles uint64
}

// recKey and pairKey are struct keys, so no name can run into another.
type recKey struct{ mailbox, uidl string }
type pairKey struct{ id, second string }

type memLease struct {
	owner   string
	expires time.Time
	handle  uint64
}

func (s *memStore) handle() *Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handles++
	s.open[s.handles] = true
	return &Memory{s: s, handle: s.handles}
}

// begin checks what every call checks first.
func (m *Memory) begin(ctx context.Context, op string) error {
	if m.closed.Load() {
		return fmt.Errorf("ledgertest: %s: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ledgertest: %s: %w", op, err)
	}
	return nil
}

// Close ends this handle; the data stays for Reopen. Closing twice is not
// an error.
func (m *Memory) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	m.s.mu.Lock()
	delete(m.s.open, m.handle)
	m.s.mu.Unlock()
	return nil
}

// Get returns copies of the stored records among uidls.
func (m *Memory) Get(ctx context.Context, mailbox string, uidls []string) (map[string]*ledger.Record, error) {
	if err := m.begin(ctx, "get"); err != nil {
		return nil, err
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	out := make(map[string]*ledger.Record, len(uidls))
	for _, u := range uidls {
		if b, ok := m.s.records[recKey{mailbox, u}]; ok {
			r, err := decodeRecord(b)
			if err != nil {
				return nil, err
			}
			out[u] = r
		}
	}
	return out, nil
}

// List returns copies of mailbox's records by FirstSeen, then UIDL.
func (m *Memory) List(ctx context.Context, mailbox string) ([]*ledger.Record, error) {
	if err := m.begin(ctx, "list"); err != nil {
		return nil, err
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	var out []*ledger.Record
	for k, b := range m.s.records {
		if k.mailbox != mailbox {
			continue
		}
		r, err := decodeRecord(b)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	ledger.SortRecords(out)
	return out, nil
}

// Put writes recs if every stored Version matches, else nothing.
func (m *Memory) Put(ctx context.Context, recs ...*ledger.Record) error {
	if err := m.begin(ctx, "put"); err != nil {
		return err
	}
	w, err := prepareRecords(recs)
	if err != nil {
		return err
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if err := m.s.checkVersions(recs); err != nil {
		return err
	}
	m.s.commit(recs, w)
	return nil
}

// PutAccepted writes rec and the index entries of accepted at once, like
// bolt: the entries can never be seen before the record.
func (m *Memory) PutAccepted(ctx context.Context, rec *ledger.Record, accepted []ledger.Acceptance) error {
	if err := m.begin(ctx, "put"); err != nil {
		return err
	}
	w, err := prepareRecords([]*ledger.Record{rec})
	if err != nil {
		return err
	}
	entries := map[pairKey]ledger.Acceptance{}
	for _, a := range accepted {
		id, rcpt, ok := ledger.DuplicateKey(a.MessageID, a.Recipient)
		if !ok {
			continue
		}
		if a.Expires.IsZero() {
			return fmt.Errorf("ledgertest: put %s/%q: duplicate-index entry for %s without an expiry", rec.Mailbox, rec.UIDL, rcpt)
		}
		a.MessageID, a.Recipient, a.Mailbox, a.UIDL = id, rcpt, rec.Mailbox, rec.UIDL
		entries[pairKey{id, rcpt}] = a
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if err := m.s.checkVersions([]*ledger.Record{rec}); err != nil {
		return err
	}
	m.s.commit([]*ledger.Record{rec}, w)
	m.s.pruneDupes()
	for k, a := range entries {
		m.s.dupes[k] = a
	}
	// The attempt the record's claim stood for is recorded: end it.
	if id, ok := ledger.ClaimKey(rec.MessageID, rec.Fingerprint); ok {
		k := pairKey{id, rec.Fingerprint}
		if c, ok := m.s.claims[k]; ok && c.Mailbox == rec.Mailbox && c.UIDL == rec.UIDL {
			delete(m.s.claims, k)
		}
	}
	return nil
}

// Accepted returns the live index entries of messageID for recipients.
func (m *Memory) Accepted(ctx context.Context, messageID string, recipients []string) (map[string]ledger.Acceptance, error) {
	if err := m.begin(ctx, "accepted"); err != nil {
		return nil, err
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	now := m.s.now()
	out := map[string]ledger.Acceptance{}
	for _, r := range recipients {
		id, rcpt, ok := ledger.DuplicateKey(messageID, r)
		if !ok {
			continue
		}
		if a, ok := m.s.dupes[pairKey{id, rcpt}]; ok && a.Expires.After(now) {
			out[r] = a
		}
	}
	return out, nil
}

// Claim takes c unless a live claim of another record holds its key.
func (m *Memory) Claim(ctx context.Context, c ledger.Claim, takeOver *ledger.Claim) (ledger.Claim, error) {
	if err := m.begin(ctx, "claim"); err != nil {
		return ledger.Claim{}, err
	}
	id, err := c.Validate()
	if err != nil {
		return ledger.Claim{}, fmt.Errorf("ledgertest: %w", err)
	}
	k := pairKey{id, c.Fingerprint}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if held, ok := m.s.claims[k]; ok && !held.Admits(c, takeOver) {
		return held, fmt.Errorf("ledgertest: claim %q: %w: held by %s/%q until %s", id, ledger.ErrClaimHeld,
			held.Mailbox, held.UIDL, held.Expires.UTC().Format(time.RFC3339Nano))
	}
	stored := c
	stored.MessageID = id
	m.s.claims[k] = stored
	return c, nil
}

// Lease takes mailbox's lease for owner if it is free, expired, held
// through a closed handle, or already owner's.
func (m *Memory) Lease(ctx context.Context, mailbox, owner string, ttl time.Duration) (ledger.Lease, error) {
	if err := m.begin(ctx, "lease"); err != nil {
		return nil, err
	}
	switch {
	case mailbox == "":
		return nil, errors.New("ledgertest: lease: empty mailbox")
	case owner == "":
		return nil, errors.New("ledgertest: lease: empty owner")
	case ttl <= 0:
		return nil, fmt.Errorf("ledgertest: lease: ttl %s is not positive", ttl)
	}
	le := &memLeaseHandle{m: m, mailbox: mailbox, owner: owner, ttl: ttl}
	if err := le.take(); err != nil {
		return nil, err
	}
	return le, nil
}

type memLeaseHandle struct {
	m        *Memory
	mailbox  string
	owner    string
	ttl      time.Duration
	released atomic.Bool
}

func (le *memLeaseHandle) take() error {
	s := le.m.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if cur, ok := s.leases[le.mailbox]; ok && cur.owner != le.owner && s.open[cur.handle] && now.Before(cur.expires) {
		return fmt.Errorf("ledgertest: lease: %w: mailbox %s held by %q until %s",
			ledger.ErrLeaseHeld, le.mailbox, cur.owner, cur.expires.UTC().Format(time.RFC3339))
	}
	s.leases[le.mailbox] = memLease{owner: le.owner, expires: now.Add(le.ttl), handle: le.m.handle}
	return nil
}

// Renew takes the lease again for its TTL: it fails with ErrLeaseHeld
// once another owner took it.
func (le *memLeaseHandle) Renew(ctx context.Context) error {
	if err := le.m.begin(ctx, "renew"); err != nil {
		return err
	}
	if le.released.Load() {
		return fmt.Errorf("ledgertest: renew %s: lease already released", le.mailbox)
	}
	return le.take()
}

// Release deletes the lease if its owner still holds it.
func (le *memLeaseHandle) Release(ctx context.Context) error {
	if err := le.m.begin(ctx, "release"); err != nil {
		return err
	}
	le.released.Store(true)
	s := le.m.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.leases[le.mailbox]; ok && cur.owner == le.owner {
		delete(s.leases, le.mailbox)
	}
	return nil
}

// prepareRecords checks recs and encodes each as it will be stored (its
// Version incremented), before the store is locked.
func prepareRecords(recs []*ledger.Record) ([][]byte, error) {
	seen := make(map[recKey]bool, len(recs))
	out := make([][]byte, len(recs))
	for i, r := range recs {
		if r == nil {
			return nil, errors.New("ledgertest: put: nil record")
		}
		if r.Mailbox == "" || r.UIDL == "" {
			return nil, fmt.Errorf("ledgertest: put: record %q/%q is not named", r.Mailbox, r.UIDL)
		}
		k := recKey{r.Mailbox, r.UIDL}
		if seen[k] {
			return nil, fmt.Errorf("ledgertest: put: record %s/%q given twice", r.Mailbox, r.UIDL)
		}
		seen[k] = true
		next := *r
		next.Version++
		b, err := json.Marshal(&next)
		if err != nil {
			return nil, fmt.Errorf("ledgertest: put %s/%q: %w", r.Mailbox, r.UIDL, err)
		}
		out[i] = b
	}
	return out, nil
}

// checkVersions fails with ErrConflict unless every record's Version is
// the stored one (0: absent). Called with mu held.
func (s *memStore) checkVersions(recs []*ledger.Record) error {
	for _, r := range recs {
		var stored int64
		if b, ok := s.records[recKey{r.Mailbox, r.UIDL}]; ok {
			cur, err := decodeRecord(b)
			if err != nil {
				return err
			}
			stored = cur.Version
		}
		if stored != r.Version {
			return fmt.Errorf("ledgertest: put %s/%q: %w (stored version %d, given %d)", r.Mailbox, r.UIDL, ledger.ErrConflict, stored, r.Version)
		}
	}
	return nil
}

// commit stores the prepared encodings and increments the callers'
// Versions. Called with mu held, after checkVersions.
func (s *memStore) commit(recs []*ledger.Record, enc [][]byte) {
	for i, r := range recs {
		s.records[recKey{r.Mailbox, r.UIDL}] = enc[i]
		r.Version++
	}
}

// pruneDupes drops expired index entries, as bolt's writes do. Called
// with mu held.
func (s *memStore) pruneDupes() {
	now := s.now()
	for k, a := range s.dupes {
		if !a.Expires.After(now) {
			delete(s.dupes, k)
		}
	}
}

func decodeRecord(b []byte) (*ledger.Record, error) {
	var r ledger.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("ledgertest: stored record unreadable: %w", err)
	}
	r.Upgrade() // as every store reads what older builds wrote
	return &r, nil
}

// Retire removes a record, as a store does once a deleted record's
// retention has passed (bolt's pruning, DynamoDB's TTL): for tests of
// what the connector does when a record it once wrote is gone.
func (m *Memory) Retire(mailbox, uidl string) {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	delete(m.s.records, recKey{mailbox, uidl})
}
