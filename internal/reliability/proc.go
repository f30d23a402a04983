package reliability

import (
	"context"
	"path/filepath"
	"time"

	"github.com/popconnector/popconnector/internal/archive/fsarchive"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/boltledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// ProcRig runs the popconn binary against a rig's servers: the rig's POP3
// source and SMTP side, with the binary's own archive and ledger in Dir.
type ProcRig struct {
	*Rig
	Bin    string
	Dir    string
	Config string
}

// NewProcRig starts a pop3test mailbox of n generated messages and a
// ScriptedSMTP running script, and writes a configuration for them.
func NewProcRig(t T, o *Options, n int, script testenv.SMTPScript, edit func(*ConfigParams)) *ProcRig {
	t.Helper()
	p := &ProcRig{Rig: NewRig(t, o, RigOptions{Script: &script}), Bin: PopconnBinary(t, o), Dir: t.TempDir()}
	ids, msgs := SeqMessages(1, n)
	p.ServePOP3(ids, msgs, nil)
	cp := ConfigParams{
		Dir: p.Dir, POPAddr: p.popAddr.Load().(string), POPTLS: "none", AllowPlaintext: true,
		POPPasswordFile: writeSecret(t, p.Dir, "pop.pass", popPassword),
		SMTPAddr:        p.SMTP.Addr, DeliverTo: p.Recipients,
	}
	if edit != nil {
		edit(&cp)
	}
	p.Config = WriteConfig(t, cp)
	return p
}

// Run runs `popconn run --once` (kill nil: to completion).
func (p *ProcRig) Run(kill *KillPlan) RunResult {
	p.T.Helper()
	p.Runs++
	return RunPopconn(p.T, p.Bin, kill, "run", "--once", "--config", p.Config)
}

// LedgerPath is the binary's ledger file.
func (p *ProcRig) LedgerPath() string { return filepath.Join(p.Dir, "ledger.db") }

// Observe reads the binary's ledger (unless unreadable) and archive.
func (p *ProcRig) Observe(ledgerUnreadable bool) Observation {
	p.T.Helper()
	o := Observation{Messages: p.Messages, Recipients: p.Recipients, OnServer: p.OnServer(),
		Received: p.SMTP.Messages(), LedgerUnreadable: ledgerUnreadable, Refusal: p.Refusal}
	o.Records = append(o.Records, p.Snapshots...)
	if !ledgerUnreadable {
		o.Records = append(o.Records, readLedgerFile(p.T, p.LedgerPath(), "sales")...)
	}
	arc, err := fsarchive.New(filepath.Join(p.Dir, "archive"))
	if err != nil {
		p.T.Fatalf("open the binary's archive: %v", err)
	}
	o.Archive = arc
	return o
}

// Row checks the binary's end state.
func (p *ProcRig) Row(name string, allowedDups int, ledgerUnreadable bool) Row {
	return Row{Scenario: name, Runs: p.Runs, Tally: Check(context.Background(), p.Observe(ledgerUnreadable)), AllowedDups: allowedDups}
}

// readLedgerFile opens a bolt ledger file a process left behind and lists
// mailbox.
func readLedgerFile(t T, path, mailbox string) []*ledger.Record {
	t.Helper()
	l, err := boltledger.Open(path, boltledger.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("open the ledger file %s: %v", path, err)
	}
	defer l.Close()
	recs, err := l.List(context.Background(), mailbox)
	if err != nil {
		t.Fatalf("list the ledger file: %v", err)
	}
	return recs
}
