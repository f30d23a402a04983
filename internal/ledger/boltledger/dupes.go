package boltledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/popconnector/popconnector/internal/ledger"
)

// pruneBatch is how many expired entries (duplicate-index entries, claims)
// one write transaction removes at most per index, besides as many as it
// writes.
const pruneBatch = 64

// expiringIndex is a bucket of entries that stop counting at an expiry,
// beside a bucket of expiry keys (expiryKey) that orders them by it, so
// writes can prune the oldest without scanning. Every entry's value is
// JSON with an "expires" field.
type expiringIndex struct {
	data, expiry []byte // bucket names
}

var (
	dupIndex   = expiringIndex{bucketDupes, bucketExpiry}
	claimIndex = expiringIndex{bucketClaims, bucketClaimEx}
)

// expiresOf is the part of an entry's value the index needs.
type expiresOf struct {
	Expires time.Time `json:"expires"`
}

// dupWrite is one duplicate-index entry prepared for a transaction.
type dupWrite struct {
	key     []byte // pairKey
	expires time.Time
	value   []byte
}

// dupValue is what the dupes bucket holds per key.
type dupValue struct {
	MessageID   string    `json:"message_id"`
	Recipient   string    `json:"recipient"`
	Mailbox     string    `json:"mailbox"`
	UIDL        string    `json:"uidl"`
	At          time.Time `json:"at"`
	Expires     time.Time `json:"expires"`
	Fingerprint string    `json:"fingerprint,omitempty"` // absent in entries written before it existed
}

// pairKey is uvarint(len(id)) id second: no Message-ID can run into the
// recipient (dupes) or fingerprint (claims) after it.
func pairKey(id, second string) []byte {
	k := binary.AppendUvarint(nil, uint64(len(id)))
	k = append(k, id...)
	return append(k, second...)
}

// expiryKey orders entries by expiry: 8 bytes of big-endian Unix
// nanoseconds (clamped at zero), then the entry's key.
func expiryKey(expires time.Time, key []byte) []byte {
	ns := expires.UnixNano()
	if ns < 0 {
		ns = 0
	}
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(key)), uint64(ns))
	return append(k, key...)
}

// dueKeys returns copies of the first limit keys of b, a bucket keyed by
// expiryKey, whose time is not after now: the oldest first.
func dueKeys(b *bolt.Bucket, now time.Time, limit int) [][]byte {
	cut := expiryKey(now, nil)
	var due [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(due) < limit && bytes.Compare(k[:min(8, len(k))], cut) <= 0; k, _ = c.Next() {
		due = append(due, bytes.Clone(k))
	}
	return due
}

// put stores value under key with its expiry key, replacing an older entry
// and removing that one's expiry key.
func (ix expiringIndex) put(tx *bolt.Tx, key []byte, expires time.Time, value []byte) error {
	data, expiry := tx.Bucket(ix.data), tx.Bucket(ix.expiry)
	if err := ix.removeExpiry(data, expiry, key); err != nil {
		return err
	}
	if err := data.Put(key, value); err != nil {
		return fmt.Errorf("%s entry: %w", ix.data, err)
	}
	if err := expiry.Put(expiryKey(expires, key), nil); err != nil {
		return fmt.Errorf("%s key: %w", ix.expiry, err)
	}
	return nil
}

// delete removes the entry under key and its expiry key.
func (ix expiringIndex) delete(tx *bolt.Tx, key []byte) error {
	data, expiry := tx.Bucket(ix.data), tx.Bucket(ix.expiry)
	if err := ix.removeExpiry(data, expiry, key); err != nil {
		return err
	}
	return data.Delete(key)
}

// removeExpiry deletes the expiry key of the entry stored under key, if
// any. An undecodable entry keeps its expiry key: pruning removes it.
func (ix expiringIndex) removeExpiry(data, expiry *bolt.Bucket, key []byte) error {
	old := data.Get(key)
	if old == nil {
		return nil
	}
	var ov expiresOf
	if err := json.Unmarshal(old, &ov); err != nil {
		return nil
	}
	return expiry.Delete(expiryKey(ov.Expires, key))
}

// prune removes up to limit entries that expired before now, oldest
// first. An expiry key whose entry was replaced by a later one only loses
// the key.
func (ix expiringIndex) prune(tx *bolt.Tx, now time.Time, limit int) error {
	data, expiry := tx.Bucket(ix.data), tx.Bucket(ix.expiry)
	for _, k := range dueKeys(expiry, now, limit) {
		if err := expiry.Delete(k); err != nil {
			return err
		}
		if len(k) < 8 {
			continue
		}
		key := k[8:]
		v := data.Get(key)
		if v == nil {
			continue
		}
		var ev expiresOf
		if err := json.Unmarshal(v, &ev); err == nil && ev.Expires.After(now) {
			continue // replaced by a later entry with its own expiry key
		}
		if err := data.Delete(key); err != nil {
			return err
		}
	}
	return nil
}

// PutAccepted writes rec and the duplicate-index entries of accepted in one
// transaction (shared with concurrent Puts, like Put), conditional on rec's
// Version only.
func (l *Ledger) PutAccepted(ctx context.Context, rec *ledger.Record, accepted []ledger.Acceptance) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltledger: put: %w", err)
	}
	ps, err := prepare([]*ledger.Record{rec})
	if err != nil {
		return err
	}
	for _, a := range accepted {
		id, rcpt, ok := ledger.DuplicateKey(a.MessageID, a.Recipient)
		if !ok {
			continue
		}
		if a.Expires.IsZero() {
			return fmt.Errorf("boltledger: put %s/%q: duplicate-index entry for %s without an expiry", rec.Mailbox, rec.UIDL, rcpt)
		}
		v, err := json.Marshal(dupValue{MessageID: id, Recipient: rcpt, Mailbox: rec.Mailbox, UIDL: rec.UIDL, At: a.At, Expires: a.Expires,
			Fingerprint: a.Fingerprint})
		if err != nil {
			return fmt.Errorf("boltledger: put %s/%q: %w", rec.Mailbox, rec.UIDL, err)
		}
		ps[0].dups = append(ps[0].dups, dupWrite{key: pairKey(id, rcpt), expires: a.Expires, value: v})
	}
	if id, ok := ledger.ClaimKey(rec.MessageID, rec.Fingerprint); ok {
		ps[0].release = pairKey(id, rec.Fingerprint)
	}
	return l.commitPending(ps)
}

// writeDups stores the entries of ps, replacing older ones (and their
// expiry keys), and returns how many it wrote.
func writeDups(tx *bolt.Tx, ps []pending) (int, error) {
	n := 0
	for _, p := range ps {
		for _, d := range p.dups {
			if err := dupIndex.put(tx, d.key, d.expires, d.value); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// Accepted returns the unexpired duplicate-index entries of messageID for
// recipients, in one read transaction.
func (l *Ledger) Accepted(ctx context.Context, messageID string, recipients []string) (map[string]ledger.Acceptance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltledger: accepted: %w", err)
	}
	out := make(map[string]ledger.Acceptance)
	now := l.now()
	err := l.view(func(tx *bolt.Tx) error {
		dupes := tx.Bucket(bucketDupes)
		if dupes == nil {
			return errors.New("no dupes bucket")
		}
		for _, r := range recipients {
			id, rcpt, ok := ledger.DuplicateKey(messageID, r)
			if !ok {
				continue
			}
			v := dupes.Get(pairKey(id, rcpt))
			if v == nil {
				continue
			}
			var dv dupValue
			if err := json.Unmarshal(v, &dv); err != nil {
				return fmt.Errorf("%w: duplicate-index entry %q/%q: %w", ErrCorrupt, id, rcpt, err)
			}
			if !dv.Expires.After(now) {
				continue
			}
			out[r] = ledger.Acceptance{MessageID: dv.MessageID, Recipient: dv.Recipient, Mailbox: dv.Mailbox, UIDL: dv.UIDL, At: dv.At, Expires: dv.Expires,
				Fingerprint: dv.Fingerprint}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltledger: accepted: %w", err)
	}
	return out, nil
}
