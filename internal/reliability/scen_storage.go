package reliability

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/archive/fsarchive"
	"github.com/popconnector/popconnector/internal/ledger/boltledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// StorageFaultCases are scenario 5: the archive folder and the ledger file
// fail. Each must give a clear error and delete nothing from POP3.
func StorageFaultCases() []Case {
	return []Case{
		{"storage/archive-read-only", runArchiveReadOnly},
		{"storage/archive-disk-full", runArchiveDiskFull},
		{"storage/ledger-garbage-file", runLedgerGarbage},
		{"storage/ledger-damaged-pages", runLedgerDamagedPages},
		{"storage/ledger-locked", runLedgerLocked},
		{"storage/ledger-disk-full", runLedgerDiskFull},
	}
}

// mountTmpfs mounts a tmpfs on a new directory, or skips when this process
// may not mount (not root, no CAP_SYS_ADMIN).
func mountTmpfs(t T, data string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, data); err != nil {
		t.Skipf("cannot mount a tmpfs to stage the fault (needs root/CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func remount(t T, dir string, flags uintptr, data string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|flags, data); err != nil {
		t.Fatalf("remount %s: %v", dir, err)
	}
}

// useArchive points the rig at an fs archive in dir.
func useArchive(t T, r *Rig, dir string) {
	t.Helper()
	a, err := fsarchive.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	r.Archive, r.ArchiveDir = a, dir
}

// wantUntouched checks that nothing left the server and nothing was
// relayed.
func wantUntouched(t T, r *Rig, what string) {
	t.Helper()
	if n, want := len(r.OnServer()), len(r.Messages); n != want {
		t.Errorf("%s: %d of %d messages left on the server", what, n, want)
	}
	if n := len(r.SMTP.Messages()); n != 0 {
		t.Errorf("%s: %d messages relayed", what, n)
	}
}

func runArchiveReadOnly(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	dir := mountTmpfs(t, "size=8m")
	useArchive(t, r, dir)
	remount(t, dir, syscall.MS_RDONLY, "")
	ids, msgs := SeqMessages(1, 5)
	r.ServePOP3(ids, msgs, nil)
	res := r.Poll()
	if !errors.Is(res.Err, syscall.EROFS) || !strings.Contains(res.Err.Error(), "archive") {
		t.Errorf("read-only archive: err = %v, want an archive error wrapping EROFS", res.Err)
	}
	wantUntouched(t, r, "read-only archive")
	if n := len(ledgerRecords(t, r)); n != 0 {
		t.Errorf("%d ledger records for messages that could not be archived", n)
	}
	note := "error: " + errString(res.Err)
	remount(t, dir, 0, "size=8m")
	r.PollUntilDone(3)
	if !r.Done() {
		t.Errorf("not done once the archive was writable: %v", r.lastErr())
	}
	row := r.Row("storage/archive-read-only", 0)
	row.Notes = append(row.Notes, note)
	return row
}

func runArchiveDiskFull(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	dir := mountTmpfs(t, "size=64k")
	useArchive(t, r, dir)
	ids, msgs := SeqMessages(1, 2)
	ids = append(ids, "seq-900")
	msgs = append(msgs, BigMessage(900, 300_000))
	i2, m2 := SeqMessages(3, 2)
	ids, msgs = append(ids, i2...), append(msgs, m2...)
	r.ServePOP3(ids, msgs, nil)
	res := r.Poll()
	if !errors.Is(res.Err, syscall.ENOSPC) {
		t.Errorf("full archive: err = %v, want one wrapping ENOSPC", res.Err)
	}
	if n := len(r.OnServer()); n != 5 {
		t.Errorf("full archive: %d of 5 messages left on the server", n)
	}
	note := "error: " + errString(res.Err)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file left in the archive: %s", e.Name())
		}
	}
	remount(t, dir, 0, "size=16m")
	r.PollUntilDone(3)
	if !r.Done() {
		t.Errorf("not done once the disk had room: %v", r.lastErr())
	}
	row := r.Row("storage/archive-disk-full", 0)
	row.Notes = append(row.Notes, note)
	return row
}

// runLedgerGarbage: the ledger file is not a bbolt file at all.
func runLedgerGarbage(t T, o *Options) Row {
	p := NewProcRig(t, o, 5, testenv.SMTPScript{}, nil)
	garbage := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	if err := os.WriteFile(p.LedgerPath(), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	res := p.Run(nil)
	if res.Code != 1 || !strings.Contains(res.Output, "corrupt") {
		t.Errorf("garbage ledger: exit %d, want 1 with a message saying the ledger is corrupt; output:\n%s", res.Code, tail(res.Output, 10))
	}
	wantUntouched(t, p.Rig, "garbage ledger")
	p.Refusal = errors.New(lastLine(res.Output))
	row := p.Row("storage/ledger-garbage-file", 0, true)
	row.Notes = append(row.Notes, "output: "+lastLine(res.Output))
	return row
}

// runLedgerDamagedPages: a real ledger holding deferred messages has its
// data pages overwritten; the meta pages are intact.
func runLedgerDamagedPages(t T, o *Options) Row {
	var deferring atomic.Bool
	deferring.Store(true)
	p := NewProcRig(t, o, 5, testenv.SMTPScript{OnData: func(string, []string, []byte) error {
		if deferring.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}}, nil)
	p.Run(nil)
	deferred := 0
	for _, rec := range readLedgerFile(t, p.LedgerPath(), "sales") {
		if !rec.Delivered() && rec.LastError != "" {
			deferred++
		}
	}
	if deferred != 5 {
		t.Fatalf("setup: %d of 5 messages deferred in the ledger", deferred)
	}
	data, err := os.ReadFile(p.LedgerPath())
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(data) <= 2*page {
		t.Fatalf("ledger file of %d bytes has no data pages", len(data))
	}
	garbage := bytes.Repeat([]byte{0xA5, 0x5A, 0xFF, 0x00}, (len(data)-2*page)/4+1)
	copy(data[2*page:], garbage)
	if err := os.WriteFile(p.LedgerPath(), data, 0o600); err != nil {
		t.Fatal(err)
	}
	deferring.Store(false)
	res := p.Run(nil)
	if res.Code == 0 || !strings.Contains(strings.ToLower(res.Output), "corrupt") {
		t.Errorf("damaged ledger: exit %d, want non-zero with an error saying the ledger is corrupt; output:\n%s", res.Code, tail(res.Output, 10))
	}
	wantUntouched(t, p.Rig, "damaged ledger")
	p.Refusal = errors.New(lastLine(res.Output))
	row := p.Row("storage/ledger-damaged-pages", 0, true)
	row.Notes = append(row.Notes, "output: "+lastLine(res.Output))
	return row
}

// runLedgerLocked: another process holds the ledger file (here: this
// one); popconn must wait its timeout and give up clearly, then work once
// the file is free.
func runLedgerLocked(t T, o *Options) Row {
	p := NewProcRig(t, o, 5, testenv.SMTPScript{}, nil)
	holder, err := boltledger.Open(p.LedgerPath(), boltledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Run(nil)
	holder.Close()
	if res.Code != 1 || !strings.Contains(res.Output, "locked") {
		t.Errorf("locked ledger: exit %d, want 1 with a message saying the ledger is locked; output:\n%s", res.Code, tail(res.Output, 10))
	}
	wantUntouched(t, p.Rig, "locked ledger")
	note := "output: " + lastLine(res.Output)
	res = p.Run(nil)
	if res.Code != 0 {
		t.Errorf("run once the ledger was free: exit %d\n%s", res.Code, tail(res.Output, 10))
	}
	row := p.Row("storage/ledger-locked", 0, false)
	if row.Delivered != 5 {
		t.Errorf("delivered %d of 5 once the ledger was free", row.Delivered)
	}
	row.Notes = append(row.Notes, note)
	return row
}

// runLedgerDiskFull: the ledger's file system fills up while a poll runs.
// Ledger writes fail; nothing may be deleted. A write that fails after
// DATA was accepted leaves the delivery unrecorded: that message is
// delivered again, the accepted duplicate window.
func runLedgerDiskFull(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	dir := mountTmpfs(t, "size=512k")
	l, err := boltledger.Open(filepath.Join(dir, "ledger.db"), boltledger.Options{Timeout: time.Second, Now: r.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r.Ledger = l
	ids, msgs := SeqMessages(1, 40)
	r.ServePOP3(ids, msgs, nil)
	// Fill the file system: bbolt's next growth of the file fails.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	var firstErr error
	for i := 0; i < 5 && firstErr == nil; i++ {
		res := r.Poll()
		firstErr = res.Err
		r.Clock.Advance(5 * time.Minute)
	}
	if firstErr == nil || !errors.Is(firstErr, syscall.ENOSPC) && !strings.Contains(firstErr.Error(), "no space") {
		t.Errorf("full ledger file system: err = %v, want one saying no space is left", firstErr)
	}
	os.Remove(filler)
	r.PollUntilDone(4)
	if !r.Done() {
		t.Errorf("not done once the ledger had room: %v", r.lastErr())
	}
	row := r.Row("storage/ledger-disk-full", 1)
	row.Notes = append(row.Notes, "error: "+errString(firstErr))
	return row
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	l := lines[len(lines)-1]
	if len(l) > 300 {
		l = l[:297] + "..."
	}
	return l
}
