package s3archive

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/popconnector/popconnector/internal/archive"
)

// The spool makes the Archive an archive.Stager: Stage copies a message
// into a local file (Options.SpoolDir), so that the POP3 side can go on to
// the next message at once, and Commit uploads that file with Put (on the
// caller's goroutine, so that the uploads of several messages overlap the
// transfer of others). A committed file is kept, within SpoolFiles and
// SpoolBytes, and Open serves the key from it: the relay reads the bytes
// it just archived from the local disk, not back from S3 (one GetObject
// less per message on the delivery path). The kept copy is the file Put
// read, whose SHA-256 Put checked against the staged one; it holds exactly
// the object's bytes.
//
// Memory stays flat: the bytes go through a file, never a buffer of the
// message's size. What it cannot do: a process killed between Stage and
// Commit leaves its spool directory behind (named popconn-spool-*; the
// operating system's temporary-file cleaning, or a new Lambda container,
// removes it).

// spool is the local side of the Archive's Stager.
type spool struct {
	parent   string // Options.SpoolDir
	maxFiles int
	maxBytes int64

	mu      sync.Mutex
	madeDir bool
	dir     string // this Archive's own directory under parent, made at first use
	errDir  error
	kept    map[string]*list.Element // by archive key
	order   *list.List               // of *keptFile, oldest first
	bytes   int64                    // sizes of the kept files
}

// keptFile is a committed message's local copy.
type keptFile struct {
	key, path string
	size      int64
}

func newSpool(parent string, files int, bytes int64) *spool {
	return &spool{parent: parent, maxFiles: files, maxBytes: bytes, kept: map[string]*list.Element{}, order: list.New()}
}

// directory makes the spool's directory on first use.
func (s *spool) directory() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.madeDir {
		s.madeDir = true
		s.dir, s.errDir = os.MkdirTemp(s.parent, "popconn-spool-")
	}
	return s.dir, s.errDir
}

// keep records path as key's local copy and evicts the oldest copies over
// the limits. A second copy of a key replaces the first.
func (s *spool) keep(key, path string, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(key)
	s.kept[key] = s.order.PushBack(&keptFile{key: key, path: path, size: size})
	s.bytes += size
	for s.order.Len() > s.maxFiles || (s.bytes > s.maxBytes && s.order.Len() > 0) {
		s.dropLocked(s.order.Front().Value.(*keptFile).key)
	}
}

func (s *spool) dropLocked(key string) {
	e, ok := s.kept[key]
	if !ok {
		return
	}
	kf := e.Value.(*keptFile)
	s.order.Remove(e)
	delete(s.kept, key)
	s.bytes -= kf.size
	_ = os.Remove(kf.path)
}

// open opens key's local copy, if one is kept: reads stop once ctx is
// done. A copy evicted (its file removed) after the lookup is not found,
// and S3 serves it.
func (s *spool) open(ctx context.Context, key string) (io.ReadCloser, bool) {
	s.mu.Lock()
	e, ok := s.kept[key]
	var path string
	if ok {
		path = e.Value.(*keptFile).path
	}
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	return &spoolReader{Reader: archive.ContextReader(ctx, f), f: f}, true
}

// spoolReader is a kept copy opened for reading.
type spoolReader struct {
	io.Reader
	f *os.File
}

func (r *spoolReader) Close() error { return r.f.Close() }

var _ archive.Stager = (*Archive)(nil)

// Stage copies r into a file of the spool, hashing it, and returns the
// staged message; nothing is sent to S3 until Commit.
func (a *Archive) Stage(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Staged, error) {
	if _, err := a.checkKey(key); err != nil {
		return nil, err
	}
	dir, err := a.spool.directory()
	if err != nil {
		return nil, fmt.Errorf("s3archive: spool: %w", err)
	}
	f, err := os.CreateTemp(dir, "msg-")
	if err != nil {
		return nil, fmt.Errorf("s3archive: spool: %w", err)
	}
	st := &staged{a: a, key: key, meta: meta, path: f.Name()}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), archive.ContextReader(ctx, r))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(st.path)
		return nil, fmt.Errorf("s3archive: spool %s: %w", key, err)
	}
	st.info = archive.Info{Key: key, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	return st, nil
}

// staged is one message in the spool, not yet in S3.
type staged struct {
	a    *Archive
	key  string
	meta archive.Meta
	path string
	info archive.Info

	mu   sync.Mutex
	done bool // committed or discarded
}

func (s *staged) Info() archive.Info { return s.info }

// Commit uploads the spooled file with Put and keeps it as the key's
// local copy. A failed Commit removes the file (the message is fetched
// again from the POP3 server, where it still is).
func (s *staged) Commit(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return errors.New("s3archive: staged message already committed or discarded")
	}
	s.done = true
	info, err := s.upload(ctx)
	if err != nil {
		_ = os.Remove(s.path)
		return err
	}
	if info.SHA256 != s.info.SHA256 || info.Size != s.info.Size {
		_ = os.Remove(s.path)
		return fmt.Errorf("s3archive: %s: uploaded %d bytes (sha256 %s), staged %d (%s): the spool file changed",
			s.key, info.Size, info.SHA256, s.info.Size, s.info.SHA256)
	}
	s.a.spool.keep(s.key, s.path, s.info.Size)
	return nil
}

func (s *staged) upload(ctx context.Context) (archive.Info, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return archive.Info{}, fmt.Errorf("s3archive: spool %s: %w", s.key, err)
	}
	defer f.Close()
	return s.a.Put(ctx, s.key, s.meta, f)
}

// Discard removes the spooled file of a message never committed.
func (s *staged) Discard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.done = true
	_ = os.Remove(s.path)
}
