package lambdafn_test

import (
	"debug/elf"
	"os"
	"testing"
	"time"
)

// The release artifact: functions/poller built exactly as shipped
// (linux/arm64, CGO off, lambda.norpc, trimmed, stripped) is a static
// aarch64 executable. Its size is logged; whether it runs is shown by the
// same build for this machine's architecture in TestHandler.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binary; skipped with -short")
	}
	bin := buildBootstrap(t, "arm64")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Type != elf.ET_EXEC {
		t.Errorf("machine %v type %v, want EM_AARCH64 ET_EXEC", f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("dynamically linked (PT_INTERP present); provided.al2023 needs a static binary")
		}
	}
	if s := f.Section(".symtab"); s != nil {
		t.Error("symbol table present: -s was not applied")
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bootstrap linux/arm64: %d bytes (%.1f MiB)", st.Size(), float64(st.Size())/(1<<20))
}

// BenchmarkColdStart measures the process part of a cold start: from exec
// of bootstrap to its first GET /runtime/invocation/next, i.e. Go runtime
// start, reading the environment and the AWS default configuration chain,
// building the clients. (Lambda adds its own sandbox start before exec;
// the configuration and secrets are loaded at the first invocation, see
// BenchmarkFirstInvocation.) It needs no server: nothing is contacted
// before the first event. Reports the binary size as well.
func BenchmarkColdStart(b *testing.B) {
	bin := buildBootstrap(b, hostArch())
	st, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	extra := map[string]string{
		"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIDCOLDSTART", "AWS_SECRET_ACCESS_KEY": "cold-start-test",
		"POPCONN_CONFIG": "file:/nonexistent/popconn.yaml", "POPCONN_ARCHIVE_BUCKET": "bucket", "POPCONN_LEDGER_TABLE": "table",
	}
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		api := startRuntimeAPI(b)
		env := lambdaEnv(b, api.Addr, extra)
		b.StartTimer()
		f := startBootstrap(b, bin, env)
		select {
		case <-api.nextSeen:
		case <-f.done:
			b.Fatalf("bootstrap exited before GET /next: %s", f.stderr)
		case <-time.After(30 * time.Second):
			b.Fatal("no GET /next within 30s")
		}
		b.StopTimer()
		api.mu.Lock()
		total += api.firstNext.Sub(f.started)
		api.mu.Unlock()
		f.stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-to-next")
	b.ReportMetric(float64(st.Size()), "binary-bytes")
}

// BenchmarkFirstInvocation measures a whole cold invocation with real
// servers: exec of bootstrap, then a Scheduled Event answered: configuration
// read from S3 (versitygw, HTTPS), ssm:/secretsmanager: secrets resolved,
// two mailboxes polled on Dovecot (TLS, login, empty maildrops), leases and
// ledger reads on DynamoDB Local, EMF and logs written. Each iteration is
// a new process.
func BenchmarkFirstInvocation(b *testing.B) {
	bin := buildBootstrap(b, hostArch())
	srv := startAWSServers(b)
	r := newRig(b, srv, rigOptions{})
	key := r.prefix + "-config/popconn.yaml"
	r.putObject(key, r.cfgYAML)
	scheduled, err := os.ReadFile("../../events/scheduled.json")
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		api := startRuntimeAPI(b)
		env := lambdaEnv(b, api.Addr, functionEnv(r, "s3://"+srv.gw.Bucket+"/"+key))
		b.StartTimer()
		start := time.Now()
		f := startBootstrap(b, bin, env)
		ans := api.invoke(b, "req-bench", scheduled, 2*time.Minute)
		elapsed := time.Since(start)
		b.StopTimer()
		total += elapsed
		if ans.errorType != "" {
			b.Fatalf("function error %s: %s", ans.errorType, ans.body)
		}
		f.stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-to-response")
}
