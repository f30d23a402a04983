package main

// mpop, the fetch-side peer. fetchmail pays a round trip per command; mpop
// pipelines (RETR and DELE in flight together), so at an RTT it is the
// POP3 client to measure popconn's fetching against. It fetches into a
// maildir of the run directory and delivers nothing over SMTP: its rows
// compare fetching and storing, not relaying.
//
// Fairness: mpop deletes what it fetched (keep off, the default), as
// fetchmail (nokeep), the raw clients (DELE) and popconn (after_delivery:
// delete) do, so every run ends with an empty mailbox and pays for its
// DELEs and Dovecot's expunge at QUIT. mpop's maildir delivery is its
// "archive": compare it with popconn's archive-and-ledger step.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// mpopRC is the configuration of one mpop run: one account, everything
// fetched (only_new off: no earlier UIDLs count) into maildir, then
// deleted. Plain rows switch TLS off, so Dovecot's STLS is not taken up;
// TLS rows use implicit TLS (tls_starttls off, the pop3s port) and trust
// the bench CA only.
func mpopRC(popAddr string, useTLS bool, caFile, maildir, uidls string) string {
	host, port := splitHostPort(popAddr)
	var b bytes.Buffer
	fmt.Fprintf(&b, "defaults\n\naccount bench\n")
	fmt.Fprintf(&b, "host %s\nport %s\ntimeout 120\n", host, port)
	fmt.Fprintf(&b, "auth user\nuser %s\npassword %s\n", benchUser, benchPass)
	fmt.Fprintf(&b, "pipelining on\n")
	fmt.Fprintf(&b, "delivery maildir %s\nuidls_file %s\nonly_new off\nkeep off\n", maildir, uidls)
	if useTLS {
		// The server certificate names localhost and 127.0.0.1: mpop checks
		// it against host (127.0.0.1, the proxy's or Dovecot's address).
		fmt.Fprintf(&b, "tls on\ntls_starttls off\ntls_certcheck on\ntls_trust_file %s\n", caFile)
	} else {
		fmt.Fprintf(&b, "tls off\n")
	}
	return b.String()
}

// mpopCommand writes mpop's configuration and maildir into runDir and
// returns its argv and the check of what it stored.
func (e *env) mpopCommand(job Job, runDir, popAddr string) ([]string, func(*Result, string) error, error) {
	md := filepath.Join(runDir, "mpop-maildir")
	for _, sub := range []string{"", "new", "cur", "tmp"} {
		if err := os.Mkdir(filepath.Join(md, sub), 0o700); err != nil {
			return nil, nil, err
		}
	}
	rc := filepath.Join(runDir, "mpoprc")
	// mpop refuses a configuration holding a password that others can read.
	if err := os.WriteFile(rc, []byte(mpopRC(popAddr, job.TLS, e.dove.CA.CertFile, md, filepath.Join(runDir, "mpop.uidls"))), 0o600); err != nil {
		return nil, nil, err
	}
	args := []string{e.cfg.Mpop, "--file=" + rc, "--quiet", "bench"}
	check := func(res *Result, _ string) error {
		msgs, err := readMaildir(md)
		if err != nil {
			return err
		}
		res.Stored = len(msgs)
		if len(msgs) != job.Workload.Count {
			return fmt.Errorf("mpop stored %d messages, want %d", len(msgs), job.Workload.Count)
		}
		return checkMessages(msgs, job.Workload)
	}
	return args, check, nil
}

// readMaildir returns the messages in md's new/ and cur/ with CRLF line
// ends (mpop stores LF), ready for checkMessages.
func readMaildir(md string) ([][]byte, error) {
	var out [][]byte
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			return nil, err
		}
		for _, en := range entries {
			data, err := os.ReadFile(filepath.Join(md, sub, en.Name()))
			if err != nil {
				return nil, err
			}
			data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
			out = append(out, data)
		}
	}
	return out, nil
}
