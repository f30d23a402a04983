package main

// The scale mode: `popconn-bench scale` (make bench-scale). One private
// Dovecot with as many users as the largest run needs, each mailbox seeded
// with the same few small messages; one popconn configuration naming N
// mailboxes; `popconn run --once` under /usr/bin/time -v at several
// parallel_mailboxes settings, interleaved (the order rotates every
// repetition). Every run is checked: smtp-sink counted every message,
// every maildir is empty, the archive holds every message. Dovecot's log
// is searched for limit warnings ("process_limit reached" and the like)
// after each run, and any found are reported with the row.
//
// What it cannot do: as the comparison mode, it measures one machine with
// the servers sharing the CPU with popconn; a mailbox here costs a local
// Dovecot login, not an ISP's, whose round trips are tens of milliseconds.

import (
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/popconnector/popconnector/internal/testenv"
)

type scaleOptions struct {
	popconn   string
	sizes     []int // mailboxes per run
	parallels []int // parallel_mailboxes settings
	reps      int
	workload  Workload // per mailbox
	out       string
	workdir   string
	timeout   time.Duration
	dovecot   string // ExtraConf for Dovecot
}

// scaleDovecotConf gives Dovecot's pop3-login and pop3 services headroom
// above the largest parallel_mailboxes (64). The defaults
// (default_process_limit 100) suffice: a run over 1,000 mailboxes at 64
// with --stock-dovecot-limits logged no warning. But each session holds a
// login process (service_count 1) and then a pop3 process, and those of
// finished sessions may still be exiting, so the margin is thin.
const scaleDovecotConf = `auth_verbose = no
service pop3-login {
  process_limit = 512
}
service pop3 {
  process_limit = 512
}
`

func parseScaleOptions(args []string) (*scaleOptions, error) {
	fs := flag.NewFlagSet("bench scale", flag.ContinueOnError)
	o := &scaleOptions{}
	fs.StringVar(&o.popconn, "popconn", "bin/popconn", "the popconn binary to measure")
	sizes := fs.String("mailboxes", "10,100,1000", "mailboxes per run (one Dovecot user each)")
	pars := fs.String("parallel", "1,4,16,64", "parallel_mailboxes settings")
	fs.IntVar(&o.reps, "reps", 1, "repetitions per setting")
	count := fs.Int("messages", 3, "messages per mailbox")
	size := fs.Int64("size", 20_000, "served octets per message")
	fs.StringVar(&o.out, "out", "bench-results-scale.md", "markdown results file; a .json with every run is written beside it")
	fs.StringVar(&o.workdir, "workdir", "", "where servers and runs keep their files (default: a new temporary directory)")
	fs.DurationVar(&o.timeout, "run-timeout", 30*time.Minute, "limit for one run")
	stock := fs.Bool("stock-dovecot-limits", false, "keep Dovecot's default process limits (to see where they bite)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.sizes, err = intList(*sizes); err != nil {
		return nil, fmt.Errorf("--mailboxes: %w", err)
	}
	if o.parallels, err = intList(*pars); err != nil {
		return nil, fmt.Errorf("--parallel: %w", err)
	}
	for _, p := range o.parallels {
		if p > 64 {
			return nil, fmt.Errorf("--parallel: %d is above popconn's maximum of 64", p)
		}
	}
	if o.reps < 1 || *count < 1 {
		return nil, fmt.Errorf("--reps and --messages must be at least 1")
	}
	o.workload = Workload{Name: "s", Count: *count, Size: *size}
	o.dovecot = scaleDovecotConf
	if *stock {
		o.dovecot = "auth_verbose = no\n"
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive whole number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list")
	}
	return out, nil
}

// ScaleResult is one run of popconn over N mailboxes.
type ScaleResult struct {
	Mailboxes, Parallel, Rep int
	Messages                 int // seeded in all mailboxes
	WallSec                  float64
	TimeV
	Load1          float64
	SinkGot        int
	LeftOnServer   int
	Archived       int
	DovecotWarning string `json:",omitempty"` // limit warnings Dovecot logged during the run
	Err            string `json:",omitempty"`
}

type scaleEnv struct {
	s        *testenv.Session
	o        *scaleOptions
	dove     *testenv.Dovecot
	sink     *countingSink
	users    []string
	passFile string
	uid, gid int
	popconn  string
}

func scaleUser(i int) string { return fmt.Sprintf("bench%04d", i) }

func scaleMain(args []string) int {
	o, err := parseScaleOptions(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench scale: %v\n", err)
		return 2
	}
	return inSession("bench scale", "make bench-scale installs what is needed", func(s *testenv.Session) int { return runScale(s, o) })
}

func runScale(s *testenv.Session, o *scaleOptions) int {
	popconn, workdir := popconnAndWorkdir(s, o.popconn, o.workdir)
	maxN := 0
	for _, n := range o.sizes {
		maxN = max(maxN, n)
	}
	e := &scaleEnv{s: s, o: o, popconn: popconn}
	users := map[string]string{}
	for i := range maxN {
		u := scaleUser(i)
		users[u] = benchPass
		e.users = append(e.users, u)
	}
	fmt.Fprintf(os.Stderr, "bench scale: starting Dovecot with %d users and smtp-sink\n", maxN)
	e.dove = testenv.StartDovecot(s, testenv.DovecotOptions{Users: users, ExtraConf: o.dovecot})
	e.sink = startCountingSink(s, e.dove.Dir)
	fi, err := os.Stat(e.dove.Maildir(e.users[0]))
	if err != nil {
		s.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	e.uid, e.gid = int(st.Uid), int(st.Gid)
	e.passFile = filepath.Join(workdir, "pop-pass")
	if err := os.WriteFile(e.passFile, []byte(benchPass+"\n"), 0o600); err != nil {
		s.Fatal(err)
	}

	rep := &scaleReport{
		Started:  time.Now().UTC(),
		Machine:  machineInfo(workdir),
		Versions: withoutFetchmail(versions(popconn, "", "")),
		Workload: o.workload,
		Reps:     o.reps,
		Dovecot:  o.dovecot,
	}
	runID := 0
	for _, n := range o.sizes {
		for r := 0; r < o.reps; r++ {
			for i := range o.parallels {
				p := o.parallels[(i+r)%len(o.parallels)]
				runID++
				fmt.Fprintf(os.Stderr, "bench scale: %d mailboxes × %s, parallel %d, rep %d/%d ... ", n, o.workload.Describe(), p, r+1, o.reps)
				res := e.run(filepath.Join(workdir, fmt.Sprintf("run-%d", runID)), runID, n, p)
				res.Rep = r + 1
				rep.Results = append(rep.Results, res)
				if res.Err != "" {
					fmt.Fprintln(os.Stderr, "FAILED")
					rep.write(o.out)
					s.Fatalf("%d mailboxes, parallel %d: %s", n, p, res.Err)
				}
				warn := ""
				if res.DovecotWarning != "" {
					warn = " DOVECOT: " + res.DovecotWarning
				}
				fmt.Fprintf(os.Stderr, "%.2fs wall, %.2fs CPU, %.1f MiB RSS (load %.2f)%s\n", res.WallSec, res.UserSec+res.SysSec, float64(res.MaxRSSKB)/1024, res.Load1, warn)
				rep.write(o.out)
			}
		}
	}
	rep.Finished = time.Now().UTC()
	rep.Machine.LoadEnd = loadavg()
	rep.write(o.out)
	fmt.Print(rep.table())
	fmt.Fprintf(os.Stderr, "bench scale: results written to %s (and %s)\n", o.out, jsonName(o.out))
	return 0
}

// run seeds the first n mailboxes, polls them with one popconn run at
// parallel p, and checks the outcome.
func (e *scaleEnv) run(runDir string, runID, n, p int) (res ScaleResult) {
	wl := e.o.workload
	res = ScaleResult{Mailboxes: n, Parallel: p, Messages: n * wl.Count}
	fail := func(format string, args ...any) ScaleResult {
		res.Err = fmt.Sprintf(format, args...)
		return res
	}
	for _, u := range e.users[:n] {
		md := e.dove.Maildir(u)
		if err := resetMaildir(md); err != nil {
			return fail("reset %s: %v", u, err)
		}
		if err := Seed(md, wl, runID, e.uid, e.gid); err != nil {
			return fail("seed %s: %v", u, err)
		}
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(runDir)
	archiveDir := filepath.Join(runDir, "archive")
	var cfg strings.Builder
	cfg.WriteString(popconnGlobalConfig(e.sink.Addr, archiveDir, filepath.Join(runDir, "ledger.db"), p))
	for _, u := range e.users[:n] {
		cfg.WriteString(popconnMailboxConfig(u, e.dove.Addr, false, "", u, e.passFile))
	}
	cfgFile := filepath.Join(runDir, "popconn.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		return fail("%v", err)
	}
	sinkBefore, err := e.sink.Messages()
	if err != nil {
		return fail("smtp-sink counter: %v", err)
	}
	logFile := filepath.Join(e.dove.Dir, "dovecot.log")
	logBefore := fileSize(logFile)
	res.Load1 = load1()
	outFile := filepath.Join(runDir, "output.txt")
	tail := func() string { return tailFile(outFile, 15) }
	res.WallSec, res.TimeV, err = runTimed([]string{e.popconn, "run", "--once", "--config", cfgFile}, runDir, e.o.timeout)
	res.DovecotWarning = dovecotWarnings(logFile, logBefore)
	if err != nil {
		return fail("popconn: %v%s", err, tail())
	}
	if res.SinkGot, err = sinkReceived(e.sink, sinkBefore, res.Messages); err != nil {
		return fail("smtp-sink counter: %v", err)
	}
	for _, u := range e.users[:n] {
		left, err := maildirCount(e.dove.Maildir(u))
		if err != nil {
			return fail("count maildir of %s: %v", u, err)
		}
		res.LeftOnServer += left
	}
	err = filepath.WalkDir(archiveDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".eml") {
			res.Archived++
		}
		return err
	})
	switch {
	case err != nil:
		return fail("count archive: %v", err)
	case res.LeftOnServer != 0:
		return fail("%d of %d messages left on the POP3 server%s", res.LeftOnServer, res.Messages, tail())
	case res.SinkGot != res.Messages:
		return fail("smtp-sink received %d messages, want %d%s", res.SinkGot, res.Messages, tail())
	case res.Archived != res.Messages:
		return fail("archive holds %d messages, want %d", res.Archived, res.Messages)
	}
	return res
}

func withoutFetchmail(vs []versionInfo) []versionInfo {
	var out []versionInfo
	for _, v := range vs {
		if v.Name != toolFetchmail && v.Name != toolMpop {
			out = append(out, v)
		}
	}
	return out
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// dovecotWarnings returns the warning and error lines Dovecot logged after
// offset (limits reached, refused connections), at most three, joined.
func dovecotWarnings(logFile string, offset int64) string {
	data, err := os.ReadFile(logFile)
	if err != nil || int64(len(data)) <= offset {
		return ""
	}
	var found []string
	n := 0
	for _, l := range strings.Split(string(data[offset:]), "\n") {
		if strings.Contains(l, "Warning:") || strings.Contains(l, "Error:") || strings.Contains(l, "Fatal:") {
			n++
			if len(found) < 3 {
				found = append(found, strings.TrimSpace(l))
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d line(s), e.g. %s", n, strings.Join(found, " | "))
}

type scaleReport struct {
	Started, Finished time.Time
	Machine           machine
	Versions          []versionInfo
	Workload          Workload
	Reps              int
	Dovecot           string
	Results           []ScaleResult
}

// table renders the medians per (mailboxes, parallel) with the growth from
// the previous size at the same parallelism.
func (r *scaleReport) table() string {
	var b strings.Builder
	type key struct{ n, p int }
	groups := map[key][]ScaleResult{}
	var order []key
	for _, res := range r.Results {
		if res.Err != "" {
			continue
		}
		k := key{res.Mailboxes, res.Parallel}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], res)
	}
	b.WriteString("| mailboxes | parallel_mailboxes | wall s (median; min–max) | ms per mailbox | mailboxes/s | msg/s | CPU s (user+sys) | peak RSS MiB | load1 at start | Dovecot warnings |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, k := range order {
		rs := groups[k]
		var walls, cpus, rss, loads []float64
		warn := ""
		for _, res := range rs {
			walls = append(walls, res.WallSec)
			cpus = append(cpus, res.UserSec+res.SysSec)
			rss = append(rss, float64(res.MaxRSSKB)/1024)
			loads = append(loads, res.Load1)
			if res.DovecotWarning != "" {
				warn = res.DovecotWarning
			}
		}
		w := median(walls)
		lo, hi := walls[0], walls[0]
		for _, x := range walls {
			lo, hi = min(lo, x), max(hi, x)
		}
		msgs := rs[0].Messages
		fmt.Fprintf(&b, "| %d | %d | %.2f; %.2f–%.2f | %.1f | %.1f | %.1f | %.2f | %.1f | %.2f | %s |\n",
			k.n, k.p, w, lo, hi, 1000*w/float64(k.n), float64(k.n)/w, float64(msgs)/w, median(cpus), median(rss), median(loads), orDash(warn))
	}
	return b.String()
}

func (r *scaleReport) write(path string) {
	var b strings.Builder
	b.WriteString("## popconn over many mailboxes (generated by `make bench-scale`)\n\n")
	fmt.Fprintf(&b, "Run %s – %s UTC, %d repetition(s) per setting, medians; parallel settings interleaved.\n\n", r.Started.Format("2006-01-02 15:04"), r.Finished.Format("15:04"), r.Reps)
	writeMachine(&b, r.Machine, r.Versions)
	fmt.Fprintf(&b, "- Each mailbox: %s (deterministic, freshly seeded, Dovecot index removed); one Dovecot user per mailbox, plain POP3 on loopback.\n", r.Workload.Describe())
	b.WriteString("- popconn: `run --once`, one configuration with N mailboxes, local mode (archive folder + bbolt ledger, fsync), SMTP to smtp-sink without TLS, one recipient per message, under `/usr/bin/time -v`. CPU and RSS are popconn's alone (the servers are not counted).\n")
	b.WriteString("- Checked after every run: smtp-sink counted every message, every maildir is empty, the archive holds every message.\n")
	fmt.Fprintf(&b, "- Dovecot settings added to testenv's: `%s`.\n\n", strings.Join(strings.Fields(r.Dovecot), " "))
	b.WriteString(r.table())
	var failed []string
	for _, res := range r.Results {
		if res.Err != "" {
			failed = append(failed, fmt.Sprintf("%d mailboxes, parallel %d: %s", res.Mailboxes, res.Parallel, res.Err))
		}
	}
	writeResults("bench scale", path, &b, failed, r)
}

// writeResults ends the markdown report b with a line per failure (the
// first line of each), writes it to path and v as JSON beside it.
func writeResults(who, path string, b *strings.Builder, failed []string, v any) {
	if len(failed) > 0 {
		b.WriteString("\n")
		for _, f := range failed {
			fmt.Fprintf(b, "- FAILED: %s\n", strings.SplitN(f, "\n", 2)[0])
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "%s: write %s: %v\n", who, path, err)
	}
	data, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(jsonName(path), data, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "%s: write %s: %v\n", who, jsonName(path), err)
	}
}
