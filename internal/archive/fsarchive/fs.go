// Package fsarchive stores archived messages as files under one local
// directory; it implements archive.Archive for local mode.
//
// A key such as "box/2024/05/17/abc.eml" names the file <dir>/box/2024/05/17/abc.eml.
//
// Guarantees, beyond those of package archive:
//   - Put (Stage then Commit) streams r into a temporary file ".tmp-<random>"
//     inside dir (so the final rename never crosses a filesystem), hashing as
//     it writes through one fixed 64 KiB buffer; Commit then fsyncs the file,
//     renames it over the key (rename(2) is atomic: a reader sees the old or
//     the new object, never a mix), and fsyncs the key's directory. Every
//     directory Put creates is itself made durable by fsyncing its parent
//     before the file is written. Put and Commit return only after all of
//     that succeeded.
//   - Throughput without weaker durability: the temporary files are created
//     ahead by a background goroutine (in ".pool", see takeTemp), and
//     Commits running at the same time into one directory share one fsync of
//     it, each still waiting for an fsync that began after its own rename.
//   - On any failure (reader error, context cancelled, disk full, read-only
//     folder) Put removes its temporary file and leaves the key as it was.
//   - A key can never name a file outside dir: keys are validated (no
//     absolute path, no "." or ".." or empty segment, no backslash, no
//     segment starting with ".", no control character), and all file access
//     goes through an os.Root, which also refuses symbolic links that lead
//     out of dir.
//
// What it cannot do: it does not store archive.Meta (the ledger record
// already holds mailbox, UIDL and Message-ID beside the key); a crash while
// Put runs (or an unclean exit with pre-created files) can leave a ".tmp-*"
// file behind, which no key can name and which Sweep removes; it cannot protect the files from other processes writing
// into dir.
package fsarchive

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
)

const (
	// tempPrefix starts the name of every file Put has not finished. Keys
	// cannot contain a segment starting with ".", so no key names one.
	tempPrefix = ".tmp-"
	// bufSize is the one buffer each Put copies through: memory per Put is
	// constant whatever the message size.
	bufSize = 64 << 10
	// PoolDir holds pre-created, empty temporary files (see takeTemp); it
	// starts with "." so no key can name it.
	PoolDir = ".pool"
	// poolMax bounds how many files the pool makes ahead.
	poolMax = 8
	// maxDirSyncers bounds the directories remembered for shared fsyncs.
	maxDirSyncers = 1024
	// poolMaxAge is the age after which a pool file is dropped unused.
	poolMaxAge = 10 * time.Minute
	// maxSegment is the longest file name most Linux filesystems accept.
	maxSegment = 255

	fileMode = 0o600 // archived mail is private to the service account
	dirMode  = 0o700
)

// ErrInvalidKey reports a key that is not a clean relative path inside the archive.
var ErrInvalidKey = errors.New("fsarchive: invalid key")

// Archive is a directory of archived messages. It is safe for concurrent use.
type Archive struct {
	dir      string
	root     *os.Root
	bufs     sync.Pool // of *[]byte, bufSize each
	dirSyncs sync.Map  // directory → *dirSyncer
	// dirSyncCount approximates the entries of dirSyncs.
	dirSyncCount atomic.Int64
	pool         struct {
		mu      sync.Mutex
		ready   []pooledFile
		want    int // files asked for and not yet made
		started bool
		closed  bool
		// crossDevice: a rename out of the pool failed with EXDEV (a
		// mailbox folder on another filesystem); temporary files are then
		// made in the key's own directory, as without a pool.
		crossDevice bool
		wake        chan struct{}
		stop        chan struct{}
		wg          sync.WaitGroup
	}
}

// pooledFile is a pre-created, empty temporary file.
type pooledFile struct {
	name string
	f    *os.File
	made time.Time
}

var _ archive.Stager = (*Archive)(nil)

var _ archive.Archive = (*Archive)(nil)

// New opens the archive rooted at dir, creating dir (mode 0700) if missing.
func New(dir string) (*Archive, error) {
	if dir == "" {
		return nil, errors.New("fsarchive: no archive directory given")
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("fsarchive: creating archive directory: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("fsarchive: opening archive directory: %w", err)
	}
	a := &Archive{dir: dir, root: root}
	a.bufs.New = func() any { b := make([]byte, bufSize); return &b }
	return a, nil
}

// Dir returns the directory the archive was opened on.
func (a *Archive) Dir() string { return a.dir }

// Close removes the unused pre-created files and releases the directory
// handle. Puts running concurrently fail.
func (a *Archive) Close() error {
	a.closePool()
	return a.root.Close()
}

// ValidateKey reports whether key may name an object: a relative path of
// non-empty "/"-separated segments, none "." or "..", none starting with ".",
// none longer than 255 bytes, without backslash, NUL or other control
// characters.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("%w: %q is absolute", ErrInvalidKey, key)
	}
	for _, c := range key {
		switch {
		case c == '\\':
			return fmt.Errorf("%w: %q holds a backslash", ErrInvalidKey, key)
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: %q holds a control character", ErrInvalidKey, key)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: %q has an empty segment", ErrInvalidKey, key)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: %q has a %q segment", ErrInvalidKey, key, seg)
		case strings.HasPrefix(seg, "."):
			// Also reserves ".tmp-*" for unfinished Puts.
			return fmt.Errorf("%w: %q has a segment starting with \".\"", ErrInvalidKey, key)
		case len(seg) > maxSegment:
			return fmt.Errorf("%w: %q has a segment longer than %d bytes", ErrInvalidKey, key, maxSegment)
		}
	}
	return nil
}

// Put streams r into key and returns once the file and its directory entry
// are on disk. See the package doc for the steps and what a failure leaves.
func (a *Archive) Put(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Info, error) {
	st, err := a.Stage(ctx, key, meta, r)
	if err != nil {
		return archive.Info{}, err
	}
	if err := st.Commit(ctx); err != nil {
		return archive.Info{}, err
	}
	return st.Info(), nil
}

// Stage streams r into a temporary file in the key's directory (taken from
// the pool of pre-created files when one is ready) and hashes it; the file
// stays open, unsynced, until Commit or Discard.
func (a *Archive) Stage(ctx context.Context, key string, _ archive.Meta, r io.Reader) (archive.Staged, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, a.putErr(key, err)
	}
	parent := path.Dir(key)
	if err := a.mkdirs(parent); err != nil {
		return nil, a.putErr(key, err)
	}
	tmp, f, err := a.takeTemp(parent)
	if err != nil {
		return nil, a.putErr(key, fmt.Errorf("creating temporary file: %w", err))
	}
	info, err := a.fill(ctx, f, r)
	if err != nil {
		f.Close()
		_ = a.root.Remove(tmp) // best effort: Sweep removes a leftover
		return nil, a.putErr(key, err)
	}
	info.Key = key
	return &staged{a: a, tmp: tmp, f: f, parent: parent, info: info}, nil
}

// staged is one Stage's temporary file.
type staged struct {
	a      *Archive
	tmp    string
	f      *os.File // nil once committed or discarded
	parent string
	info   archive.Info
}

func (s *staged) Info() archive.Info { return s.info }

// Commit fsyncs the file, renames it over the key (rename(2) is atomic:
// a reader sees the old or the new object, never a mix) and fsyncs the
// key's directory, shared with the Commits running at the same time.
func (s *staged) Commit(ctx context.Context) error {
	if s.f == nil {
		return s.a.putErr(s.info.Key, errors.New("already committed or discarded"))
	}
	f := s.f
	s.f = nil
	err := f.Sync()
	if err != nil {
		err = fmt.Errorf("fsync: %w", err)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing: %w", cerr)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		if rerr := s.a.root.Rename(s.tmp, s.info.Key); rerr != nil {
			err = fmt.Errorf("renaming into place: %w", rerr)
			if errors.Is(rerr, syscall.EXDEV) {
				s.a.pool.mu.Lock()
				s.a.pool.crossDevice = true
				s.a.pool.mu.Unlock()
			}
		}
	}
	if err != nil {
		// Best effort: a leftover is invisible under any key and Sweep removes it.
		_ = s.a.root.Remove(s.tmp)
		return s.a.putErr(s.info.Key, err)
	}
	// The rename is durable only once the directory is; until then a crash
	// may leave the previous object (or none), never a partial one.
	if err := s.a.syncDirShared(s.parent); err != nil {
		return s.a.putErr(s.info.Key, err)
	}
	return nil
}

func (s *staged) Discard() {
	if s.f == nil {
		return
	}
	s.f.Close()
	s.f = nil
	_ = s.a.root.Remove(s.tmp)
}

func (a *Archive) putErr(key string, err error) error {
	return fmt.Errorf("fsarchive: put %s in %s: %w", key, a.dir, err)
}

// fill copies r into f through one pooled buffer, hashing what it writes,
// and checks ctx between reads.
func (a *Archive) fill(ctx context.Context, f *os.File, r io.Reader) (archive.Info, error) {
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	buf := *bp
	var (
		h    hash.Hash = sha256.New()
		size int64
	)
	for {
		if err := ctx.Err(); err != nil {
			return archive.Info{}, err
		}
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return archive.Info{}, fmt.Errorf("writing: %w", err)
			}
			h.Write(buf[:n])
			size += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return archive.Info{}, fmt.Errorf("reading message: %w", rerr)
		}
	}
	return archive.Info{Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// createTemp makes a new ".tmp-<random>" file in dir, never reusing a name.
func (a *Archive) createTemp(dir string) (string, *os.File, error) {
	for range 10 {
		var rnd [12]byte
		_, _ = rand.Read(rnd[:]) // never fails (crypto/rand doc)
		name := path.Join(dir, tempPrefix+hex.EncodeToString(rnd[:]))
		f, err := a.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return name, f, err
	}
	return "", nil, errors.New("no unused temporary name after 10 tries")
}

// takeTemp returns an empty temporary file for a message going to dir: a
// pre-created one from the pool when ready, else a new one in dir. Creating
// a file (an inode) is the costly step of a small Put on some filesystems
// (measured: ~0.8 ms of kernel CPU per file on the bench machine's ext4,
// against ~8 µs to open an existing one), so a background goroutine keeps a
// few made ahead, while the caller is busy receiving the message. Pool
// files live in PoolDir, which no key can name; the rename into the key's
// directory stays on the same filesystem.
func (a *Archive) takeTemp(dir string) (string, *os.File, error) {
	a.pool.mu.Lock()
	if a.pool.closed || a.pool.crossDevice {
		a.pool.mu.Unlock()
		return a.createTemp(dir)
	}
	var t pooledFile
	var stale []pooledFile
	ok := false
	for len(a.pool.ready) > 0 && !ok {
		t = a.pool.ready[0]
		a.pool.ready = a.pool.ready[1:]
		// Sweep (of this or another process) removes temporary files an
		// hour old; a pool file is never used near that age.
		// Round(0): wall-clock age, as Sweep sees file times, also across
		// a suspend the monotonic clock does not count.
		if ok = time.Now().Round(0).Sub(t.made) < poolMaxAge; !ok {
			stale = append(stale, t)
		}
	}
	// Replace what was taken; when none was ready, the caller is faster
	// than the pool: ask for one more.
	more := 1
	if !ok {
		more = 2
	}
	a.pool.want = min(a.pool.want+more, poolMax-len(a.pool.ready))
	if !a.pool.started {
		a.pool.started = true
		a.pool.wake = make(chan struct{}, 1)
		a.pool.stop = make(chan struct{})
		a.pool.wg.Add(1)
		go a.fillPool()
	}
	a.pool.mu.Unlock()
	for _, t := range stale {
		t.f.Close()
		_ = a.root.Remove(t.name)
	}
	select {
	case a.pool.wake <- struct{}{}:
	default:
	}
	if ok {
		return t.name, t.f, nil
	}
	return a.createTemp(dir)
}

// fillPool creates the files takeTemp asked for until Close.
func (a *Archive) fillPool() {
	defer a.pool.wg.Done()
	defer func() { _ = recover() }() // the pool is an optimisation: takeTemp creates its own
	if err := a.mkdirs(PoolDir); err != nil {
		return
	}
	for {
		select {
		case <-a.pool.wake:
		case <-a.pool.stop:
			return
		}
		for {
			a.pool.mu.Lock()
			if a.pool.closed || a.pool.want <= 0 {
				a.pool.mu.Unlock()
				break
			}
			a.pool.want--
			a.pool.mu.Unlock()
			name, f, err := a.createTemp(PoolDir)
			if err != nil {
				break // takeTemp creates its own; it will wake us again
			}
			a.pool.mu.Lock()
			if a.pool.closed {
				a.pool.mu.Unlock()
				f.Close()
				_ = a.root.Remove(name)
				return
			}
			a.pool.ready = append(a.pool.ready, pooledFile{name, f, time.Now().Round(0)})
			a.pool.mu.Unlock()
		}
	}
}

// closePool stops the pool and removes the files it made but never gave out.
func (a *Archive) closePool() {
	a.pool.mu.Lock()
	if a.pool.closed {
		a.pool.mu.Unlock()
		return
	}
	a.pool.closed = true
	started := a.pool.started
	ready := a.pool.ready
	a.pool.ready = nil
	a.pool.mu.Unlock()
	if started {
		close(a.pool.stop)
		a.pool.wg.Wait()
	}
	for _, t := range ready {
		t.f.Close()
		_ = a.root.Remove(t.name)
	}
}

// syncDirShared fsyncs dir once for every caller whose rename happened
// before the fsync started: concurrent Commits into one directory share
// one flush (a group commit), each still returning only after an fsync
// that began after its own rename.
func (a *Archive) syncDirShared(dir string) error {
	v, loaded := a.dirSyncs.LoadOrStore(dir, &dirSyncer{})
	if !loaded && a.dirSyncCount.Add(1) > maxDirSyncers {
		// One entry per directory written (per mailbox per day) would
		// grow for ever in a long-running process. Forgetting them is
		// safe: a Commit holding an old syncer still fsyncs after its
		// rename; a new one merely shares less.
		a.dirSyncs.Clear()
		a.dirSyncCount.Store(0)
	}
	ds := v.(*dirSyncer)
	ticket := ds.requested.Add(1)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.synced >= ticket {
		return nil // an fsync that began after our rename has completed
	}
	target := ds.requested.Load()
	if err := a.syncDir(dir); err != nil {
		return err
	}
	ds.synced = target
	return nil
}

// dirSyncer counts the fsync requests of one directory.
type dirSyncer struct {
	requested atomic.Uint64
	mu        sync.Mutex // held while fsyncing
	synced    uint64     // every request up to this one is durable
}

// mkdirs creates dir and its missing parents inside the root. Each directory
// it creates is fsynced into its parent so that a later fsync of the file's
// own directory is enough to make the object reachable after a crash.
func (a *Archive) mkdirs(dir string) error {
	if dir == "." {
		return nil
	}
	// Fast path: the directory exists (the usual case after the first
	// message of a day).
	if fi, err := a.root.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	segs := strings.Split(dir, "/")
	for i := range segs {
		p := strings.Join(segs[:i+1], "/")
		err := a.root.Mkdir(p, dirMode)
		switch {
		case err == nil:
			if err := a.syncDir(path.Dir(p)); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			fi, serr := a.root.Stat(p)
			if serr != nil {
				return fmt.Errorf("creating directory: %w", serr)
			}
			if !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a directory", p)
			}
		default:
			return fmt.Errorf("creating directory: %w", err)
		}
	}
	return nil
}

// syncDir fsyncs a directory of the root so the entries in it are durable.
func (a *Archive) syncDir(dir string) error {
	d, err := a.root.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s for fsync: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// Open streams the stored bytes of key back. A key with no stored object
// gives an error wrapping archive.ErrNotFound. The reader fails once ctx is done.
func (a *Archive) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fsarchive: open %s: %w", key, err)
	}
	f, err := a.root.Open(key)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
			return nil, fmt.Errorf("%w: %s", archive.ErrNotFound, key)
		}
		return nil, fmt.Errorf("fsarchive: open %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fsarchive: open %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s (not a regular file)", archive.ErrNotFound, key)
	}
	return &fileReader{Reader: archive.ContextReader(ctx, f), f: f}, nil
}

// fileReader is an open object: reads stop once its context is done.
type fileReader struct {
	io.Reader
	f *os.File
}

func (r *fileReader) Close() error { return r.f.Close() }

// isNotDir reports a path whose parent is a file: no object can be there.
func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }

// Sweep removes the temporary files of Puts that never finished (a crash or
// kill mid-Put) whose modification time is older than olderThan, and
// returns how many it removed. Pass an age well above the longest Put (an
// hour is plenty): a younger file may belong to a Put still running, possibly
// in another process.
func (a *Archive) Sweep(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	err := fs.WalkDir(a.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // finished or removed meanwhile
		}
		if err != nil {
			return err
		}
		if fi.ModTime().After(cutoff) {
			return nil
		}
		if err := a.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("fsarchive: sweep: %w", err)
	}
	return removed, nil
}
