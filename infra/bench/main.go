// Command bench compares popconn with fetchmail and with a raw POP3 client
// on one machine, against a private Dovecot (POP3, POP3S) and Postfix's
// smtp-sink on loopback. `make bench-compare` installs what it needs and
// runs it; `make bench-compare BENCH_FLAGS=--quick` is the short version.
//
// Each run seeds the same deterministic mailbox (gen.go), runs one tool
// under /usr/bin/time -v, and checks that smtp-sink received every message
// and the mailbox is empty afterwards; popconn's archive must hold every
// message too. A failed check stops the benchmark with the tool's output.
//
// Tools, interleaved within each repetition (rotating the order):
//   - fetchmail (Debian's), forwarding over SMTP to smtp-sink;
//   - the same on a quick-ACK loopback: a child of this program started
//     under `unshare -n` brings up loopback in a private network namespace
//     with `quickack 1` on the local routes and runs its own Dovecot and
//     smtp-sink there, so every server and client of those runs is in the
//     namespace (stock fetchmail otherwise stalls about 40 ms per small
//     message on Nagle's algorithm meeting delayed ACKs). Both the
//     127.0.0.0/8 route and the 127.0.0.1 host route get quickack:
//     connections to 127.0.0.1 use the more specific host route, and with
//     only the /8 one changed fetchmail was as slow as without (13.4 s for
//     200 messages; 1.4 s with both). raw and popconn run there too, so
//     each figure has its like-for-like ceiling;
//   - raw: internal/pop3 logging in, RETRing every message into io.Discard,
//     DELEing all and QUITting: the ceiling for this server on this machine;
//   - popconn run --once in local mode: archive folder and bbolt ledger,
//     both fsynced, delivering to the sink.
//
// The figures are medians over the repetitions; the table says what the
// load average was, because the machine may be shared.
//
// What it cannot do: it measures one machine under whatever else runs on
// it; the POP3 and SMTP servers share the CPU with the tool measured.
// smtp-sink neither stores nor checks message contents unless --verify
// (which dumps every message and compares bodies, slowing the sink).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"github.com/popconnector/popconnector/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "raw":
			os.Exit(rawMain(os.Args[2:]))
		case "popconn-pprof":
			os.Exit(popconnPprofMain(os.Args[2:]))
		case "worker":
			os.Exit(workerCmd(os.Args[2:]))
		case "scale":
			os.Exit(scaleMain(os.Args[2:]))
		case "lambda":
			os.Exit(lambdaMain(os.Args[2:]))
		}
	}
	os.Exit(benchMain(os.Args[1:]))
}

func workerCmd(args []string) int {
	fs := flag.NewFlagSet("bench worker", flag.ContinueOnError)
	var cfg workerConfig
	quickack := fs.Bool("quickack", false, "set up loopback with quickack (run under unshare -n)")
	fs.StringVar(&cfg.Popconn, "popconn", "", "popconn binary")
	fs.StringVar(&cfg.Fetchmail, "fetchmail", "", "fetchmail binary")
	fs.StringVar(&cfg.Mpop, "mpop", "", "mpop binary")
	fs.StringVar(&cfg.Sink, "sink", sinkSMTPSink, "SMTP destination: smtp-sink or postfix")
	fs.IntVar(&cfg.Pipeline, "pipeline", 16, "RETRs in flight for raw-pipelined")
	fs.StringVar(&cfg.Workdir, "workdir", "", "work directory")
	fs.BoolVar(&cfg.Verify, "verify", false, "dump and compare message bodies")
	fs.DurationVar(&cfg.Timeout, "run-timeout", 30*time.Minute, "limit for one run")
	wrap := fs.String("popconn-wrap", "", "command put before popconn's")
	fs.StringVar(&cfg.PopconnData, "popconn-data", "", "where popconn's archive and ledger go")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.PopconnWrap = strings.Fields(*wrap)
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench worker: %v\n", err)
		return 1
	}
	cfg.Self = self
	return workerMain(cfg, *quickack)
}

// Workload sets. Sizes are served octets (CRLF line ends).
var (
	fullWorkloads = []Workload{
		{Name: "a", Count: 1000, Size: 20_000},
		{Name: "b", Count: 100, Size: 1_000_000},
		{Name: "c", Count: 1, Size: 50_000_000},
	}
	quickWorkloads = []Workload{
		{Name: "a", Count: 200, Size: 20_000},
		{Name: "b", Count: 20, Size: 1_000_000},
		{Name: "c", Count: 1, Size: 10_000_000},
	}
)

// variant is one row of a table: a tool on one of the two loopbacks.
type variant struct {
	Tool     string
	QuickACK bool
}

func (v variant) String() string {
	if v.QuickACK {
		return v.Tool + " (quick-ACK netns)"
	}
	return v.Tool
}

type options struct {
	popconn, fetchmail string
	mpop               string
	sink               string
	pipeline           int
	quick              bool
	reps               int
	workloads          []Workload
	tlsModes           []bool
	rtts               []time.Duration
	variants           []variant
	out, workdir       string
	verify             bool
	timeout            time.Duration
	popconnWrap        []string
	popconnData        string
	cpuprofile         string
}

func parseOptions(args []string) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.popconn, "popconn", "bin/popconn", "the popconn binary to measure")
	fs.StringVar(&o.fetchmail, "fetchmail", "/usr/bin/fetchmail", "the fetchmail binary")
	fs.StringVar(&o.mpop, "mpop", "/usr/bin/mpop", "the mpop binary")
	fs.StringVar(&o.sink, "sink", sinkSMTPSink, "SMTP destination: smtp-sink (counts, stores nothing) or postfix (a private Postfix smtpd with a discard transport: CHUNKING/BDAT, a queue file per message; see postfixsink.go)")
	fs.IntVar(&o.pipeline, "pipeline", 16, "RETRs kept in flight by the raw-pipelined client")
	rtts := fs.String("rtt", "0", `round-trip times to run each table at, e.g. "0,20ms": above 0 the POP3 server and the sink each sit behind a delay proxy adding it (delay.go)`)
	fs.BoolVar(&o.quick, "quick", false, "small workloads (a: 200 messages, b: 20, c: 10 MB) and 1 repetition")
	reps := fs.Int("reps", 0, "repetitions per tool and workload (default 3, 1 with --quick)")
	wls := fs.String("workloads", "a,b,c", "workloads to run: a (many 20 kB), b (1 MB each), c (one big message)")
	tlsFlag := fs.String("tls", "plain,tls", "POP3 transports: plain, tls (pop3s), or both")
	tools := fs.String("tools", "fetchmail,mpop,raw,raw-pipelined,popconn", "tools on the host loopback")
	nsTools := fs.String("netns-tools", "fetchmail,raw,popconn", `of --tools, those also run on a quick-ACK loopback in a private network namespace ("" for none)`)
	fs.StringVar(&o.out, "out", "", "markdown results file (default bench-results.md, bench-results-quick.md with --quick); a .json with every run is written beside it")
	fs.StringVar(&o.workdir, "workdir", "", "where servers and runs keep their files (default: a new temporary directory)")
	fs.BoolVar(&o.verify, "verify", false, "let smtp-sink dump every message and compare bodies with the seeded ones (slower sink: checks correctness, not speed)")
	fs.DurationVar(&o.timeout, "run-timeout", 30*time.Minute, "limit for one run")
	fs.StringVar(&o.popconnData, "popconn-data", "", "diagnostics: put popconn's archive and ledger in a new directory under this one instead of the work directory (e.g. /dev/shm: popconn without disk flushes)")
	wrap := fs.String("popconn-wrap", "", `diagnostics: a command put before popconn's, split at spaces, e.g. "strace -f -c -o /tmp/popconn.strace" (skews the timings)`)
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "instead of comparing: run popconn's code under the Go CPU profiler on workload a (plain POP3, host loopback) and write the profile here")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.reps = *reps
	o.popconnWrap = strings.Fields(*wrap)
	if o.reps == 0 {
		o.reps = 3
		if o.quick {
			o.reps = 1
		}
	}
	if o.out == "" {
		o.out = "bench-results.md"
		if o.quick {
			o.out = "bench-results-quick.md"
		}
	}
	set := fullWorkloads
	if o.quick {
		set = quickWorkloads
	}
	for _, name := range splitList(*wls) {
		found := false
		for _, w := range set {
			if w.Name == name {
				o.workloads = append(o.workloads, w)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown workload %q (a, b or c)", name)
		}
	}
	for _, m := range splitList(*tlsFlag) {
		switch m {
		case "plain":
			o.tlsModes = append(o.tlsModes, false)
		case "tls":
			o.tlsModes = append(o.tlsModes, true)
		default:
			return nil, fmt.Errorf("unknown transport %q (plain or tls)", m)
		}
	}
	for _, f := range splitList(*rtts) {
		d, err := time.ParseDuration(f)
		if f == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			return nil, fmt.Errorf("--rtt: %q is not a round-trip time such as 20ms", f)
		}
		o.rtts = append(o.rtts, d)
	}
	if o.sink != sinkSMTPSink && o.sink != sinkPostfix {
		return nil, fmt.Errorf("unknown sink %q (smtp-sink or postfix)", o.sink)
	}
	if o.sink == sinkPostfix && o.verify {
		return nil, fmt.Errorf("--verify needs smtp-sink's dumps; it does not combine with --sink postfix")
	}
	nsSet := map[string]bool{}
	for _, t := range splitList(*nsTools) {
		nsSet[t] = true
	}
	for _, t := range splitList(*tools) {
		if t != toolFetchmail && t != toolMpop && t != toolRaw && t != toolRawPipe && t != toolPopconn {
			return nil, fmt.Errorf("unknown tool %q", t)
		}
		o.variants = append(o.variants, variant{Tool: t})
		if nsSet[t] {
			o.variants = append(o.variants, variant{Tool: t, QuickACK: true})
		}
	}
	if len(o.workloads) == 0 || len(o.tlsModes) == 0 || len(o.rtts) == 0 || len(o.variants) == 0 {
		return nil, fmt.Errorf("nothing to run")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func benchMain(args []string) int {
	o, err := parseOptions(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	return inSession("bench", "make bench-compare installs what is needed", func(s *testenv.Session) int { return run(s, o) })
}

// inSession runs f with a testenv session (servers it starts are stopped
// when f returns) and turns a failure into exit status 1.
func inSession(name, skipHint string, f func(*testenv.Session) int) int {
	s := &testenv.Session{Name: name, SkipHint: skipHint}
	code := 0
	if err := testenv.Guard(func() { code = f(s) }); err != nil {
		fmt.Fprintf(os.Stderr, "%s: FAILED: %v\n", name, err)
		code = 1
	}
	s.Close()
	return code
}

// popconnAndWorkdir resolves the popconn binary (it must exist) and makes
// the work directory (a new temporary one if workdir is ""), which servers
// dropping root to unprivileged users must be able to traverse.
func popconnAndWorkdir(s *testenv.Session, popconnPath, workdir string) (string, string) {
	popconn, err := filepath.Abs(popconnPath)
	if err != nil {
		s.Fatal(err)
	}
	if _, err := os.Stat(popconn); err != nil {
		s.Fatalf("popconn binary: %v (run `make build`)", err)
	}
	if workdir == "" {
		workdir = s.TempDir()
	}
	if err := os.MkdirAll(workdir, 0o755); err != nil {
		s.Fatal(err)
	}
	os.Chmod(workdir, 0o755)
	return popconn, workdir
}

func run(s *testenv.Session, o *options) int {
	self, err := os.Executable()
	if err != nil {
		s.Fatal(err)
	}
	popconn, workdir := popconnAndWorkdir(s, o.popconn, o.workdir)
	needs := map[string]bool{}
	needsNetns := false
	for _, v := range o.variants {
		needs[v.Tool] = true
		needsNetns = needsNetns || v.QuickACK
	}
	for tool, bin := range map[string]string{toolFetchmail: o.fetchmail, toolMpop: o.mpop} {
		if _, err := os.Stat(bin); needs[tool] && err != nil {
			s.Fatalf("%s: %v (run infra/bench/install.sh)", tool, err)
		}
	}
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		s.Fatalf("GNU time: %v (run infra/bench/install.sh)", err)
	}
	cfg := workerConfig{Popconn: popconn, Fetchmail: o.fetchmail, Mpop: o.mpop, Sink: o.sink, Pipeline: o.pipeline, Self: self, Workdir: workdir, Verify: o.verify, Timeout: o.timeout, PopconnWrap: o.popconnWrap, PopconnData: o.popconnData}

	fmt.Fprintf(os.Stderr, "bench: starting Dovecot and %s on the host loopback\n", o.sink)
	host := &localWorker{e: newEnv(s, "host", cfg), info: loopbackRoute()}
	workers := map[bool]worker{false: host}
	if needsNetns && o.cpuprofile == "" {
		fmt.Fprintf(os.Stderr, "bench: starting the quick-ACK network namespace worker\n")
		ns, err := startNSWorker(cfg)
		if err != nil {
			s.Fatalf("%v", err)
		}
		s.Cleanup(ns.Close)
		workers[true] = ns
	}

	if o.cpuprofile != "" {
		return profileRun(s, o, host)
	}

	rep := &report{
		Started:     time.Now().UTC(),
		Machine:     machineInfo(workdir),
		Versions:    versions(popconn, o.fetchmail, o.mpop),
		Quick:       o.quick,
		Reps:        o.reps,
		Verify:      o.verify,
		Sink:        o.sink,
		Pipeline:    o.pipeline,
		RTTs:        rttList(o.rtts),
		HostLo:      host.Info(),
		PopconnData: o.popconnData,
		PopconnWrap: strings.Join(o.popconnWrap, " "),
		Results:     map[string][]Result{},
	}
	if w, ok := workers[true]; ok {
		rep.NetnsLo = w.Info()
	}
	runID := 0
	// Within a table the tools take turns (the order rotates every
	// repetition), so a change in the machine's load spreads over all of
	// them rather than landing on one.
	for _, wl := range o.workloads {
		for _, useTLS := range o.tlsModes {
			for _, rtt := range o.rtts {
				row := rowKey{wl, useTLS, rtt}
				for r := 0; r < o.reps; r++ {
					for i := range o.variants {
						v := o.variants[(i+r)%len(o.variants)]
						runID++
						job := Job{Tool: v.Tool, Workload: wl, TLS: useTLS, RTT: rtt, RunID: runID}
						fmt.Fprintf(os.Stderr, "bench: %s, rep %d/%d: %s ... ", row, r+1, o.reps, v)
						res := workers[v.QuickACK].Run(job)
						if res.Err != "" {
							fmt.Fprintln(os.Stderr, "FAILED")
							rep.add(row, v, res)
							rep.write(o.out, o)
							s.Fatalf("%s, %s: %s", v, row, res.Err)
						}
						fmt.Fprintf(os.Stderr, "%.2fs wall, %.2fs CPU, %.1f MiB RSS (load %.2f)\n", res.WallSec, res.UserSec+res.SysSec, float64(res.MaxRSSKB)/1024, res.Load1)
						rep.add(row, v, res)
					}
				}
				fmt.Println(rep.table(row, o))
				rep.write(o.out, o)
			}
		}
	}
	rep.Finished = time.Now().UTC()
	rep.Machine.LoadEnd = loadavg()
	rep.write(o.out, o)
	fmt.Println(rep.targets(o))
	fmt.Fprintf(os.Stderr, "bench: results written to %s (and %s)\n", o.out, jsonName(o.out))
	return 0
}

// rttList is "" when only undelayed rows run, else the RTTs, e.g. "0s,20ms".
func rttList(rtts []time.Duration) string {
	var out []string
	delayed := false
	for _, d := range rtts {
		out = append(out, d.String())
		delayed = delayed || d > 0
	}
	if !delayed {
		return ""
	}
	return strings.Join(out, ",")
}

func transport(useTLS bool) string {
	if useTLS {
		return "POP3S (TLS)"
	}
	return "plain POP3"
}

// profileRun runs popconn's code under pprof on workload a, once per
// repetition, on the host loopback; the last run's profile is kept.
func profileRun(s *testenv.Session, o *options, host *localWorker) int {
	wl := o.workloads[0]
	for _, w := range o.workloads {
		if w.Name == "a" {
			wl = w
		}
	}
	prof, err := filepath.Abs(o.cpuprofile)
	if err != nil {
		s.Fatal(err)
	}
	for r := 0; r < o.reps; r++ {
		res := host.Run(Job{Tool: toolPopconn, Workload: wl, TLS: o.tlsModes[0], RunID: 900000 + r, CPUProfile: prof})
		if res.Err != "" {
			s.Fatalf("profiled popconn: %s", res.Err)
		}
		fmt.Printf("profiled popconn, workload %s (%s) %s: %.2fs wall, %.2fs user, %.2fs sys, %.1f MiB RSS, %d voluntary / %d involuntary context switches, load %.2f\n",
			wl.Name, wl.Describe(), transport(o.tlsModes[0]), res.WallSec, res.UserSec, res.SysSec, float64(res.MaxRSSKB)/1024, res.VolCtxSw, res.InvCtxSw, res.Load1)
	}
	self, _ := os.Executable()
	fmt.Printf("CPU profile: %s\n  read it with: go tool pprof -top %s %s\n", prof, self, prof)
	fmt.Printf("execution trace: %s.trace\n  where it waits: go tool trace -pprof=syscall %s.trace > syscall.pprof && go tool pprof -top syscall.pprof (also net, sync, sched)\n", prof, prof)
	return 0
}

func jsonName(md string) string {
	return strings.TrimSuffix(md, filepath.Ext(md)) + ".json"
}

// --- machine and versions ---

type machine struct {
	NProc     string
	CPU       string
	Memory    string
	Kernel    string
	FS        string // file system of the work directory (archive, ledger, maildir)
	LoadStart string
	LoadEnd   string
}

func machineInfo(workdir string) machine {
	m := machine{
		NProc:     cmdOut("nproc"),
		Kernel:    cmdOut("uname", "-r"),
		FS:        cmdOut("stat", "-f", "-c", "%T", workdir),
		LoadStart: loadavg(),
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				m.Memory = strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:"))
			}
		}
	}
	return m
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

type versionInfo struct{ Name, Version string }

func versions(popconn, fetchmail, mpop string) []versionInfo {
	v := []versionInfo{
		{"popconn", strings.TrimPrefix(cmdOut(popconn, "version"), "popconn ") + gitRev()},
		{"Go", strings.TrimPrefix(runtime.Version(), "go")},
		{"Dovecot", cmdOut("/usr/sbin/dovecot", "--version")},
		{"Postfix smtp-sink", cmdOut("/usr/sbin/postconf", "-d", "-h", "mail_version")},
		{"fetchmail", fetchmailVersion(fetchmail)},
		{"mpop", strings.TrimPrefix(firstLine(cmdOut(mpop, "--version")), "mpop version ")},
		{"OpenSSL", strings.TrimPrefix(cmdOut("openssl", "version"), "OpenSSL ")},
	}
	return v
}

func gitRev() string {
	rev := cmdOut("git", "rev-parse", "--short", "HEAD")
	if rev == "unknown" {
		return ""
	}
	if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		rev += "+changes"
	}
	return " (" + rev + ")"
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func fetchmailVersion(bin string) string {
	out, _ := exec.Command(bin, "--version", "-f", "/dev/null").CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "release "); i >= 0 {
			return strings.TrimRight(strings.TrimSpace(l[i+len("release "):]), ".")
		}
	}
	return "unknown"
}

// --- results ---

type report struct {
	Started, Finished time.Time
	Machine           machine
	Versions          []versionInfo
	Quick             bool
	Reps              int
	Verify            bool
	Sink              string
	Pipeline          int    // raw-pipelined's window
	RTTs              string // the RTTs run, e.g. "0s,20ms"
	HostLo, NetnsLo   string
	// Diagnostics that change what popconn's rows mean.
	PopconnData string `json:",omitempty"`
	PopconnWrap string `json:",omitempty"`
	// Results by "workload/transport/variant", in run order.
	Results map[string][]Result
	order   []string
}

// rowKey is one table: a workload over one transport at one RTT.
type rowKey struct {
	wl     Workload
	useTLS bool
	rtt    time.Duration
}

func (k rowKey) String() string {
	s := fmt.Sprintf("workload %s (%s), %s", k.wl.Name, k.wl.Describe(), transport(k.useTLS))
	if k.rtt > 0 {
		s += fmt.Sprintf(", RTT %v", k.rtt)
	}
	return s
}

// resultKey is "workload/tls/variant", as before there were RTT rows, with
// "/rtt=20ms" after it for a delayed row.
func resultKey(k rowKey, v variant) string {
	key := fmt.Sprintf("%s/%v/%s", k.wl.Name, k.useTLS, v)
	if k.rtt > 0 {
		key += "/rtt=" + k.rtt.String()
	}
	return key
}

func (r *report) add(row rowKey, v variant, res Result) {
	k := resultKey(row, v)
	if _, ok := r.Results[k]; !ok {
		r.order = append(r.order, k)
	}
	r.Results[k] = append(r.Results[k], res)
}

// stats are the medians of one row.
type stats struct {
	N                      int
	Wall, WallMin, WallMax float64
	MsgPerSec, MBPerSec    float64
	CPU                    float64
	RSSMiB                 float64
	Load1                  float64
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(wl Workload, rs []Result) (stats, bool) {
	var walls, cpus, rss, loads []float64
	for _, r := range rs {
		if r.Err != "" {
			continue
		}
		walls = append(walls, r.WallSec)
		cpus = append(cpus, r.UserSec+r.SysSec)
		rss = append(rss, float64(r.MaxRSSKB)/1024)
		loads = append(loads, r.Load1)
	}
	if len(walls) == 0 {
		return stats{}, false
	}
	st := stats{N: len(walls), Wall: median(walls), CPU: median(cpus), RSSMiB: median(rss), Load1: median(loads)}
	sort.Float64s(walls)
	st.WallMin, st.WallMax = walls[0], walls[len(walls)-1]
	st.MsgPerSec = float64(wl.Count) / st.Wall
	st.MBPerSec = float64(wl.Bytes()) / 1e6 / st.Wall
	return st, true
}

func (r *report) stats(row rowKey, v variant) (stats, bool) {
	return summarize(row.wl, r.Results[resultKey(row, v)])
}

// table renders one row key as markdown: every tool with its ratios to
// fetchmail's better figure, to mpop and to the pipelined ceiling (the
// same workload moves the same octets, so msg/s and MB/s ratios agree).
func (r *report) table(row rowKey, o *options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Workload (%s): %s, %s", row.wl.Name, row.wl.Describe(), transport(row.useTLS))
	if row.rtt > 0 {
		fmt.Fprintf(&b, ", RTT %v (delay proxy)", row.rtt)
	}
	b.WriteString("\n\n")
	fm, fv, okF := r.bestFetchmail(row)
	mp, okM := r.stats(row, variant{Tool: toolMpop})
	fmt.Fprintf(&b, "| tool | wall s (median; min–max) | msg/s | MB/s | ÷ fetchmail | ÷ mpop | ÷ ceiling | CPU s (user+sys) | peak RSS MiB | load1 at start |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	ratio := func(st, base stats, ok bool) string {
		if !ok || base.MsgPerSec == 0 {
			return "–"
		}
		return fmt.Sprintf("×%.2f", st.MsgPerSec/base.MsgPerSec)
	}
	for _, v := range o.variants {
		st, ok := r.stats(row, v)
		if !ok {
			continue
		}
		ceil, okC := r.ceiling(row, v.QuickACK)
		fmt.Fprintf(&b, "| %s | %.2f; %.2f–%.2f | %.1f | %.1f | %s | %s | %s | %.2f | %.1f | %.2f |\n",
			v, st.Wall, st.WallMin, st.WallMax, st.MsgPerSec, st.MBPerSec,
			ratio(st, fm, okF), ratio(st, mp, okM), ratio(st, ceil, okC), st.CPU, st.RSSMiB, st.Load1)
	}
	b.WriteString("\n")
	if okF {
		fmt.Fprintf(&b, "÷ fetchmail: against its better figure (%s). ÷ ceiling: against %s on the same loopback.\n\n", fv, toolRawPipe)
	}
	for _, line := range r.ratios(row) {
		fmt.Fprintf(&b, "- %s\n", line)
	}
	return b.String()
}

// ceiling is the pipelined raw client's row on the same loopback, or the
// host one when it did not run there.
func (r *report) ceiling(row rowKey, quickACK bool) (stats, bool) {
	if st, ok := r.stats(row, variant{Tool: toolRawPipe, QuickACK: quickACK}); ok {
		return st, true
	}
	return r.stats(row, variant{Tool: toolRawPipe})
}

func (r *report) ratios(row rowKey) []string {
	var lines []string
	pc, okP := r.stats(row, variant{Tool: toolPopconn})
	if !okP {
		return nil
	}
	if fm, fv, ok := r.bestFetchmail(row); ok {
		lines = append(lines, fmt.Sprintf("popconn ÷ fetchmail's better figure (%s): ×%.2f msg/s, ×%.2f MB/s", fv, pc.MsgPerSec/fm.MsgPerSec, pc.MBPerSec/fm.MBPerSec))
	}
	if mp, ok := r.stats(row, variant{Tool: toolMpop}); ok {
		lines = append(lines, fmt.Sprintf("popconn ÷ mpop (fetch into a maildir, pipelined): ×%.2f", pc.MsgPerSec/mp.MsgPerSec))
	}
	if raw, ok := r.stats(row, variant{Tool: toolRaw}); ok {
		lines = append(lines, fmt.Sprintf("popconn ÷ raw POP3, one RETR at a time (host loopback): %.0f%%", 100*pc.MBPerSec/raw.MBPerSec))
	}
	if c, ok := r.stats(row, variant{Tool: toolRawPipe}); ok {
		lines = append(lines, fmt.Sprintf("popconn ÷ raw POP3 ceiling, %d RETRs pipelined (host loopback): %.0f%%", r.Pipeline, 100*pc.MBPerSec/c.MBPerSec))
	}
	pq, ok1 := r.stats(row, variant{Tool: toolPopconn, QuickACK: true})
	rq, ok2 := r.stats(row, variant{Tool: toolRaw, QuickACK: true})
	if ok1 && ok2 {
		lines = append(lines, fmt.Sprintf("popconn ÷ raw POP3, one at a time (quick-ACK loopback): %.0f%%", 100*pq.MBPerSec/rq.MBPerSec))
	}
	return lines
}

// bestFetchmail is the fetchmail row with the higher message rate.
func (r *report) bestFetchmail(row rowKey) (stats, variant, bool) {
	var best stats
	var bv variant
	found := false
	for _, v := range []variant{{Tool: toolFetchmail}, {Tool: toolFetchmail, QuickACK: true}} {
		if st, ok := r.stats(row, v); ok && (!found || st.MsgPerSec > best.MsgPerSec) {
			best, bv, found = st, v, true
		}
	}
	return best, bv, found
}

// targets checks issue 6's goals with popconn's host-loopback figures
// without a delay (issue 6 set none for an RTT).
func (r *report) targets(o *options) string {
	var b strings.Builder
	b.WriteString("### Targets (popconn on the host loopback)\n\n")
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	for _, wl := range o.workloads {
		for _, useTLS := range o.tlsModes {
			row := rowKey{wl, useTLS, 0}
			pc, ok := r.stats(row, variant{Tool: toolPopconn})
			if !ok {
				continue
			}
			fm, fv, okF := r.bestFetchmail(row)
			raw, okR := r.stats(row, variant{Tool: toolRaw})
			t := transport(useTLS)
			switch wl.Name {
			case "a":
				if okF {
					x := pc.MsgPerSec / fm.MsgPerSec
					fmt.Fprintf(&b, "- (a) %s: msg/s ≥ 3× fetchmail's better (%s): ×%.2f — %s\n", t, fv, x, mark(x >= 3))
				}
			case "b":
				if okF {
					x := pc.MBPerSec / fm.MBPerSec
					fmt.Fprintf(&b, "- (b) %s: MB/s ≥ 5× fetchmail's better (%s): ×%.2f — %s\n", t, fv, x, mark(x >= 5))
				}
			case "c":
				fmt.Fprintf(&b, "- (c) %s: peak RSS ≤ 32 MiB: %.1f MiB — %s\n", t, pc.RSSMiB, mark(pc.RSSMiB <= 32))
			}
			if okR {
				x := pc.MBPerSec / raw.MBPerSec
				fmt.Fprintf(&b, "- (%s) %s: ≥ 50%% of the raw POP3 ceiling: %.0f%% — %s\n", wl.Name, t, 100*x, mark(x >= 0.5))
			}
		}
		plain, ok1 := r.stats(rowKey{wl, false, 0}, variant{Tool: toolPopconn})
		tlsSt, ok2 := r.stats(rowKey{wl, true, 0}, variant{Tool: toolPopconn})
		if ok1 && ok2 {
			x := tlsSt.MBPerSec / plain.MBPerSec
			fmt.Fprintf(&b, "- (%s) TLS within 20%% of plain: POP3S throughput is %.0f%% of plain — %s\n", wl.Name, 100*x, mark(x >= 0.8))
		}
	}
	if o.quick {
		b.WriteString("\n(--quick: small workloads, one repetition; indicative only.)\n")
	}
	return b.String()
}

// write renders the whole report as markdown to path and every run as JSON
// beside it.
func (r *report) write(path string, o *options) {
	var b strings.Builder
	b.WriteString("## popconn vs fetchmail, mpop and raw POP3 (generated by `make bench-compare`)\n\n")
	mode := fmt.Sprintf("%d repetition(s), medians", r.Reps)
	if r.Quick {
		mode = "--quick (small workloads), " + mode
	}
	fmt.Fprintf(&b, "Run %s – %s UTC, %s.\n\n", r.Started.Format("2006-01-02 15:04"), r.Finished.Format("15:04"), mode)
	writeMachine(&b, r.Machine, r.Versions)
	fmt.Fprintf(&b, "- Host loopback route: `%s`.\n", r.HostLo)
	sink := "smtp-sink"
	if r.Sink == sinkPostfix {
		sink = "the sink (a private Postfix smtpd, discard transport)"
		b.WriteString("- Sink: a private Postfix 3.7 smtpd (CHUNKING offered) whose virtual transport is discard(8); counted from its log. Each message is queued (written and fsynced) before 250.\n")
	}
	if r.NetnsLo != "" {
		fmt.Fprintf(&b, "- Quick-ACK rows: a private network namespace (`unshare -n`) with its own Dovecot and %s; loopback route `%s`.\n", r.Sink, r.NetnsLo)
	}
	fmt.Fprintf(&b, "- Each run: a freshly seeded maildir (Dovecot index removed), one tool under `/usr/bin/time -v`; checked afterwards: %s counted every message of fetchmail and popconn and none of the others, the mailbox is empty, popconn's archive holds every message, mpop's maildir holds each message once with its body as seeded, the raw clients read every message at its size.\n", sink)
	fmt.Fprintf(&b, "- fetchmail: `fetchall nokeep`, one SMTP session to %s. mpop: `pipelining on`, delivery into a maildir, deletes what it fetched (as every tool here; no SMTP). raw: internal/pop3 LIST, RETR each to io.Discard, DELE all, QUIT. raw-pipelined: its own POP3 code, USER+PASS+LIST in one write, then %d RETRs kept in flight (RFC 2449 PIPELINING), each DELEd once read (the DELE leaves with the next RETR), QUIT: the ceiling. popconn: `run --once`, archive folder + bbolt ledger (fsync), SMTP to %s without TLS.\n", sink, r.Pipeline, sink)
	if r.RTTs != "" {
		fmt.Fprintf(&b, "- RTT rows: the POP3 server and %s each behind a delay proxy on 127.0.0.1 (infra/bench/delay.go) that holds every chunk for RTT/2 in each direction; no loss, no jitter, no congestion window (loopback bandwidth).\n", sink)
	}
	if r.PopconnData != "" {
		fmt.Fprintf(&b, "- DIAGNOSTIC: popconn's archive and ledger were under %s (file system %s), not the work directory.\n", r.PopconnData, cmdOut("stat", "-f", "-c", "%T", r.PopconnData))
	}
	if r.PopconnWrap != "" {
		fmt.Fprintf(&b, "- DIAGNOSTIC: popconn ran under `%s`, which skews its figures.\n", r.PopconnWrap)
	}
	if r.Verify {
		b.WriteString("- --verify: smtp-sink dumped every message and each body was compared with the seeded one (slower sink).\n")
	}
	b.WriteString("- MB = 10⁶ octets as served by POP3 (CRLF); msg/s and MB/s from the median wall time; RSS in MiB (2²⁰).\n\n")
	for _, wl := range o.workloads {
		for _, useTLS := range o.tlsModes {
			for _, rtt := range o.rtts {
				row := rowKey{wl, useTLS, rtt}
				hasAny := false
				for _, v := range o.variants {
					_, ok := r.Results[resultKey(row, v)]
					hasAny = hasAny || ok
				}
				if hasAny {
					b.WriteString(r.table(row, o))
					b.WriteString("\n")
				}
			}
		}
	}
	b.WriteString(r.targets(o))
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "bench: write %s: %v\n", path, err)
	}
	data, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(jsonName(path), data, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "bench: write %s: %v\n", jsonName(path), err)
	}
}

// writeMachine renders the machine, load and versions lines of a report.
func writeMachine(b *strings.Builder, m machine, versions []versionInfo) {
	fmt.Fprintf(b, "- Machine: %s CPUs (%s), %s memory, Linux %s; work directory on %s.\n", m.NProc, m.CPU, m.Memory, m.Kernel, m.FS)
	fmt.Fprintf(b, "- Load average (1, 5, 15 min) at start: %s; at end: %s. The machine may be shared: see load1 per row.\n", m.LoadStart, orDash(m.LoadEnd))
	var vs []string
	for _, v := range versions {
		vs = append(vs, v.Name+" "+v.Version)
	}
	fmt.Fprintf(b, "- Versions: %s.\n", strings.Join(vs, "; "))
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
