package archivetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sync"

	"github.com/popconnector/popconnector/internal/archive"
)

// Memory is an in-memory archive.Archive that also stages
// (archive.Stager), for tests that need no disk. It is safe for
// concurrent use.
//
// It keeps the contract of package archive within one process: the digest
// is computed while the bytes stream in, a Put or Commit makes the whole
// object visible at once (a failed or cancelled one leaves the previous
// object, or none), and a reader from Open keeps the object it opened even
// if the key is replaced meanwhile. Staged bytes are invisible until
// Commit. Nothing outlives the Memory value; a test that restarts the
// process keeps the same Memory, as a disk would be kept.
type Memory struct {
	mu      sync.Mutex
	objects map[string]memObject
}

type memObject struct {
	data []byte // never modified once stored: replaced whole
	meta archive.Meta
}

var (
	_ archive.Archive = (*Memory)(nil)
	_ archive.Stager  = (*Memory)(nil)
)

// NewMemory returns an empty in-memory archive.
func NewMemory() *Memory {
	return &Memory{objects: map[string]memObject{}}
}

// Put is Stage then Commit.
func (m *Memory) Put(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Info, error) {
	st, err := m.Stage(ctx, key, meta, r)
	if err != nil {
		return archive.Info{}, err
	}
	if err := st.Commit(ctx); err != nil {
		st.Discard()
		return archive.Info{}, err
	}
	return st.Info(), nil
}

// Stage reads r to its end into a buffer of its own, hashing as it goes.
func (m *Memory) Stage(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Staged, error) {
	if key == "" {
		return nil, errors.New("archivetest: empty key")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("archivetest: stage %s: %w", key, err)
	}
	var buf bytes.Buffer
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(&buf, h), archive.ContextReader(ctx, r)); err != nil {
		return nil, fmt.Errorf("archivetest: stage %s: %w", key, err)
	}
	return &memStaged{m: m, key: key, meta: meta, data: buf.Bytes(),
		info: archive.Info{Key: key, Size: int64(buf.Len()), SHA256: hexSum(h)}}, nil
}

// Open returns a reader of the object under key as it is now.
func (m *Memory) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("archivetest: open %s: %w", key, err)
	}
	m.mu.Lock()
	o, ok := m.objects[key]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("archivetest: open %s: %w", key, archive.ErrNotFound)
	}
	return io.NopCloser(archive.ContextReader(ctx, bytes.NewReader(o.data))), nil
}

// Keys returns the keys of the stored objects, sorted.
func (m *Memory) Keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, len(m.objects))
	for k := range m.objects {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Bytes returns a copy of the object under key, and whether there is one.
func (m *Memory) Bytes(key string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[key]
	return slices.Clone(o.data), ok
}

// Meta returns the metadata the object under key was stored with.
func (m *Memory) Meta(key string) (archive.Meta, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[key]
	return o.meta, ok
}

// memStaged is one Stage's bytes, held until Commit or Discard.
type memStaged struct {
	m    *Memory
	key  string
	meta archive.Meta
	info archive.Info

	mu        sync.Mutex
	data      []byte
	committed bool
	discarded bool
}

func (s *memStaged) Info() archive.Info { return s.info }

// Commit stores the staged bytes under the key, replacing what was there.
func (s *memStaged) Commit(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.committed:
		return nil
	case s.discarded:
		return fmt.Errorf("archivetest: commit %s: already discarded", s.key)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("archivetest: commit %s: %w", s.key, err)
	}
	s.m.mu.Lock()
	s.m.objects[s.key] = memObject{data: s.data, meta: s.meta}
	s.m.mu.Unlock()
	s.committed = true
	return nil
}

// Discard drops the staged bytes unless they were committed.
func (s *memStaged) Discard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.committed {
		s.discarded, s.data = true, nil
	}
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
