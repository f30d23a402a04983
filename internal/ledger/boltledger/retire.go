package boltledger

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Retirement of deleted records. bucketRetire orders the records whose
// deletion the server confirmed by their DeletedAt: its keys are
// expiryKey(DeletedAt, pairKey(mailbox, uidl)), with empty values, so a
// write transaction finds the oldest deletions without scanning the
// records. Its keys follow the records, not the other way round: every
// use checks the record itself, so a key that no longer matches (a
// record replaced by an older build, which does not keep the index) only
// costs its own removal, and never retires a record that is not due.

// deletedOf is the part of a stored record the index needs.
type deletedOf struct {
	DeletedAt time.Time `json:"deleted_at"`
}

// retireKey is the index key of the record (mailbox, uidl) deleted at at.
func retireKey(at time.Time, mailbox, uidl []byte) []byte {
	return expiryKey(at, pairKey(string(mailbox), string(uidl)))
}

// splitPairKey is the inverse of pairKey.
func splitPairKey(k []byte) (first, second []byte, err error) {
	n, w := binary.Uvarint(k)
	if w <= 0 || uint64(len(k)-w) < n {
		return nil, nil, errors.New("malformed pair key")
	}
	return k[w : w+int(n)], k[w+int(n):], nil
}

// reindexDeletion keeps the retirement index in step with a record write:
// the record (mailbox, uidl), deleted at was (zero: not deleted) before
// the write, is deleted at now (zero: not deleted) after it.
func reindexDeletion(tx *bolt.Tx, mailbox, uidl []byte, was, now time.Time) error {
	if was.Equal(now) {
		return nil
	}
	ix := tx.Bucket(bucketRetire)
	if !was.IsZero() {
		if err := ix.Delete(retireKey(was, mailbox, uidl)); err != nil {
			return err
		}
	}
	if !now.IsZero() {
		if err := ix.Put(retireKey(now, mailbox, uidl), nil); err != nil {
			return fmt.Errorf("%s key: %w", bucketRetire, err)
		}
	}
	return nil
}

// retire removes, of the oldest limit keys of records deleted at or
// before cut, the records and their keys. A key whose record is gone, or
// is no longer deleted at a time at or before cut, loses only the key
// (and the record, if still deleted, is indexed at its own time again).
// A record whose pairKey is in written was written by this transaction
// and stays, with its key, until a later one: a Put never returns nil
// for a record it has already removed.
func retire(tx *bolt.Tx, cut time.Time, limit int, written map[string]bool) error {
	ix, records := tx.Bucket(bucketRetire), tx.Bucket(bucketRecords)
	for _, k := range dueKeys(ix, cut, limit) {
		if len(k) >= 8 && written[string(k[8:])] {
			continue
		}
		if err := ix.Delete(k); err != nil {
			return err
		}
		if len(k) < 8 {
			continue
		}
		mailbox, uidl, err := splitPairKey(k[8:])
		if err != nil {
			continue // not a key this code wrote: dropping it is all there is to do
		}
		b := records.Bucket(mailbox)
		if b == nil {
			continue
		}
		v := b.Get(uidl)
		if v == nil {
			continue
		}
		var d deletedOf
		if err := json.Unmarshal(v, &d); err != nil || d.DeletedAt.IsZero() {
			continue // reads report a damaged record; an undeleted one never retires
		}
		if d.DeletedAt.After(cut) {
			if err := ix.Put(retireKey(d.DeletedAt, mailbox, uidl), nil); err != nil {
				return err
			}
			continue
		}
		if err := b.Delete(uidl); err != nil {
			return fmt.Errorf("retiring record %s/%q: %w", mailbox, uidl, err)
		}
	}
	return nil
}

// indexDeletions fills the retirement index from every stored record, once,
// when Open meets a file written before the index existed.
func indexDeletions(tx *bolt.Tx) error {
	records := tx.Bucket(bucketRecords)
	return records.ForEachBucket(func(mailbox []byte) error {
		b := records.Bucket(mailbox)
		return b.ForEach(func(uidl, v []byte) error {
			var d deletedOf
			if v == nil || json.Unmarshal(v, &d) != nil || d.DeletedAt.IsZero() {
				return nil
			}
			return reindexDeletion(tx, mailbox, uidl, time.Time{}, d.DeletedAt)
		})
	})
}
