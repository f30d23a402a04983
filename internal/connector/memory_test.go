package connector_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// writeLargeMessage streams a generated message of about size bytes into
// the maildir (never holding it in memory) and returns its SHA-256.
func writeLargeMessage(t *testing.T, maildir string, size int) string {
	t.Helper()
	newDir := filepath.Join(maildir, "new")
	st, err := os.Stat(newDir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(maildir, "tmp", "large.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	w := bufio.NewWriter(io.MultiWriter(f, h))
	fmt.Fprintf(w, "From: scanner@office.example\r\nTo: sales@isp.example\r\nSubject: large scan\r\nMessage-ID: <large@office.example>\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	line := []byte("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n")
	for n := 0; n < size; n += len(line) {
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sys := st.Sys().(*syscall.Stat_t)
	os.Chown(tmp, int(sys.Uid), int(sys.Gid))
	if err := os.Rename(tmp, filepath.Join(newDir, "1700000000.large.test")); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// A 50 MB message is fetched, archived and relayed with the heap far
// below the message size: every stage streams.
func TestLargeMessageFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB transfer skipped in -short mode")
	}
	const size = 50 << 20
	r := newRig(t, rigOptions{})
	want := writeLargeMessage(t, r.dovecot.Maildir("sales"), size)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	res := r.poll()
	close(stop)
	<-done
	if res.Err != nil || res.Delivered != 1 {
		t.Fatalf("poll: %+v", res)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("50 MB message: heap in use %d MB before, peak %d MB during the poll (growth %d MB)", base.HeapInuse>>20, peak.Load()>>20, growth>>20)
	if growth > 8<<20 {
		t.Errorf("heap grew by %d MB relaying a %d MB message; the pipeline is not streaming", growth>>20, size>>20)
	}
	rec := r.records()[0]
	if rec.SHA256 != want {
		t.Errorf("archive digest %s, served message %s", rec.SHA256, want)
	}
	got := r.sink.WaitFor(t, 1, 30*time.Second)
	rest, _ := stripAdded(t, got[0].Data)
	if digest(rest) != want {
		t.Errorf("relayed bytes differ from the served message")
	}
}
