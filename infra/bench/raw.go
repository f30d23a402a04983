package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/popconnector/popconnector/internal/tlsmode"
	"io"
	"os"
	"strings"
	"time"

	"github.com/popconnector/popconnector/internal/pop3"
)

// rawReport is what `bench raw` prints as its last line.
type rawReport struct {
	Messages int
	Bytes    int64
}

// rawMain is `bench raw`: the ceiling for this POP3 server on this machine.
// It logs in, LISTs, RETRs every message into io.Discard (through
// internal/pop3's streaming reader: dot-unstuffing, nothing kept), DELEs
// them all and QUITs, so the mailbox ends empty as after the other tools.
func rawMain(args []string) int {
	fs := flag.NewFlagSet("bench raw", flag.ContinueOnError)
	addr := fs.String("addr", "", "POP3 server host:port")
	user := fs.String("user", "", "user name")
	passFile := fs.String("pass-file", "", "file holding the password")
	useTLS := fs.Bool("tls", false, "implicit TLS (pop3s)")
	caFile := fs.String("ca-file", "", "PEM CA to verify the server with")
	serverName := fs.String("server-name", "", "name to verify the certificate for")
	depth := fs.Int("pipeline", 0, "keep this many RETRs (and DELEs) in flight (RFC 2449 PIPELINING; rawpipe.go); 0: internal/pop3, one at a time")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fetch := rawFetch
	if *depth > 0 {
		fetch = func(addr, user, passFile string, useTLS bool, caFile, serverName string) error {
			return rawPipelined(addr, user, passFile, useTLS, caFile, serverName, *depth)
		}
	}
	if err := fetch(*addr, *user, *passFile, *useTLS, *caFile, *serverName); err != nil {
		fmt.Fprintf(os.Stderr, "bench raw: %v\n", err)
		return 1
	}
	return 0
}

func rawFetch(addr, user, passFile string, useTLS bool, caFile, serverName string) error {
	pass, err := os.ReadFile(passFile)
	if err != nil {
		return err
	}
	opts := pop3.Options{Addr: addr, TLS: tlsmode.None, AllowPlaintextAuth: true, Timeout: 120 * time.Second}
	if useTLS {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", caFile)
		}
		opts.TLS, opts.AllowPlaintextAuth = tlsmode.Implicit, false
		opts.TLSConfig = &tls.Config{RootCAs: pool}
		opts.ServerName = serverName
	}
	ctx := context.Background()
	c, err := pop3.Dial(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(ctx, user, strings.TrimRight(string(pass), "\r\n")); err != nil {
		return err
	}
	list, err := c.List(ctx)
	if err != nil {
		return err
	}
	var rep rawReport
	nums := make([]int, 0, len(list))
	for _, m := range list {
		body, err := c.Retr(ctx, m.Num)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, body)
		if cerr := body.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("RETR %d: %w", m.Num, err)
		}
		rep.Messages++
		rep.Bytes += n
		nums = append(nums, m.Num)
	}
	if len(nums) > 0 {
		if err := c.Dele(ctx, nums...); err != nil {
			return err
		}
	}
	if err := c.Quit(ctx); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}
