// Package cli is the popconn command line: run, check-config, status,
// test-relay, test-notify, test-login and example-config. It parses flags, sets up logging and hands over to
// package app; it holds no pipeline logic.
//
// Exit codes: 0 success; 1 a mailbox or the relay failed (mail is safe and
// will be retried); 2 bad usage or an invalid configuration.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
)

const usage = `popconn — POP3 connector for Exchange

Usage:
  popconn run [--config FILE] [--once]   poll every mailbox (a loop at poll_interval; --once: one round)
  popconn check-config [--config FILE]   validate the configuration and report every problem
  popconn status [--config FILE]         per mailbox: on server, delivered, deferred, rejected, badmail
  popconn test-relay [--config FILE]     per route: connect, STARTTLS, EHLO, AUTH, MAIL FROM the postmaster,
                                         RCPT TO every configured Exchange address, RSET, QUIT (no message is sent)
  popconn test-notify [--config FILE]    send a test notification to the postmaster through the configured route
  popconn test-login [--config FILE] [--mailbox ID]
                                         per mailbox: connect, TLS, CAPA, sign in, STAT, QUIT (never RETR or DELE)
  popconn example-config                 print a commented example configuration
  popconn version

FILE defaults to ./popconn.yaml. run stops cleanly on SIGINT/SIGTERM: the
message in flight finishes; a second signal aborts at once (nothing is lost).
`

// Version is set at build time with -ldflags "-X ...cli.Version=...".
var Version = "dev"

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(rest, stdout, stderr)
	case "check-config":
		return checkConfigCmd(rest, stdout, stderr)
	case "status":
		return statusCmd(rest, stdout, stderr)
	case "test-relay":
		return testRelayCmd(rest, stdout, stderr)
	case "test-notify":
		return testNotifyCmd(rest, stdout, stderr)
	case "test-login":
		return testLoginCmd(rest, stdout, stderr)
	case "example-config":
		stdout.Write(config.Example())
		return 0
	case "version":
		fmt.Fprintln(stdout, "popconn", Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "popconn: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("popconn "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "popconn.yaml", "configuration file")
	return fs, path
}

func loadConfig(path string, stderr io.Writer) (*config.Config, int) {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "popconn: %v\n", err)
		return nil, 2
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "popconn: warning: %s\n", w)
	}
	return cfg, 0
}

func checkConfigCmd(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("check-config", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Every secret is resolved now, so a wrong reference shows here,
	// together with every other problem and its line, rather than at the
	// first poll; values are never printed.
	secrets := config.NewSecrets()
	cfg, err := config.LoadChecked(context.Background(), *path, secrets)
	for _, w := range secrets.Warnings() {
		fmt.Fprintf(stderr, "popconn: warning: %s\n", w)
	}
	if err != nil {
		fmt.Fprintf(stderr, "popconn: %v\n", err)
		return 2
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "popconn: warning: %s\n", w)
	}
	enabled := 0
	for _, m := range cfg.Mailboxes {
		if m.Enabled {
			enabled++
		}
	}
	routes := app.ConfigRoutes(cfg)
	if len(routes) == 1 {
		fmt.Fprintf(stdout, "%s: valid; %d mailbox(es), %d enabled; delivery to %s (tls %s)\n", *path, len(cfg.Mailboxes), enabled, routes[0].Addr(), routes[0].TLS)
	} else {
		fmt.Fprintf(stdout, "%s: valid; %d mailbox(es), %d enabled; %d routes\n", *path, len(cfg.Mailboxes), enabled, len(routes))
		for _, r := range routes {
			fmt.Fprintf(stdout, "  route %s: %s (tls %s), address spaces %s, cost %d\n", r.Name, r.Addr(), r.TLS, strings.Join(r.AddressSpaces, " "), r.Cost)
		}
	}
	return 0
}

// NewLogger builds the slog logger the configuration asks for: text on a
// terminal, JSON otherwise (format auto).
func NewLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.Format
	if format == "" || format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runCmd(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("run", stderr)
	once := fs.Bool("once", false, "poll every mailbox once and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, code := loadConfig(*path, stderr)
	if cfg == nil {
		return code
	}
	log := NewLogger(cfg.Log, stderr)
	a, err := app.Build(cfg, app.Stores{}, nil)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	defer a.Close()
	a.SetLogger(log)

	// First signal: drain (finish the message in flight). Second: abort.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drain := make(chan struct{})
	a.Connector.Drain = drain
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		log.Info("stopping after the message in flight; signal again to abort", "signal", s.String())
		close(drain)
		if _, ok := <-sigs; ok {
			cancel()
		}
	}()

	for {
		failed := pollRound(ctx, a, log)
		if *once {
			if failed > 0 {
				return 1
			}
			return 0
		}
		select {
		case <-drain:
			log.Info("stopped")
			return 0
		case <-time.After(cfg.PollInterval):
		}
	}
}

// pollRound polls every mailbox once, logs a summary line per mailbox and
// returns how many mailboxes failed.
func pollRound(ctx context.Context, a *app.App, log *slog.Logger) int {
	results := a.Connector.PollAll(ctx, a.Mailboxes, a.Config.ParallelMailboxes)
	failed := 0
	for _, r := range results {
		attrs := []any{"mailbox", r.Mailbox, "on_server", r.OnServer, "fetched", r.Fetched, "bytes", r.Bytes,
			"delivered", r.Delivered, "deferred", r.Deferred, "rejected", r.Rejected, "deleted", r.Deleted,
			"badmail", r.Badmail, "deleted_rejected", r.DeletedRejected, "notices", r.Notices, "suppressed", r.Suppressed,
			"not_due", r.NotDue, "duration", r.Duration.Round(time.Millisecond).String()}
		if r.Stopped != "" {
			attrs = append(attrs, "stopped", r.Stopped)
		}
		if r.OldestUndelivered > 0 {
			attrs = append(attrs, "oldest_undelivered", r.OldestUndelivered.Round(time.Second).String())
		}
		if r.Err != nil {
			failed++
			log.Error("poll failed", append(attrs, "err", r.Err)...)
			continue
		}
		log.Info("poll done", attrs...)
	}
	return failed
}

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("status", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, code := loadConfig(*path, stderr)
	if cfg == nil {
		return code
	}
	stores, closeFn, err := app.OpenLocalStores(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "popconn: %v\n", err)
		return 1
	}
	defer closeFn()
	ctx := context.Background()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAILBOX\tON SERVER\tDELIVERED\tDELETED\tPENDING\tDEFERRED\tREJECTED\tHELD\tGAVE UP\tBADMAIL\tDELETED ON REJECT\tDUPLICATES\tOLDEST UNDELIVERED")
	var details []string
	now := time.Now()
	for _, m := range cfg.Mailboxes {
		recs, err := stores.Ledger.List(ctx, m.ID)
		if err != nil {
			fmt.Fprintf(stderr, "popconn: %s: %v\n", m.ID, err)
			return 1
		}
		s := connector.Summarize(m.ID, recs)
		oldest := "-"
		if !s.OldestUndelivered.IsZero() {
			oldest = now.Sub(s.OldestUndelivered).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", m.ID, s.OnServer, s.Delivered, s.Deleted, s.Pending, len(s.Deferred), len(s.Rejected), len(s.Held), len(s.GaveUp), len(s.Badmail), len(s.DeletedRejected), s.Suppressed, oldest)
		for _, group := range []struct {
			name string
			recs []*ledger.Record
		}{{"deferred", s.Deferred}, {"rejected", s.Rejected}, {"held", s.Held}, {"gave up", s.GaveUp}, {"badmail", s.Badmail}, {"deleted on reject", s.DeletedRejected}} {
			for _, r := range group.recs {
				if r.Disposition != "" {
					where := r.BadmailKey
					if where == "" {
						where = r.ArchiveKey
					}
					details = append(details, fmt.Sprintf("%s %s uidl=%s message-id=<%s> archive=%s\n    %s",
						m.ID, group.name, r.UIDL, r.MessageID, where, r.DispositionReason))
					continue
				}
				details = append(details, fmt.Sprintf("%s %s uidl=%s message-id=<%s> attempts=%d next=%s\n    %s",
					m.ID, group.name, r.UIDL, r.MessageID, r.Attempts, formatNext(nextTimer(r), r.GaveUp), r.LastError))
			}
		}
	}
	tw.Flush()
	if len(details) > 0 {
		sort.Strings(details)
		fmt.Fprintln(stdout, "\n"+strings.Join(details, "\n"))
	}
	return 0
}

// nextTimer is the record's next timer: its next fetch when held, else
// its next delivery attempt.
func nextTimer(r *ledger.Record) time.Time {
	if r.Held != "" {
		return r.NextRefetch
	}
	return r.NextAttempt
}

func formatNext(t time.Time, gaveUp bool) string {
	if gaveUp {
		return "none (gave up)"
	}
	if t.IsZero() {
		return "next poll"
	}
	return t.Local().Format(time.RFC3339)
}
