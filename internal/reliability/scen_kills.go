package reliability

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/testenv"
)

// KillCases are scenario 1: the real popconn binary, killed with SIGKILL
// at random moments while it works through a Dovecot mailbox, with an SMTP
// side that defers and rejects some messages and recipients at first.
func KillCases() []Case {
	return []Case{{"kills/sigkill-popconn", runKills}}
}

// killScript is the SMTP side's deterministic fault mix: every 7th RCPT
// of team@ gets 451 (a per-recipient deferral), and on the first DATA of
// a message, seq%10 == 3 gets 452 (temporary) and seq%10 == 7 gets 554
// (permanent, retried at the retry interval). Later attempts are
// accepted.
func killScript() testenv.SMTPScript {
	var mu sync.Mutex
	attempts := map[int]int{}
	rcpts := 0
	return testenv.SMTPScript{
		OnRcpt: func(to string) error {
			mu.Lock()
			rcpts++
			n := rcpts
			mu.Unlock()
			if to == "team@corp.example" && n%7 == 0 {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "team mailbox busy, try later"}
			}
			return nil
		},
		OnData: func(_ string, _ []string, data []byte) error {
			seq := seqOf(data)
			mu.Lock()
			attempts[seq]++
			a := attempts[seq]
			mu.Unlock()
			switch {
			case seq%10 == 3 && a == 1:
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "insufficient system storage"}
			case seq%10 == 7 && a == 1:
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}
			}
			return nil
		},
	}
}

// killsInFlight and killsWindow are the kill runs' deliveries_in_flight
// and reply_window: a kill repeats at most killsWindow messages, each to
// every recipient.
const killsInFlight, killsWindow = 4, 2

func runKills(t T, o *Options) Row {
	bin := PopconnBinary(t, o)
	seed := seedOf(o)
	t.Logf("kills: seed %d (replay with -seed)", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))

	script := killScript()
	r := NewRig(t, o, RigOptions{Dovecot: true, Script: &script, Recipients: []string{"sales@corp.example", "team@corp.example"}})
	ids, msgs := SeqMessages(1, o.KillMessages)
	r.SeedDovecot(ids, msgs)
	dir := t.TempDir()
	cfg := WriteConfig(t, ConfigParams{
		Dir: dir, POPAddr: r.Dovecot.TLSAddr, POPTLS: "implicit", POPCAFile: r.Dovecot.CA.CertFile,
		POPPasswordFile: writeSecret(t, dir, "pop.pass", popPassword),
		SMTPAddr:        r.SMTP.Addr, DeliverTo: r.Recipients,
		// Eight new messages per run: every run reaches its DELE and QUIT
		// after a score of log lines, so kills land in every phase.
		MaxMessagesPerPoll: 8,
		// Several deliveries in flight, and a reply window narrower than
		// them: the window, not the deliveries, must bound the repeats.
		DeliveriesInFlight: killsInFlight, ReplyWindow: killsWindow,
	})
	p := &ProcRig{Rig: r, Bin: bin, Dir: dir, Config: cfg}

	var (
		kills, leaseHeld, exits int
		moments                 []string
	)
	note := func(res RunResult) {
		if strings.Contains(res.Output, "lease held") {
			leaseHeld++
		}
	}
	// Kill phase: each run is killed after a random number of its log
	// lines (about two per message, archived then delivered or deferred,
	// then "deleted" and the poll summary) plus a random delay of up to
	// 20 ms, or at a random moment of its first 300 ms.
	for kills < o.Kills && p.Runs < 6*o.Kills && r.Dovecot.Count(t, popUser) > 0 {
		plan := &KillPlan{AfterLines: rng.IntN(15), Delay: time.Duration(rng.IntN(20_000)) * time.Microsecond}
		if plan.AfterLines == 0 {
			plan.Delay = time.Duration(rng.IntN(300)) * time.Millisecond
		}
		res := p.Run(plan)
		note(res)
		// Between runs too: nothing gone from the server without its
		// recorded delivery, and the archive equal to the source.
		if res.Killed {
			kills++
		}
		bound := kills * killsWindow * len(r.Recipients)
		if mid := Check(t.Context(), p.Observe(false)); mid.DeletedUndelivered > 0 || mid.ArchiveMismatches > 0 || mid.Duplicates > bound {
			t.Errorf("after run %d (killed %v at %d lines + %s): deleted-undelivered %d, archive mismatches %d, duplicates %d (bound %d after %d kills): %v",
				p.Runs, res.Killed, plan.AfterLines, plan.Delay, mid.DeletedUndelivered, mid.ArchiveMismatches, mid.Duplicates, bound, kills,
				sortedProblems(mid.Problems, 5))
		}
		if res.Killed {
			moments = append(moments, fmt.Sprintf("%d+%s", plan.AfterLines, plan.Delay.Round(time.Millisecond)))
		} else {
			exits++
		}
	}
	// Completion: run until the mailbox is empty (deferrals come due
	// after the 1-2 s retry interval).
	var last RunResult
	for stalled := 0; stalled < 20; {
		before := r.Dovecot.Count(t, popUser)
		last = p.Run(nil)
		note(last)
		after := r.Dovecot.Count(t, popUser)
		if after == 0 && last.Code == 0 {
			break
		}
		if after < before {
			stalled = 0
			continue
		}
		stalled++
		time.Sleep(1100 * time.Millisecond) // let the retry schedule come due
	}
	if n := r.Dovecot.Count(t, popUser); n != 0 {
		t.Errorf("%d messages still on the server after %d runs; last output:\n%s", n, p.Runs, tail(last.Output, 15))
	}
	// A kill leaves at most the reply window's messages committed and
	// unrecorded, each of whose transactions may carry every recipient.
	row := p.Row("kills/sigkill-popconn", kills*killsWindow*len(r.Recipients), false)
	row.Kills = kills
	row.Notes = append(row.Notes,
		fmt.Sprintf("seed %d; %d runs: %d killed, %d ended on their own before the kill, then completion runs", seed, p.Runs, kills, exits),
		fmt.Sprintf("kill moments (log lines + delay): %s", strings.Join(moments, " ")),
		fmt.Sprintf("%d run(s) reported the mailbox lease held", leaseHeld))
	if leaseHeld > 0 {
		t.Errorf("%d run(s) after a kill found the dead process's lease held", leaseHeld)
	}
	return row
}
