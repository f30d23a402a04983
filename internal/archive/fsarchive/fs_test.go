package fsarchive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/archive"
	"github.com/popconnector/popconnector/internal/archive/archivetest"
)

func newArchive(t testing.TB, dir string) *Archive {
	t.Helper()
	a, err := New(dir)
	if err != nil {
		t.Fatalf("New(%q): %v", dir, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestContract(t *testing.T) {
	archivetest.Run(t, func(t *testing.T) archive.Archive { return newArchive(t, t.TempDir()) })
}

// listFiles returns every path under dir, relative and slash-separated.
// listFiles lists everything under dir but the pool of pre-created
// temporary files (TestTempPool covers those).
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == PoolDir {
			return filepath.SkipDir
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return out
}

// wantNoTemp fails if a ".tmp-" file is left anywhere under dir.
func wantNoTemp(t *testing.T, dir string) {
	t.Helper()
	for _, p := range listFiles(t, dir) {
		if strings.HasPrefix(filepath.Base(p), tempPrefix) {
			t.Fatalf("temporary file %s left behind", p)
		}
	}
}

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"user@example.com/2024/05/17/0123abcd.eml", true},
		{"a", true},
		{"a/b c/d+e=f,g~h.eml", true},
		{"Mailbox-1/x.eml", true},
		{"", false},
		{"/etc/passwd", false},
		{"../x.eml", false},
		{"a/../../x.eml", false},
		{"a/..", false},
		{"..", false},
		{".", false},
		{"a/./b", false},
		{"a//b", false},
		{"a/", false},
		{"a\\..\\b", false},
		{"a\\b", false},
		{"a/.hidden", false},
		{"a/.tmp-0123", false},
		{"a/b\x00c", false},
		{"a/b\nc", false},
		{"a/b\x7fc", false},
		{strings.Repeat("x", 255), true},
		{strings.Repeat("x", 256), false},
	}
	for _, tt := range tests {
		err := ValidateKey(tt.key)
		if tt.ok && err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tt.key, err)
		}
	}
	// Keys the pipeline makes are valid.
	k := archive.KeyFor("user@example.com", "UID+/..\\x", time.Now())
	if err := ValidateKey(k); err != nil {
		t.Errorf("ValidateKey(KeyFor(...)) = %v", err)
	}
}

func TestPutAndOpenRejectTraversal(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "archive")
	a := newArchive(t, dir)
	for _, k := range []string{"../escaped.eml", "a/../../escaped.eml", "/tmp/escaped.eml", "..\\escaped.eml", ".tmp-x", "a//b"} {
		if _, err := a.Put(context.Background(), k, archive.Meta{}, strings.NewReader("x")); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := a.Open(context.Background(), k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
	if got := listFiles(t, parent); len(got) != 1 || got[0] != "archive" {
		t.Fatalf("files after rejected Puts: %v, want only the archive directory", got)
	}
	if _, err := os.Stat("/tmp/escaped.eml"); err == nil {
		t.Fatalf("/tmp/escaped.eml exists")
	}
}

// A symbolic link planted inside the archive cannot lead a Put outside it.
func TestSymlinkCannotEscape(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "box")); err != nil {
		t.Fatal(err)
	}
	a := newArchive(t, dir)
	if _, err := a.Put(context.Background(), "box/x.eml", archive.Meta{}, strings.NewReader("x")); err == nil {
		t.Fatalf("Put through a symlink leading outside succeeded")
	}
	if got := listFiles(t, outside); len(got) != 0 {
		t.Fatalf("files written outside the archive: %v", got)
	}
}

func TestPutWritesPrivateFileAtKey(t *testing.T) {
	dir := t.TempDir()
	a := newArchive(t, dir)
	k := "user@example.com/2024/05/17/abc.eml"
	if _, err := a.Put(context.Background(), k, archive.Meta{}, strings.NewReader("hello\r\n")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(k)))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("archived file mode %v, want no group/other access", fi.Mode().Perm())
	}
	want := []string{"user@example.com", "user@example.com/2024", "user@example.com/2024/05", "user@example.com/2024/05/17", k}
	if got := listFiles(t, dir); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("files = %v, want %v", got, want)
	}
}

// 20 MB stream through Put and back: the bytes are exact and the
// allocations made do not grow with the message.
func TestLargeStreamFlatMemory(t *testing.T) {
	const size = 20 << 20
	a := newArchive(t, t.TempDir())
	ctx := context.Background()
	wantN, wantSum := archivetest.Digest(t, archivetest.Stream(7, size))
	// Warm the buffer pool and the directories so the measured Put is a
	// steady-state one.
	if _, err := a.Put(ctx, "box/warm.eml", archive.Meta{}, strings.NewReader("warm")); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	info, err := a.Put(ctx, "box/big.eml", archive.Meta{}, archivetest.Stream(7, size))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != wantN || info.SHA256 != wantSum {
		t.Fatalf("Put = %+v, want size %d sha256 %s", info, wantN, wantSum)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("Put of %d bytes allocated %d bytes", size, allocated)
	if allocated > 1<<20 {
		t.Fatalf("Put of %d bytes allocated %d bytes; memory grows with the message", size, allocated)
	}
	rc, err := a.Open(ctx, "box/big.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if n, sum := archivetest.Digest(t, rc); n != wantN || sum != wantSum {
		t.Fatalf("read back %d bytes %s, want %d bytes %s", n, sum, wantN, wantSum)
	}
}

// mountTmpfs mounts a fresh tmpfs on a temporary directory, or skips the
// test when this process may not mount (not root, no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, flags uintptr, data string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, data); err != nil {
		t.Skipf("cannot mount a tmpfs to stage the fault (needs root/CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// A read-only archive folder gives a clear error and creates nothing.
func TestReadOnlyFolder(t *testing.T) {
	var dir string
	if os.Geteuid() == 0 {
		// root ignores permission bits, so stage a real read-only filesystem.
		dir = mountTmpfs(t, syscall.MS_RDONLY, "size=1m")
	} else {
		dir = t.TempDir()
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	a := newArchive(t, dir)
	for _, k := range []string{"top.eml", "box/2024/05/17/x.eml"} {
		_, err := a.Put(context.Background(), k, archive.Meta{}, strings.NewReader("message"))
		if err == nil {
			t.Fatalf("Put(%q) into a read-only folder succeeded", k)
		}
		if !errors.Is(err, syscall.EROFS) && !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("Put(%q) = %v, want EROFS or permission denied", k, err)
		}
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error %q does not name the key", err)
		}
		t.Logf("read-only error: %v", err)
	}
	if got := listFiles(t, dir); len(got) != 0 {
		t.Fatalf("files created in a read-only folder: %v", got)
	}
}

// A full disk fails the Put with ENOSPC and leaves neither the object nor
// the temporary file.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, 0, "size=1m")
	a := newArchive(t, dir)
	k := "box/2024/05/17/big.eml"
	_, err := a.Put(context.Background(), k, archive.Meta{}, archivetest.Stream(1, 4<<20))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put of 4 MiB into 1 MiB = %v, want ENOSPC", err)
	}
	t.Logf("disk-full error: %v", err)
	if _, err := a.Open(context.Background(), k); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Open after failed Put = %v, want ErrNotFound", err)
	}
	wantNoTemp(t, dir)
	// Space is back: a small message fits.
	if _, err := a.Put(context.Background(), k, archive.Meta{}, strings.NewReader("small")); err != nil {
		t.Fatalf("Put after freeing space: %v", err)
	}
}

// A file where a directory of the key is expected gives a clear error.
func TestFileWhereDirectoryExpected(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "box"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newArchive(t, dir)
	_, err := a.Put(context.Background(), "box/2024/x.eml", archive.Meta{}, strings.NewReader("message"))
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Put under a file = %v, want a \"not a directory\" error", err)
	}
	if _, err := a.Open(context.Background(), "box/2024/x.eml"); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Open under a file = %v, want ErrNotFound", err)
	}
	if got := listFiles(t, dir); len(got) != 1 {
		t.Fatalf("files = %v, want only the planted file", got)
	}
}

func TestOpenDirectoryIsNotFound(t *testing.T) {
	a := newArchive(t, t.TempDir())
	if _, err := a.Put(context.Background(), "box/x.eml", archive.Meta{}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Open(context.Background(), "box"); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Open of a directory = %v, want ErrNotFound", err)
	}
}

type errAfter struct {
	r   io.Reader
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

// A reader failing mid-stream leaves no object and no temporary file.
func TestReaderErrorLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	a := newArchive(t, dir)
	boom := errors.New("connection reset")
	_, err := a.Put(context.Background(), "box/x.eml", archive.Meta{}, &errAfter{r: archivetest.Stream(1, 1<<20), err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	wantNoTemp(t, dir)
	if got := listFiles(t, dir); strings.Join(got, ",") != "box" {
		t.Fatalf("files = %v, want only the directory", got)
	}
}

// Replacement is atomic: a reader of the old object keeps reading it whole
// while the key already yields the new one.
func TestReplaceIsAtomicForReaders(t *testing.T) {
	dir := t.TempDir()
	a := newArchive(t, dir)
	ctx := context.Background()
	old := bytes.Repeat([]byte("old "), 100<<10)
	if _, err := a.Put(ctx, "box/x.eml", archive.Meta{}, bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	rc, err := a.Open(ctx, "box/x.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	head := make([]byte, 10)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "box/x.eml", archive.Meta{}, strings.NewReader("new")); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); !bytes.Equal(got, old) {
		t.Fatalf("old reader saw %d bytes, want the whole old object of %d bytes", len(got), len(old))
	}
	rc2, err := a.Open(ctx, "box/x.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.Close()
	if b, _ := io.ReadAll(rc2); string(b) != "new" {
		t.Fatalf("new reader saw %q, want %q", b, "new")
	}
	wantNoTemp(t, dir)
}

func TestOpenHonoursContext(t *testing.T) {
	a := newArchive(t, t.TempDir())
	if _, err := a.Put(context.Background(), "box/x.eml", archive.Meta{}, archivetest.Stream(1, 256<<10)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := a.Open(ctx, "box/x.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	cancel()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Fatalf("reading after cancel = %v, want context.Canceled", err)
	}
}

func TestSweep(t *testing.T) {
	dir := t.TempDir()
	a := newArchive(t, dir)
	ctx := context.Background()
	if _, err := a.Put(ctx, "box/kept.eml", archive.Meta{}, strings.NewReader("kept")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{".tmp-top", "box/.tmp-old1", "box/.tmp-old2"} {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.WriteFile(full, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, old, old); err != nil {
			t.Fatal(err)
		}
	}
	// A young temporary file may belong to a Put still running.
	if err := os.WriteFile(filepath.Join(dir, "box", ".tmp-running"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := a.Sweep(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("Sweep removed %d files, want 3", n)
	}
	want := "box,box/.tmp-running,box/kept.eml"
	if got := strings.Join(listFiles(t, dir), ","); got != want {
		t.Fatalf("files after Sweep = %s, want %s", got, want)
	}
}

func TestNewRejectsFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(f); err == nil {
		t.Fatalf("New on a regular file succeeded")
	}
}

func BenchmarkPut(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"20KB", 20 << 10}, {"1MB", 1 << 20}} {
		b.Run(bc.name, func(b *testing.B) {
			a := newArchive(b, b.TempDir())
			data, err := io.ReadAll(archivetest.Stream(1, int64(bc.size)))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				// A new key each time, in one day's directory, as a poll run does.
				key := fmt.Sprintf("user@example.com/2024/05/17/%08d.eml", i)
				if _, err := a.Put(ctx, key, archive.Meta{}, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// The pool of pre-created files: many Puts (sequential and concurrent)
// store exactly their bytes, a stale pool file is never used, and Close
// leaves no temporary file behind.
func TestTempPool(t *testing.T) {
	dir := t.TempDir()
	a, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body := func(i int) string { return strings.Repeat(fmt.Sprintf("message %d\r\n", i), i+1) }
	for i := range 20 {
		if _, err := a.Put(ctx, fmt.Sprintf("box/2026/01/02/m%d.eml", i), archive.Meta{}, strings.NewReader(body(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Stage several, then commit them at once: their directory fsyncs are
	// shared; every object must still hold its own bytes.
	var stages []archive.Staged
	for i := 20; i < 40; i++ {
		st, err := a.Stage(ctx, fmt.Sprintf("box/2026/01/02/m%d.eml", i), archive.Meta{}, strings.NewReader(body(i)))
		if err != nil {
			t.Fatal(err)
		}
		stages = append(stages, st)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(stages))
	for i, st := range stages {
		wg.Go(func() { errs[i] = st.Commit(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Commit %d: %v", i, err)
		}
		stages[i].Discard() // after Commit: does nothing
	}
	for i := range 40 {
		got, err := os.ReadFile(filepath.Join(dir, "box", "2026", "01", "02", fmt.Sprintf("m%d.eml", i)))
		if err != nil || string(got) != body(i) {
			t.Fatalf("m%d.eml = %q, %v; want %q", i, got, err, body(i))
		}
	}
	// A discarded stage leaves nothing under its key.
	st, err := a.Stage(ctx, "box/2026/01/02/dropped.eml", archive.Meta{}, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	st.Discard()
	if _, err := os.Stat(filepath.Join(dir, "box", "2026", "01", "02", "dropped.eml")); !os.IsNotExist(err) {
		t.Fatalf("discarded stage visible: %v", err)
	}
	// A pool file older than poolMaxAge is dropped, not used.
	a.pool.mu.Lock()
	for i := range a.pool.ready {
		a.pool.ready[i].made = time.Now().Add(-2 * poolMaxAge)
	}
	oldNames := map[string]bool{}
	for _, p := range a.pool.ready {
		oldNames[p.name] = true
	}
	a.pool.mu.Unlock()
	st, err = a.Stage(ctx, "box/2026/01/02/fresh.eml", archive.Meta{}, strings.NewReader("fresh"))
	if err != nil {
		t.Fatal(err)
	}
	if oldNames[st.(*staged).tmp] {
		t.Fatalf("a stale pool file was used: %s", st.(*staged).tmp)
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for name := range oldNames {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name))); !os.IsNotExist(err) {
			t.Fatalf("stale pool file %s not removed: %v", name, err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.Close() // a second Close does nothing (and does not panic)
	entries, err := os.ReadDir(filepath.Join(dir, PoolDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("pool files left after Close: %v", entries)
	}
}

// The directories remembered for shared fsyncs stay bounded however many
// a long-running process writes into.
func TestDirSyncersBounded(t *testing.T) {
	dir := t.TempDir()
	a := newArchive(t, dir)
	for i := range maxDirSyncers + 10 {
		name := fmt.Sprintf("d%04d", i)
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := a.syncDirShared(name); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	a.dirSyncs.Range(func(_, _ any) bool { n++; return true })
	if n > maxDirSyncers {
		t.Fatalf("%d directories remembered, want at most %d", n, maxDirSyncers)
	}
}
