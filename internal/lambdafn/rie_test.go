package lambdafn_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/testenv"
)

// TestUnderRIE runs the built bootstrap under the Runtime Interface
// Emulator for every event it serves, in both modes.
func TestUnderRIE(t *testing.T) {
	srv := startAWSServers(t)
	moto := testenv.StartMoto(t)
	bin := buildBootstrap(t, hostArch())

	t.Run("single mode: scheduled, retrieve-now and an SQS event", func(t *testing.T) {
		f := newFanRig(t, srv, moto, bin, 3, 1)
		fn := f.function("popconn-poller", nil)

		var now pollResponse
		invokeJSON(t, fn, []byte(`{"mailboxes":["fan0001"]}`), &now)
		if now.Trigger != "manual" || len(now.Mailboxes) != 1 || now.Mailboxes[0].Mailbox != "fan0001" || now.Mailboxes[0].Deleted != 1 {
			t.Fatalf("retrieve-now: %+v, want fan0001 polled alone, its message delivered and deleted", now)
		}
		var sched pollResponse
		invokeJSON(t, fn, readEvent(t, "scheduled.json"), &sched)
		if sched.Trigger != "schedule" || len(sched.Mailboxes) != 3 || sched.Failed != 0 {
			t.Fatalf("scheduled: %+v, want the 3 mailboxes polled", sched)
		}
		f.dove.Deliver(t, "fan0002", fanMessage("fan0002", 1))
		sqsEvent := strings.Replace(string(readEvent(t, "sqs-jobs.json")), `[\"sales\"]`, `[\"fan0002\"]`, 1)
		var batch batchResponse
		invokeJSON(t, fn, []byte(sqsEvent), &batch)
		if batch.BatchItemFailures == nil || len(batch.BatchItemFailures) != 0 {
			t.Fatalf("SQS event: %+v, want an empty batchItemFailures list", batch)
		}
		if n := deliveredOnce(t, f.sink.WaitFor(t, 4, 20*time.Second)); n != 4 {
			t.Errorf("sink holds %d messages, want 4", n)
		}
		for _, id := range f.boxes {
			if n := f.dove.Count(t, id); n != 0 {
				t.Errorf("%s still holds %d messages", id, n)
			}
		}
		logs := fn.Logs()
		for _, want := range []string{`"cold_start":true`, `"cold_start":false`, `"function_name":"popconn-poller"`, `"outcome":"ok"`, `"request_id":"`} {
			if !strings.Contains(string(logs), want) {
				t.Errorf("the function's log lacks %s", want)
			}
		}
		if strings.Contains(string(logs), fanPassword) {
			t.Error("a password appears in the function's log")
		}
	})

	t.Run("fan-out: every message of many mailboxes delivered exactly once", func(t *testing.T) {
		n := fanOutMailboxes(t, 120)
		f := newFanRig(t, srv, moto, bin, n, 2, "broken")
		f.queueURL, f.queueARN = createJobQueue(t, f.sqs, fmt.Sprintf("popconn-jobs-%d", time.Now().UnixNano()), 6*120*time.Second, 3)
		dispatcher := f.function("popconn-dispatcher", map[string]string{"POPCONN_JOB_QUEUE_URL": f.queueURL})

		// The same scheduled event twice (Lambda's retry of an
		// invocation): the deduplication ids queue each mailbox once.
		for range 2 {
			var d dispatchResponse
			invokeJSON(t, dispatcher, readEvent(t, "scheduled.json"), &d)
			if d.Trigger != "schedule" || d.Dispatched != n+1 {
				t.Fatalf("dispatch: %+v, want %d jobs", d, n+1)
			}
		}
		e, workers := f.workers(4, 5, 6*120*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		st := e.run(ctx, t)
		took := time.Since(start)
		t.Logf("%d mailboxes through %d workers in %s (%.0f mailboxes/min; workers busy %s): %+v, queue %s",
			n+1, len(workers), took.Round(time.Millisecond), float64(n+1)/took.Minutes(), st.Busy.Round(time.Millisecond), st, queueDepth(t, f.sqs, f.queueURL))
		// At least one job per mailbox, each deleted (the broken mailbox's
		// too: its own failure consumes its job). moto may let a repeated
		// deduplication id through where SQS would not (see
		// testenv.Moto); a second job for a mailbox must then still
		// deliver nothing twice, which the sink check below counts.
		if st.Received < int64(n+1) || st.Deleted != st.Received || st.Retried != 0 || st.FunctionErrs != 0 {
			t.Errorf("mapping: %+v, want %d jobs received and deleted", st, n+1)
		}
		if got := deliveredOnce(t, f.sink.WaitFor(t, n*f.perBox, 60*time.Second)); got != n*f.perBox {
			t.Errorf("sink holds %d messages, want %d", got, n*f.perBox)
		}
		for _, id := range f.boxes {
			if c := f.dove.Count(t, id); c != 0 {
				t.Errorf("%s still holds %d messages", id, c)
			}
		}
		if c := f.dove.Count(t, "broken"); c != 1 {
			t.Errorf("the broken mailbox holds %d messages, want its 1 left on the server", c)
		}
		var failed, cold int
		for _, w := range workers {
			for _, l := range logLines(t, w.Logs(), "poll failed") {
				if l["mailbox"] == "broken" && l["outcome"] == "failed" && l["job_retried"] == nil {
					failed++
				}
			}
			cold += strings.Count(string(w.Logs()), `"cold_start":true`)
		}
		if failed != 1 {
			t.Errorf("%d 'poll failed' lines for the broken mailbox without a retry, want 1", failed)
		}
		if cold == 0 {
			t.Error("no worker logged cold_start true")
		}
	})

	t.Run("fan-out: an infrastructure fault keeps the job until the dead-letter queue", func(t *testing.T) {
		f := newFanRig(t, srv, moto, bin, 1, 1)
		f.queueURL, f.queueARN = createJobQueue(t, f.sqs, fmt.Sprintf("popconn-fault-%d", time.Now().UnixNano()), 2*time.Second, 2)
		dispatcher := f.function("popconn-dispatcher", map[string]string{"POPCONN_JOB_QUEUE_URL": f.queueURL})
		var d dispatchResponse
		invokeJSON(t, dispatcher, readEvent(t, "scheduled.json"), &d)
		// A worker whose ledger table does not exist: every poll meets a
		// DynamoDB fault, which is the queue's to retry.
		w := f.function("popconn-worker", map[string]string{"POPCONN_LEDGER_TABLE": f.table + "-missing"})
		e := &esm{sqs: f.sqs, queueURL: f.queueURL, queueARN: f.queueARN, region: srv.gw.Region, batch: 1, visibility: 2 * time.Second,
			workers: []invoker{w.Invoke}}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		st := e.run(ctx, t)
		if st.Received != 2 || st.Retried != 2 || st.Deleted != 0 {
			t.Errorf("mapping: %+v, want the job received twice, named in batchItemFailures both times, never deleted", st)
		}
		dlq := strings.Replace(f.queueURL, ".fifo", "-dlq.fifo", 1)
		if depth := queueDepth(t, f.sqs, dlq); !strings.HasPrefix(depth, "visible 1,") {
			t.Errorf("dead-letter queue: %s, want the job there", depth)
		}
		if f.dove.Count(t, f.boxes[0]) != 1 {
			t.Error("the message left the server although its poll could not record anything")
		}
		for _, l := range logLines(t, w.Logs(), "poll failed") {
			if l["job_retried"] != true {
				t.Errorf("a failed poll of the faulty worker was not retried: %v", l)
			}
		}
	})
}

// BenchmarkFanOut polls POPCONN_FANOUT_MAILBOXES mailboxes (default
// 2,000) of one message each through POPCONN_FANOUT_WORKERS worker
// functions (default 4) under the RIE, fed by the job queue, and reports
// mailboxes per minute in all and per worker. make bench-fanout runs it.
// Every server shares this machine's cores with the workers, so the
// per-worker figure is a floor for a Lambda worker with its own vCPU.
func BenchmarkFanOut(b *testing.B) {
	n := fanOutMailboxes(b, 2000)
	workers := 4
	if v := os.Getenv("POPCONN_FANOUT_WORKERS"); v != "" {
		if _, err := fmt.Sscan(v, &workers); err != nil || workers < 1 {
			b.Fatalf("POPCONN_FANOUT_WORKERS=%q", v)
		}
	}
	srv := startAWSServers(b)
	moto := testenv.StartMoto(b)
	bin := buildBootstrap(b, hostArch())
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := newFanRig(b, srv, moto, bin, n, 1)
		f.queueURL, f.queueARN = createJobQueue(b, f.sqs, fmt.Sprintf("popconn-bench-%d", time.Now().UnixNano()), 6*120*time.Second, 3)
		// moto's SendMessage slows down as its FIFO queue fills (it
		// checks deduplication against every message held): the
		// dispatcher gets Lambda's longest timeout, and its time is
		// reported apart from the workers'.
		f.fnTimeout = 900 * time.Second
		dispatcher := f.function("popconn-dispatcher", map[string]string{"POPCONN_JOB_QUEUE_URL": f.queueURL})
		f.fnTimeout = 0
		// BatchSize 1, the template's default: one job per invocation,
		// as a deployment bills it.
		e, fns := f.workers(workers, 1, 6*120*time.Second)
		// Warm every worker (the cold start is not what is measured).
		for _, w := range fns {
			var batch batchResponse
			invokeJSON(b, w, []byte(`{"Records":[{"messageId":"warm","eventSource":"aws:sqs","body":"{\"mailboxes\":[]}"}]}`), &batch)
		}
		// Two ticks: the first delivers one message per mailbox, the
		// second finds every mailbox empty, which is what most polls
		// are. Each pass is timed from the first receive to the empty
		// queue; the dispatcher is timed apart.
		for _, pass := range []struct {
			name, tick string
		}{{"delivering", "2026-11-22T12:00:00Z"}, {"idle", "2026-11-22T12:05:00Z"}} {
			event := bytes.Replace(readEvent(b, "scheduled.json"), []byte("2026-11-22T12:00:00Z"), []byte(pass.tick), 1)
			start := time.Now()
			var d dispatchResponse
			invokeJSON(b, dispatcher, event, &d)
			dispatched := time.Since(start)
			if d.Dispatched != n {
				b.Fatalf("%s: dispatched %d jobs, want %d", pass.name, d.Dispatched, n)
			}
			logBefore := functionLogBytes(fns)
			b.StartTimer()
			start = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			st := e.run(ctx, b)
			cancel()
			b.StopTimer()
			// Until the last job was done: a job whose receive answer
			// moto lost under load stays in flight for the visibility
			// timeout (as it would on SQS), which is not throughput.
			took := st.LastDone.Sub(start)
			if st.Deleted < int64(n) || st.FunctionErrs != 0 {
				b.Fatalf("%s: mapping: %+v, want %d jobs done", pass.name, st, n)
			}
			if got := len(f.sink.WaitFor(b, n, 2*time.Minute)); got != n {
				b.Fatalf("%s: sink holds %d messages, want %d", pass.name, got, n)
			}
			perMin := float64(n) / took.Minutes()
			b.ReportMetric(perMin, pass.name+"-mailboxes/min")
			b.ReportMetric(perMin/float64(workers), pass.name+"-mailboxes/min/worker")
			b.ReportMetric(float64(st.Busy.Milliseconds())/float64(n), pass.name+"-worker-ms/job")
			b.ReportMetric(float64(dispatched.Milliseconds())/float64(n), pass.name+"-dispatch-ms/job")
			b.ReportMetric(float64(functionLogBytes(fns)-logBefore)/float64(st.Invocations), pass.name+"-log-B/job")
			b.Logf("%s: %d mailboxes, %d workers: %s (dispatch %s), %+v", pass.name, n, workers, took.Round(time.Millisecond), dispatched.Round(time.Millisecond), st)
		}
	}
}

// functionLogBytes is what the functions printed so far (their CloudWatch
// log stream without Lambda's START/END/REPORT lines).
func functionLogBytes(fns []*testenv.LambdaRIE) int {
	total := 0
	for _, fn := range fns {
		total += len(fn.FunctionLogs())
	}
	return total
}
