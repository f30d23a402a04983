package boltledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/popconnector/popconnector/internal/ledger"
)

// claimValue is what the claims bucket holds per key.
type claimValue struct {
	MessageID   string    `json:"message_id"`
	Fingerprint string    `json:"fingerprint"`
	Mailbox     string    `json:"mailbox"`
	UIDL        string    `json:"uidl"`
	At          time.Time `json:"at"`
	Expires     time.Time `json:"expires"`
}

func (v claimValue) claim() ledger.Claim {
	return ledger.Claim{MessageID: v.MessageID, Fingerprint: v.Fingerprint, Mailbox: v.Mailbox, UIDL: v.UIDL, At: v.At, Expires: v.Expires}
}

// claimOp is one Claim prepared for a group commit.
type claimOp struct {
	key      []byte // pairKey(normalized Message-ID, fingerprint)
	c        ledger.Claim
	takeOver *ledger.Claim
	value    []byte
	held     ledger.Claim // the stored claim that refused c
}

// Claim takes the delivery claim c in one write transaction, shared with
// concurrent Puts like theirs (see ledger.Ledger.Claim). The condition is
// checked inside the transaction, so of claimants racing for one key
// exactly one succeeds.
func (l *Ledger) Claim(ctx context.Context, c ledger.Claim, takeOver *ledger.Claim) (ledger.Claim, error) {
	if err := ctx.Err(); err != nil {
		return ledger.Claim{}, fmt.Errorf("boltledger: claim: %w", err)
	}
	id, err := c.Validate()
	if err != nil {
		return ledger.Claim{}, fmt.Errorf("boltledger: %w", err)
	}
	v, err := json.Marshal(claimValue{MessageID: id, Fingerprint: c.Fingerprint, Mailbox: c.Mailbox, UIDL: c.UIDL, At: c.At, Expires: c.Expires})
	if err != nil {
		return ledger.Claim{}, fmt.Errorf("boltledger: claim %q: %w", id, err)
	}
	op := &claimOp{key: pairKey(id, c.Fingerprint), c: c, takeOver: takeOver, value: v}
	switch err := l.commit(&putReq{claim: op}); {
	case errors.Is(err, ledger.ErrClaimHeld):
		return op.held, fmt.Errorf("boltledger: claim %q fingerprint %q: %w", id, c.Fingerprint, err)
	case err != nil:
		return ledger.Claim{}, fmt.Errorf("boltledger: claim %q: %w", id, err)
	}
	return c, nil
}

// check refuses the claim, writing nothing, when the stored one is live
// and neither the claimant's nor taken over.
func (op *claimOp) check(tx *bolt.Tx) error {
	stored := tx.Bucket(bucketClaims).Get(op.key)
	if stored == nil {
		return nil
	}
	var cv claimValue
	if err := json.Unmarshal(stored, &cv); err != nil {
		return fmt.Errorf("%w: claim %q: %w", ErrCorrupt, op.key, err)
	}
	held := cv.claim()
	if held.Admits(op.c, op.takeOver) {
		return nil
	}
	op.held = held
	return fmt.Errorf("%w: held by %s/%q since %s until %s", ledger.ErrClaimHeld, held.Mailbox, held.UIDL,
		held.At.UTC().Format(time.RFC3339Nano), held.Expires.UTC().Format(time.RFC3339Nano))
}

func (op *claimOp) write(tx *bolt.Tx) error {
	return claimIndex.put(tx, op.key, op.c.Expires, op.value)
}

// releaseClaims deletes the claim each record of ps ends (pending.release)
// if that record holds it: its attempt is recorded, so the claim has
// served. A claim another record took over meanwhile is not this one's.
func releaseClaims(tx *bolt.Tx, ps []pending) error {
	claims := tx.Bucket(bucketClaims)
	for _, p := range ps {
		if p.release == nil {
			continue
		}
		v := claims.Get(p.release)
		if v == nil {
			continue
		}
		var cv claimValue
		if err := json.Unmarshal(v, &cv); err != nil || cv.Mailbox != p.rec.Mailbox || cv.UIDL != p.rec.UIDL {
			continue // a damaged claim is left to expire with its key
		}
		if err := claimIndex.delete(tx, p.release); err != nil {
			return fmt.Errorf("claim %q: %w", p.release, err)
		}
	}
	return nil
}
