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

// pruneBatch is how many expired duplicate-index entries one write
// transaction removes at most, besides as many as it writes.
const pruneBatch = 64

// dupWrite is one duplicate-index entry prepared for a transaction.
type dupWrite struct {
	key    []byte // dupKey
	expiry []byte // expiryKey
	value  []byte
}

// dupValue is what the dupes bucket holds per key.
type dupValue struct {
	MessageID string    `json:"message_id"`
	Recipient string    `json:"recipient"`
	Mailbox   string    `json:"mailbox"`
	UIDL      string    `json:"uidl"`
	At        time.Time `json:"at"`
	Expires   time.Time `json:"expires"`
}

// dupKey is uvarint(len(id)) id rcpt: no Message-ID can run into a
// recipient.
func dupKey(id, rcpt string) []byte {
	k := binary.AppendUvarint(nil, uint64(len(id)))
	k = append(k, id...)
	return append(k, rcpt...)
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
		v, err := json.Marshal(dupValue{MessageID: id, Recipient: rcpt, Mailbox: rec.Mailbox, UIDL: rec.UIDL, At: a.At, Expires: a.Expires})
		if err != nil {
			return fmt.Errorf("boltledger: put %s/%q: %w", rec.Mailbox, rec.UIDL, err)
		}
		k := dupKey(id, rcpt)
		ps[0].dups = append(ps[0].dups, dupWrite{key: k, expiry: expiryKey(a.Expires, k), value: v})
	}
	return l.commitPending(ps)
}

// writeDups stores the entries of ps, replacing older ones (and their
// expiry keys), and returns how many it wrote.
func writeDups(tx *bolt.Tx, ps []pending) (int, error) {
	dupes, expiry := tx.Bucket(bucketDupes), tx.Bucket(bucketExpiry)
	n := 0
	for _, p := range ps {
		for _, d := range p.dups {
			if old := dupes.Get(d.key); old != nil {
				var ov dupValue
				if err := json.Unmarshal(old, &ov); err == nil {
					if err := expiry.Delete(expiryKey(ov.Expires, d.key)); err != nil {
						return n, err
					}
				}
			}
			if err := dupes.Put(d.key, d.value); err != nil {
				return n, fmt.Errorf("duplicate-index entry: %w", err)
			}
			if err := expiry.Put(d.expiry, nil); err != nil {
				return n, fmt.Errorf("duplicate-index expiry: %w", err)
			}
			n++
		}
	}
	return n, nil
}

// pruneDups removes up to limit entries that expired before now, oldest
// first. An expiry key whose entry was replaced by a later one only loses
// the key.
func pruneDups(tx *bolt.Tx, now time.Time, limit int) error {
	dupes, expiry := tx.Bucket(bucketDupes), tx.Bucket(bucketExpiry)
	cut := expiryKey(now, nil)
	var stale [][]byte
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && len(stale) < limit && bytes.Compare(k[:min(8, len(k))], cut) <= 0; k, _ = c.Next() {
		stale = append(stale, bytes.Clone(k))
	}
	for _, k := range stale {
		if err := expiry.Delete(k); err != nil {
			return err
		}
		if len(k) < 8 {
			continue
		}
		key := k[8:]
		v := dupes.Get(key)
		if v == nil {
			continue
		}
		var dv dupValue
		if err := json.Unmarshal(v, &dv); err == nil && dv.Expires.After(now) {
			continue // replaced by a later entry with its own expiry key
		}
		if err := dupes.Delete(key); err != nil {
			return err
		}
	}
	return nil
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
			v := dupes.Get(dupKey(id, rcpt))
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
			out[r] = ledger.Acceptance{MessageID: dv.MessageID, Recipient: dv.Recipient, Mailbox: dv.Mailbox, UIDL: dv.UIDL, At: dv.At, Expires: dv.Expires}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltledger: accepted: %w", err)
	}
	return out, nil
}
