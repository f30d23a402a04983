package lambdafn_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/lambdafn"
)

func readEvent(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../events/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The whole handler in-process against Dovecot, smtp-sink, versitygw and
// DynamoDB Local.
func TestHandler(t *testing.T) {
	srv := startAWSServers(t)
	scheduled := readEvent(t, "scheduled.json")
	retrieveNow := readEvent(t, "retrieve-now.json")

	t.Run("scheduled event relays, archives byte-exact, empties the mailbox; a retry relays nothing", func(t *testing.T) {
		r := newRig(t, srv, rigOptions{})
		msgs := [][]byte{
			message(1, "crlf"),
			[]byte("From: lf@example.org\nSubject: stored with LF line ends\nMessage-ID: <lf@example.org>\n\n.leading dot line\nend\n"),
			message(3, "crlf"),
		}
		for _, m := range msgs {
			r.dove.Deliver(t, "sales", m)
		}
		r.dove.Deliver(t, "support", message(4, "support"))
		served := r.served("sales", salesPassword)
		for uid, b := range r.served("support", supportPassword) {
			served[uid] = b
		}

		f := r.newFunction("", 0)
		sum, err := invoke(t, f, scheduled, "req-scheduled-1", 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Trigger != lambdafn.TriggerSchedule || sum.RequestID != "req-scheduled-1" || len(sum.Mailboxes) != 2 || sum.Failed != 0 {
			t.Fatalf("summary %+v", sum)
		}
		sales, support := r.mailbox(sum, "sales"), r.mailbox(sum, "support")
		if sales.OnServer != 3 || sales.Fetched != 3 || sales.Delivered != 3 || sales.Deleted != 3 || sales.Error != "" || sales.Stopped != "" {
			t.Errorf("sales %+v", sales)
		}
		if support.Delivered != 1 || support.Deleted != 1 {
			t.Errorf("support %+v", support)
		}

		// Archive: the S3 object holds exactly what Dovecot served.
		for _, mb := range []string{"sales", "support"} {
			for _, rec := range r.records(mb) {
				want, ok := served[rec.UIDL]
				if !ok {
					t.Fatalf("ledger holds unknown UIDL %s", rec.UIDL)
				}
				if got := r.object(rec.ArchiveKey); !bytes.Equal(got, want) {
					t.Errorf("%s %s: archived %q, served %q", mb, rec.UIDL, got, want)
				}
				if !rec.Delivered() || !rec.Deleted() {
					t.Errorf("%s %s: ledger says delivered=%v deleted=%v", mb, rec.UIDL, rec.Delivered(), rec.Deleted())
				}
			}
		}
		// Sink: every message once, the served bytes after our trace header.
		got := r.sink.WaitFor(t, 4, 10*time.Second)
		if n := deliveredOnce(t, got); n != 4 {
			t.Fatalf("sink holds %d messages, want 4", n)
		}
		for _, m := range got {
			if !bytes.HasPrefix(m.Data, []byte("Received: ")) {
				t.Errorf("no trace header: %.60q", m.Data)
			}
			found := false
			for _, s := range served {
				found = found || bytes.HasSuffix(m.Data, s)
			}
			if !found {
				t.Errorf("relayed message does not end with a served message: %.200q", m.Data)
			}
		}
		if n := r.dove.Count(t, "sales") + r.dove.Count(t, "support"); n != 0 {
			t.Errorf("%d messages left on the POP3 server", n)
		}

		// Lambda's retry of the same event (same request id) or the next
		// schedule: nothing to relay, nothing relayed.
		for _, id := range []string{"req-scheduled-1", "req-scheduled-2"} {
			sum, err = invoke(t, f, scheduled, id, 2*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range sum.Mailboxes {
				if m.OnServer != 0 || m.Fetched != 0 || m.Delivered != 0 || m.Error != "" {
					t.Errorf("re-invocation %s: %+v", id, m)
				}
			}
		}
		if n := len(r.sink.Messages(t)); n != 4 {
			t.Errorf("after re-invocations the sink holds %d messages, want 4", n)
		}

		// Secrets: fetched once per container, whatever the number of polls.
		if n := srv.aws.count("AmazonSSM.GetParameter", "/popconn/sales"); n != 1 {
			t.Errorf("ssm parameter fetched %d times, want 1", n)
		}
		if n := srv.aws.count("secretsmanager.GetSecretValue", "popconn/support"); n != 1 {
			t.Errorf("secret fetched %d times, want 1", n)
		}
		// Output: JSON lines only, one EMF line per mailbox poll.
		out := f.out.String()
		jsonLines(t, out)
		emf := emfLines(t, out)
		if len(emf) != 9 {
			t.Errorf("%d EMF lines for 3 invocations of 2 mailboxes, want 9 (2 polls + 1 invocation, 3 times)", len(emf))
		}
		for _, d := range emf {
			if _, ok := d["Mailbox"]; !ok && d["RequestId"] == nil {
				t.Errorf("EMF line with neither a mailbox nor a request id: %v", d)
			}
		}
		for _, want := range []string{`"request_id":"req-scheduled-1"`, `"msg":"delivered"`, `"msg":"poll done"`} {
			if !strings.Contains(out, want) {
				t.Errorf("logs lack %s", want)
			}
		}
	})

	t.Run("manual event polls only the named mailbox; unknown ids are refused with the valid ones", func(t *testing.T) {
		r := newRig(t, srv, rigOptions{})
		r.dove.Deliver(t, "sales", message(1, "manual"))
		r.dove.Deliver(t, "support", message(2, "manual"))
		f := r.newFunction("", 0)
		sum, err := invoke(t, f, retrieveNow, "req-manual", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Trigger != lambdafn.TriggerManual || len(sum.Mailboxes) != 1 || r.mailbox(sum, "sales").Delivered != 1 {
			t.Fatalf("summary %+v", sum)
		}
		if r.dove.Count(t, "support") != 1 || r.dove.Count(t, "sales") != 0 {
			t.Errorf("support must be untouched, sales emptied")
		}
		_, err = invoke(t, f, []byte(`{"mailboxes":["sales","nosuch","old"]}`), "req-bad", time.Minute)
		var evErr *lambdafn.EventError
		if !errors.As(err, &evErr) || !errors.Is(err, lambdafn.ErrUnknownMailbox) {
			t.Fatalf("unknown mailbox: %v", err)
		}
		for _, want := range []string{`"nosuch"`, `"old" (disabled`, "valid ids: sales, support"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %s", err, want)
			}
		}
		if _, err := invoke(t, f, []byte(`{"key1":"value1"}`), "req-console", time.Minute); err == nil || !strings.Contains(err.Error(), "Scheduled Event") {
			t.Errorf("console test event: %v", err)
		}
		if n := len(r.sink.Messages(t)); n != 1 {
			t.Errorf("sink holds %d, want 1: refused events must relay nothing", n)
		}
	})

	t.Run("two concurrent invocations deliver each message once", func(t *testing.T) {
		r := newRig(t, srv, rigOptions{})
		const n = 6
		for i := 0; i < n; i++ {
			r.dove.Deliver(t, "sales", message(i, "concurrent"))
		}
		// Two containers: separate clients, caches and lease owners.
		fns := []*fn{r.newFunction("", 0), r.newFunction("", 0)}
		var wg sync.WaitGroup
		sums := make([]*lambdafn.Summary, len(fns))
		errs := make([]error, len(fns))
		start := make(chan struct{})
		for i, f := range fns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				sums[i], errs[i] = invoke(t, f, retrieveNow, "req-concurrent-"+string(rune('a'+i)), 2*time.Minute)
			}()
		}
		close(start)
		wg.Wait()
		delivered := 0
		for i := range fns {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			m := r.mailbox(sums[i], "sales")
			if m.Error != "" {
				t.Errorf("invocation %d: %s", i, m.Error)
			}
			delivered += m.Delivered
			t.Logf("invocation %d: busy=%v on_server=%d delivered=%d deleted=%d", i, m.Busy, m.OnServer, m.Delivered, m.Deleted)
		}
		if delivered != n {
			t.Errorf("delivered %d in all, want %d", delivered, n)
		}
		if got := deliveredOnce(t, r.sink.WaitFor(t, n, 10*time.Second)); got != n {
			t.Errorf("sink holds %d, want %d", got, n)
		}
		if c := r.dove.Count(t, "sales"); c != 0 {
			t.Errorf("%d left on the server", c)
		}
	})

	// Lambda retries an invocation that timed out or crashed, with the same
	// event and request id, in a new or reset container. The crash is
	// injected after a durable step; the retry's ledger clock is 3 minutes
	// on, past the dead invocation's lease, as a real retry would be.
	for _, tc := range []struct {
		at     connectortest.Point
		nth    int // crash at the nth time the step is reached
		minDup int // unrecorded replies the crash must cause at least
	}{
		{connectortest.AfterArchiveRecorded, 2, 0},
		{connectortest.AfterDeliveryRecorded, 1, 0},
		{connectortest.BeforeDeletionRecorded, 1, 0}, // deleted on the server, not yet recorded
		{connectortest.BeforeDeliveryRecorded, 2, 1}, // 250 received, never recorded: the accepted duplicate window
	} {
		t.Run(fmt.Sprintf("a retry after a crash at %s delivers each message once", tc.at), func(t *testing.T) {
			r := newRig(t, srv, rigOptions{})
			const n = 3
			for i := 0; i < n; i++ {
				r.dove.Deliver(t, "sales", message(i, "retry "+string(tc.at)))
			}
			crash := connectortest.NewCrash(connectortest.Trigger{At: tc.at, Nth: tc.nth})
			sum, err := invoke(t, r.newFunctionWith(fnOptions{crash: crash}), retrieveNow, "req-crashing", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			crashed := r.mailbox(sum, "sales")
			if !crash.Crashed() || !strings.Contains(crashed.Error, "the process crashed") {
				t.Fatalf("the crash did not happen: %+v", crashed)
			}
			// Fetching and delivering overlap, so a crash on the fetching
			// side may also cut a delivery between its 250 and its record;
			// the connector counts those, and only those may repeat.
			if crashed.UnrecordedReplies < tc.minDup {
				t.Errorf("crashed invocation reports %d unrecorded replies, want at least %d", crashed.UnrecordedReplies, tc.minDup)
			}
			wantExtra := crashed.UnrecordedReplies
			t.Logf("crashed invocation: delivered %d, unrecorded replies %d", crashed.Delivered, crashed.UnrecordedReplies)
			later := func() time.Time { return time.Now().Add(3 * time.Minute) }
			sum, err = invoke(t, r.newFunctionWith(fnOptions{ledgerNow: later}), retrieveNow, "req-crashing", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if m := r.mailbox(sum, "sales"); m.Error != "" || m.Busy {
				t.Fatalf("retry: %+v", m)
			}
			msgs := r.sink.WaitFor(t, n+wantExtra, 10*time.Second)
			ids := map[string]int{}
			for _, m := range msgs {
				ids[headerValue(m.Data, "Message-ID")]++
			}
			if len(msgs) != n+wantExtra || len(ids) != n {
				t.Errorf("sink holds %d messages with %d distinct Message-IDs, want %d and %d", len(msgs), len(ids), n+wantExtra, n)
			}
			if c := r.dove.Count(t, "sales"); c != 0 {
				t.Errorf("%d left on the server", c)
			}
			for _, rec := range r.records("sales") {
				if !rec.Delivered() || !rec.Deleted() {
					t.Errorf("%s: delivered=%v deleted=%v", rec.UIDL, rec.Delivered(), rec.Deleted())
				}
			}
		})
	}

	t.Run("a deadline too close to start: nothing started, QUIT sent, summary says deadline", func(t *testing.T) {
		r := newRig(t, srv, rigOptions{deliveryTimeout: 5 * time.Second})
		for i := 0; i < 2; i++ {
			r.dove.Deliver(t, "sales", message(i, "too late"))
		}
		f := r.newFunction("", time.Second)
		// The connector keeps 2×5s+5s = 15s in hand; 1s reserve; 12s is short.
		sum, err := invoke(t, f, retrieveNow, "req-short", 12*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		m := r.mailbox(sum, "sales")
		if m.Stopped != "deadline" || m.Fetched != 0 || m.Delivered != 0 || m.OnServer != 2 || m.Error != "" || sum.Stopped != 1 {
			t.Errorf("summary %+v / %+v", sum, m)
		}
		if len(r.sink.Messages(t)) != 0 || r.dove.Count(t, "sales") != 2 {
			t.Errorf("something was relayed or deleted")
		}
		waitQuit(t, r, 1)
	})

	t.Run("the deadline stops new messages mid-poll; the next invocation delivers the rest once", func(t *testing.T) {
		// smtp-sink delays its 354 by 3s, so each delivery takes over 3s;
		// the connector keeps 2×4s+5s = 13s in hand. With 1s reserve and a
		// 16.5s deadline the first delivery starts (about 15s left) and
		// the second does not (under 13s left). One delivery at a time,
		// so that the second waits for the first.
		r := newRig(t, srv, rigOptions{sinkArgs: []string{"-w", "3"}, deliveryTimeout: 4 * time.Second, inFlight: 1})
		const n = 2
		for i := 0; i < n; i++ {
			r.dove.Deliver(t, "sales", message(i, "partial"))
		}
		f := r.newFunction("", time.Second)
		sum, err := invoke(t, f, retrieveNow, "req-partial", 16500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		m := r.mailbox(sum, "sales")
		t.Logf("first invocation: %+v", m)
		if m.Delivered != 1 || m.Deleted != 1 || m.Stopped != "deadline" || m.Error != "" {
			t.Errorf("first invocation %+v: want 1 delivered and deleted, stopped by the deadline", m)
		}
		waitQuit(t, r, 1)
		if c := r.dove.Count(t, "sales"); c != n-1 {
			t.Errorf("%d on the server after the first invocation, want %d", c, n-1)
		}
		sum, err = invoke(t, f, retrieveNow, "req-partial-next", 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if m := r.mailbox(sum, "sales"); m.Delivered != n-1 || m.Stopped != "" {
			t.Errorf("second invocation %+v", m)
		}
		if got := deliveredOnce(t, r.sink.WaitFor(t, n, 10*time.Second)); got != n {
			t.Errorf("sink holds %d, want %d", got, n)
		}
		if c := r.dove.Count(t, "sales"); c != 0 {
			t.Errorf("%d left on the server", c)
		}
	})

	t.Run("configuration from S3 and from SSM; a failed load is retried by the next invocation", func(t *testing.T) {
		r := newRig(t, srv, rigOptions{})
		r.dove.Deliver(t, "sales", message(1, "from s3 config"))
		key := r.prefix + "-config/popconn.yaml"
		r.putObject(key, r.cfgYAML)
		sum, err := invoke(t, r.newFunction("s3://"+srv.gw.Bucket+"/"+key, 0), retrieveNow, "req-s3cfg", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if m := r.mailbox(sum, "sales"); m.Delivered != 1 {
			t.Errorf("config from S3: %+v", m)
		}

		r.dove.Deliver(t, "sales", message(2, "from ssm config"))
		srv.aws.setParam("/popconn/config-"+r.table, r.cfgYAML)
		sum, err = invoke(t, r.newFunction("ssm:/popconn/config-"+r.table, 0), retrieveNow, "req-ssmcfg", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if m := r.mailbox(sum, "sales"); m.Delivered != 1 {
			t.Errorf("config from SSM: %+v", m)
		}

		// Missing, then present: the error is not cached for the container.
		r.dove.Deliver(t, "sales", message(3, "late config"))
		late := r.dir + "/late.yaml"
		f := r.newFunction("file:"+late, 0)
		_, err = invoke(t, f, retrieveNow, "req-nocfg", time.Minute)
		var startErr *lambdafn.StartError
		if !errors.As(err, &startErr) || !strings.Contains(err.Error(), late) {
			t.Fatalf("missing configuration: %v", err)
		}
		if err := os.WriteFile(late, []byte(r.cfgYAML), 0o600); err != nil {
			t.Fatal(err)
		}
		if sum, err = invoke(t, f, retrieveNow, "req-latecfg", time.Minute); err != nil || r.mailbox(sum, "sales").Delivered != 1 {
			t.Fatalf("after the file appeared: %+v, %v", sum, err)
		}

		// Invalid YAML in S3: every problem, named by its source.
		r.putObject(key, "postmaster: nobody\nsurprise: 1\n")
		_, err = invoke(t, r.newFunction("s3://"+srv.gw.Bucket+"/"+key, 0), retrieveNow, "req-badcfg", time.Minute)
		if err == nil || !strings.Contains(err.Error(), "s3://"+srv.gw.Bucket+"/"+key) || !strings.Contains(err.Error(), "surprise") {
			t.Errorf("invalid configuration: %v", err)
		}
		if n := deliveredOnce(t, r.sink.WaitFor(t, 3, 10*time.Second)); n != 3 {
			t.Errorf("sink holds %d, want 3", n)
		}
	})

	t.Run("a wrong secret reference fails that mailbox only, without its value", func(t *testing.T) {
		r := newRig(t, srv, rigOptions{})
		r.dove.Deliver(t, "sales", message(1, "ok"))
		r.dove.Deliver(t, "support", message(2, "bad secret"))
		bad := strings.Replace(r.cfgYAML, "popconn/support#password", "popconn/support#nokey", 1)
		if err := os.WriteFile(r.cfgPath, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		sum, err := invoke(t, r.newFunction("", 0), scheduled, "req-badsecret", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Failed != 1 || r.mailbox(sum, "sales").Delivered != 1 || !strings.Contains(r.mailbox(sum, "support").Error, "nokey") {
			t.Errorf("summary %+v", sum)
		}
		if r.dove.Count(t, "support") != 1 {
			t.Error("support's message must stay on the server")
		}
	})
	t.Run("the bootstrap binary through the Lambda Runtime API", func(t *testing.T) {
		// Built with the release flags for this machine's architecture, so
		// that it can run here; the arm64 release build is checked by
		// TestReleaseBuild.
		bin := buildBootstrap(t, hostArch())
		r := newRig(t, srv, rigOptions{deliveryTimeout: 5 * time.Second})
		key := r.prefix + "-config/popconn.yaml"
		r.putObject(key, r.cfgYAML)
		r.dove.Deliver(t, "sales", message(1, "binary"))
		r.dove.Deliver(t, "sales", message(2, "binary"))
		r.dove.Deliver(t, "support", message(3, "binary"))
		served := r.served("sales", salesPassword)

		ssmBefore := srv.aws.count("AmazonSSM.GetParameter", "/popconn/sales")
		smBefore := srv.aws.count("secretsmanager.GetSecretValue", "popconn/support")
		api := startRuntimeAPI(t)
		f := startBootstrap(t, bin, lambdaEnv(t, api.Addr, functionEnv(r, "s3://"+srv.gw.Bucket+"/"+key)))
		summary := func(ans answer) *lambdafn.Summary {
			t.Helper()
			if ans.errorType != "" {
				t.Fatalf("function error %s: %s\nstdout:\n%s\nstderr:\n%s", ans.errorType, ans.body, f.stdout, f.stderr)
			}
			var s lambdafn.Summary
			if err := json.Unmarshal(ans.body, &s); err != nil {
				t.Fatalf("response %q: %v", ans.body, err)
			}
			return &s
		}

		sum := summary(api.invoke(t, "req-bin-1", scheduled, 2*time.Minute))
		if sum.RequestID != "req-bin-1" || r.mailbox(sum, "sales").Delivered != 2 || r.mailbox(sum, "support").Delivered != 1 || sum.Failed != 0 {
			t.Fatalf("scheduled: %+v", sum)
		}
		for _, rec := range r.records("sales") {
			if got := r.object(rec.ArchiveKey); !bytes.Equal(got, served[rec.UIDL]) {
				t.Errorf("archive of %s differs from what Dovecot served", rec.UIDL)
			}
		}
		if n := deliveredOnce(t, r.sink.WaitFor(t, 3, 10*time.Second)); n != 3 || r.dove.Count(t, "sales")+r.dove.Count(t, "support") != 0 {
			t.Fatalf("sink %d, want 3; mailboxes must be empty", n)
		}

		ans := api.invoke(t, "req-bin-2", []byte(`{"mailboxes":["nosuch"]}`), time.Minute)
		var lerr struct{ ErrorMessage, ErrorType string }
		if ans.errorType == "" || json.Unmarshal(ans.body, &lerr) != nil || lerr.ErrorType != "EventError" || !strings.Contains(lerr.ErrorMessage, `unknown mailbox "nosuch"; valid ids: sales, support`) {
			t.Errorf("unknown mailbox: %s %s", ans.errorType, ans.body)
		}
		ans = api.invoke(t, "req-bin-console", []byte(`{"key1":"value1","key2":"value2"}`), time.Minute)
		if json.Unmarshal(ans.body, &lerr) != nil || lerr.ErrorType != "EventError" || !strings.Contains(lerr.ErrorMessage, "Scheduled Event") {
			t.Errorf("console test event: %s %s", ans.errorType, ans.body)
		}

		// The Lambda deadline (Lambda-Runtime-Deadline-Ms) reaches the
		// connector: 12s is less than 1s reserve + 2×5s + 5s.
		r.dove.Deliver(t, "sales", message(4, "binary late"))
		r.dove.Deliver(t, "sales", message(5, "binary late"))
		sum = summary(api.invoke(t, "req-bin-3", retrieveNow, 12*time.Second))
		if m := r.mailbox(sum, "sales"); m.Stopped != "deadline" || m.Fetched != 0 || m.OnServer != 2 {
			t.Errorf("short deadline: %+v", m)
		}
		sum = summary(api.invoke(t, "req-bin-4", retrieveNow, 2*time.Minute))
		if m := r.mailbox(sum, "sales"); m.Delivered != 2 || m.Stopped != "" {
			t.Errorf("next invocation: %+v", m)
		}
		if n := deliveredOnce(t, r.sink.WaitFor(t, 5, 10*time.Second)); n != 5 {
			t.Errorf("sink %d, want 5", n)
		}

		select {
		case <-f.done:
			t.Fatalf("the function exited; stderr:\n%s", f.stderr)
		default:
		}
		f.stop()
		out := f.stdout.String()
		jsonLines(t, out)
		if n := len(emfLines(t, out)); n != 7 {
			t.Errorf("%d EMF lines, want 7 (2+1, none for the refused events, 1+1, 1+1)", n)
		}
		for _, want := range []string{`"request_id":"req-bin-1"`, `"msg":"configuration loaded"`, `"source":"s3://`} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %s", want)
			}
		}
		for _, secret := range []string{salesPassword, supportPassword, srv.gw.SecretKey} {
			if strings.Contains(out+f.stderr.String(), secret) {
				t.Errorf("a secret appears in the function's output")
			}
		}
		// One container, one fetch of each secret, through
		// AWS_ENDPOINT_URL_SSM and AWS_ENDPOINT_URL_SECRETS_MANAGER.
		if n := srv.aws.count("AmazonSSM.GetParameter", "/popconn/sales") - ssmBefore; n != 1 {
			t.Errorf("the binary fetched the ssm: secret %d times, want 1", n)
		}
		if n := srv.aws.count("secretsmanager.GetSecretValue", "popconn/support") - smBefore; n != 1 {
			t.Errorf("the binary fetched the secretsmanager: secret %d times, want 1", n)
		}
		t.Logf("stderr of the function:\n%s", f.stderr)
	})
}

// waitQuit waits until Dovecot has logged n sessions of user sales ended
// by QUIT ("Logged out") in this rig.
func waitQuit(t *testing.T, r *rig, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		log := r.dove.LogTail(200)
		got := strings.Count(log, "Disconnected: Logged out")
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dovecot logged %d QUITs, want %d:%s", got, n, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
